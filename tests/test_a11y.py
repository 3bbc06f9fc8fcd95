"""Accessibility of every role's page, checked by axe-core in a real headless Chromium.

axe-core (the engine behind Lighthouse's and Deque's checks, bundled by the
`axe-playwright-python` package) runs in the page after login: the login form, a clinician's
Consult tab with an answered consultation, an annotator's Compare tab and an admin's page, in
English and in Chinese. No violation of impact "serious" or "critical" may remain (colour
contrast, unlabelled controls, buttons without a name, a missing `lang`, ...). Beside axe: the
message box shows a visible focus ring when tabbed to.

    OMP_NUM_THREADS=1 python -m pytest tests/test_a11y.py -q
"""

from __future__ import annotations

import time

import pytest
from apphelpers import PASSWORD
from test_browser import (  # noqa: F401 - fixtures
    ANSWER_WAIT_S,
    BOTS,
    LAST_BOT_TEXT,
    WAIT_MS,
    alnum,
    chromium,
    demo_app,
)

from storage import MessageRole, get_user_by_name, history, list_consultations

pytestmark = [pytest.mark.browser]

SERIOUS = ("serious", "critical")
#: No component is loading (Gradio dims those, which is not their contrast at rest).
SETTLED = "() => !document.querySelector('.pending, .generating, .eta-bar, .progress-text')"
#: Gradio's login form's labels and button, per browser locale.
LOGIN = {"en-US": ("username", "password", "Login"), "zh-CN": ("用户名", "密码", "登录")}


def answered(page, db, user_id: int) -> None:
    """Wait until the user's first answer is stored and shown in the page."""
    deadline = time.monotonic() + ANSWER_WAIT_S
    while time.monotonic() < deadline:
        cids = [c.id for c in list_consultations(db, user_id)]
        msgs = history(db, cids[0], user_id=user_id) if cids else []
        final = msgs and msgs[-1].finish_reason and msgs[-1].finish_reason.value != "cut_off"
        if final and msgs[-1].role is MessageRole.ASSISTANT:  # not a checkpoint mid-stream
            if alnum(msgs[-1].text) in alnum(page.evaluate(LAST_BOT_TEXT, BOTS)):
                return
        time.sleep(0.1)
    raise AssertionError("the answer did not arrive in the page")


def log_in_as(page, locale: str, user: str) -> None:
    name, secret, button = LOGIN[locale]
    page.get_by_label(name).fill(user)
    page.get_by_label(secret).fill(PASSWORD)
    page.get_by_role("button", name=button).click()


def settle(page, quiet_s: float = 1.5) -> None:
    """Wait until no component has been loading for `quiet_s` in a row: a page-load chain runs
    several events one after another, and the page is briefly idle between two of them."""
    deadline = time.monotonic() + WAIT_MS / 1000
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < quiet_s:
        assert time.monotonic() < deadline, "the page kept loading"
        if not page.evaluate(SETTLED):
            quiet_since = time.monotonic()
        page.wait_for_timeout(100)


def serious_violations(page) -> list[str]:
    """axe-core's serious and critical violations of the settled page, one readable line each.

    Gradio dims the outputs of a running event (a contrast that is not theirs at rest), so axe
    judges the page once it has settled; a violation is reported only if a second run after
    settling again still finds it (an event that started just as axe ran is not the page)."""
    axe = pytest.importorskip("axe_playwright_python.sync_playwright").Axe()

    def serious() -> dict[str, str]:
        settle(page)
        found = axe.run(page).response["violations"]
        return {
            v["id"]: f"{v['id']} ({v['impact']}): {v['help']} — "
            + "; ".join(
                f"{n['target']} {n.get('failureSummary', '')[-160:]}" for n in v["nodes"][:5]
            )
            for v in found
            if v["impact"] in SERIOUS
        }

    first = serious()
    if not first:
        return []
    again = serious()
    return [line for key, line in again.items() if key in first]


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_every_role_page_has_no_serious_axe_violations(chromium, demo_app, locale):  # noqa: F811
    url, db = demo_app
    context = chromium.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: dict[str, list[str]] = {}
    try:
        page.goto(url + "/")
        page.get_by_label(LOGIN[locale][0]).wait_for(timeout=WAIT_MS)
        problems["login"] = serious_violations(page)

        log_in_as(page, locale, "alice")
        box = page.locator("#consult-input textarea")
        box.wait_for(timeout=WAIT_MS)
        box.fill("胸痛一天 / chest pain since yesterday")
        box.press("Enter")
        answered(page, db, get_user_by_name(db, "alice").id)
        problems["consult"] = serious_violations(page)

        # the message box shows where the keyboard is
        box.focus()
        ring = page.evaluate(
            """() => { const s = getComputedStyle(document.activeElement);
                       return [s.outlineStyle, s.outlineWidth, s.boxShadow]; }"""
        )
        assert ring[0] != "none" and ring[1] != "0px" or ring[2] != "none", ring

        for user, landing in (("ann", "#compare-start-case"), ("root", "#consult-input")):
            page.goto(url + "/logout")
            log_in_as(page, locale, user)
            page.locator(landing).first.wait_for(timeout=WAIT_MS)
            problems[user] = serious_violations(page)
    finally:
        context.close()
    left = {k: v for k, v in problems.items() if v}
    assert not left, "\n".join(f"{k}: {line}" for k, lines in left.items() for line in lines)
