"""The Consult tab in a real headless Chromium (Playwright) against the launched app.

A clinician logs in through Gradio's login form, sees the demo-model banner, sends a message
with a PNG attached, watches the answer stream in (the assistant bubble is sampled every
50 ms while it grows), sees the image as a thumbnail served by `/attachments/`, reloads the
page and reopens the consultation from the Consultations list.

The app runs on the embedded demo model (no vLLM), with seeded sampling defaults so the answer
is long enough to watch grow and the same on every run. Screenshots land in the test's
tmp_path (`consult-answered.png`, `consult-reopened.png`, or `failure.png`).

Needs Debian's chromium (scripts/test installs it):
    OMP_NUM_THREADS=1 python -m pytest tests/test_browser.py -q
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
from apphelpers import PASSWORD, make_users, png_file, running_app

from app.config import AppConfig
from storage import (
    Database,
    MessageRole,
    ensure_model_variant,
    get_user_by_name,
    get_variant_by_name,
    history,
    list_consultations,
)

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
#: Long enough to watch grow (the demo model writes ~70-100 tokens/s on one core), short enough
#: to keep the test fast; seeded so the answer is the same on every run.
SAMPLING = {"max_tokens": 500, "temperature": 1.0, "seed": 7}
#: How often the assistant bubble is sampled while the answer streams.
POLL_S = 0.05
#: Longest wait for a page element (generous: CI machines are shared and slow).
WAIT_MS = 30_000
#: Longest wait for the whole answer: the first one also loads the demo model (~1 s), then
#: ~2-4 s of generation on an idle core; allow for a heavily loaded machine.
ANSWER_WAIT_S = 60.0
MESSAGE = "Chest pain since yesterday, ECG attached."

BOTS = '#consult-chat [data-testid="bot"]'
USERS = '#consult-chat [data-testid="user"]'
ATTACHMENT_IMG = f'{USERS} img[src*="/attachments/"]'
LAST_BOT_TEXT = """(sel) => {
    const bots = document.querySelectorAll(sel);
    return bots.length ? bots[bots.length - 1].innerText : null;
}"""
#: Samples the assistant bubble in the page itself (Chromium's clock, not the test process's:
#: the demo model generates in this process and competes with the test for the GIL), on every
#: change of the page (a mutation observer: a busy machine renders few frames, each is seen)
#: and on a timer.
START_SAMPLER = """([sel, ms]) => {
    window.__bubbleLengths = [];
    const sample = () => {
        const bots = document.querySelectorAll(sel);
        const text = bots.length ? bots[bots.length - 1].innerText : "";
        const seen = window.__bubbleLengths;
        if (text && seen[seen.length - 1] !== text.length) seen.push(text.length);
    };
    window.__observer = new MutationObserver(sample);
    window.__observer.observe(document.body, {subtree: true, childList: true, characterData: true});
    window.__sampler = setInterval(sample, ms);
}"""


def alnum(text: str | None) -> str:
    """Letters and digits only: rendered Markdown and the stored text agree on these."""
    return re.sub(r"[\W_]+", "", text or "")


@pytest.fixture(scope="module")
def chromium():
    """A headless Debian Chromium driven by Playwright (its own browser download is unused)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not installed (scripts/test installs Debian's chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def demo_app(demo_model_dir, tmp_path):
    """The app on the embedded demo model, with alice & co.; yields (url, db)."""
    db = Database.sqlite(tmp_path / "pulsemind.db")
    db.upgrade()
    make_users(db)
    config = AppConfig(data_dir=str(tmp_path / "data"), demo_model_dir=str(demo_model_dir))
    with running_app(config, db) as url:
        demo = get_variant_by_name(db, "demo")  # registered by create_app
        assert demo is not None and demo.embedded
        ensure_model_variant(db, "demo", demo.endpoint, demo.served_model_name,
                             sampling_defaults=SAMPLING, notes=demo.notes)  # fmt: skip
        yield url, db


def log_in(page, url: str, user: str) -> None:
    page.goto(url + "/")
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    page.get_by_text("Demo model", exact=True).wait_for(state="visible", timeout=WAIT_MS)


def wait_for_answer(page, db: Database, user_id: int) -> tuple[int, str, list[int]]:
    """Wait until the last assistant bubble shows the stored answer.

    Returns (consultation id, stored answer text, distinct bubble lengths the page sampler saw).
    """
    deadline = time.monotonic() + ANSWER_WAIT_S
    cid, stored, text = None, None, None
    while time.monotonic() < deadline:
        text = page.evaluate(LAST_BOT_TEXT, BOTS)
        if cid is None:
            cid = next((c.id for c in list_consultations(db, user_id)), None)
        if cid is not None:
            # the final answer, not a checkpoint stored while it streams (finish cut_off until
            # the answer ends), which the page may show at the same moment
            msgs = history(db, cid, user_id=user_id)
            last = msgs[-1] if msgs else None
            if last and last.role is MessageRole.ASSISTANT and last.finish_reason.value != "cut_off":
                stored = last.text
        if stored and alnum(text) == alnum(stored):
            lengths = page.evaluate("() => { clearInterval(window.__sampler); "
                                    "if (window.__observer) window.__observer.disconnect(); "
                                    "return window.__bubbleLengths; }")  # fmt: skip
            return cid, stored, lengths
        time.sleep(POLL_S)
    raise AssertionError(f"the answer did not arrive (cid={cid}, stored={stored is not None}, "
                         f"bubble text {len(text or '')} chars)")  # fmt: skip


def wait_for_image(page) -> None:
    img = page.locator(ATTACHMENT_IMG).first
    img.wait_for(state="visible", timeout=WAIT_MS)
    page.wait_for_function(
        "(sel) => { const i = document.querySelector(sel); "
        "return i && i.complete && i.naturalWidth > 0; }",
        arg=ATTACHMENT_IMG,
        timeout=WAIT_MS,
    )


def test_consult_upload_stream_reload_reopen(chromium, demo_app, tmp_path: Path):
    url, db = demo_app
    alice = get_user_by_name(db, "alice")
    png = png_file(tmp_path / "ecg.png", 1)
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        log_in(page, url, "alice")
        assert "not for patient care" in page.locator("body").inner_text()

        box = page.locator("#consult-input")
        box.locator("input[type=file]").set_input_files(str(png))
        box.locator("textarea").fill(MESSAGE)
        page.evaluate(START_SAMPLER, [BOTS, int(POLL_S * 1000)])
        box.locator("textarea").press("Enter")

        user_msg = page.locator(USERS).last
        user_msg.wait_for(state="visible", timeout=WAIT_MS)
        cid, answer, lengths = wait_for_answer(page, db, alice.id)

        # streamed: the bubble grew through several lengths before its final one
        final = lengths[-1]
        intermediate = [n for n in lengths[:-1] if 0 < n < final]
        assert len(intermediate) >= 2, f"no streaming seen, bubble lengths: {lengths}"

        # stored as sent and as answered
        msgs = history(db, cid, user_id=alice.id)
        assert [m.role for m in msgs] == [MessageRole.USER, MessageRole.ASSISTANT]
        assert msgs[0].text == MESSAGE
        assert [(a.kind.value, a.original_name) for a in msgs[0].attachments] == [
            ("image", "ecg.png")
        ]
        assert msgs[1].text == answer and msgs[1].completion_tokens
        assert msgs[1].sampling_params["max_tokens"] == SAMPLING["max_tokens"]

        # the upload shows as a thumbnail that really loads, served per user
        assert MESSAGE in user_msg.inner_text() and "ecg.png" in user_msg.inner_text()
        wait_for_image(page)
        src = page.locator(ATTACHMENT_IMG).first.get_attribute("src")
        assert f"/attachments/{msgs[0].attachments[0].id}/" in src
        anonymous = chromium.new_context()
        assert anonymous.request.get(url + src).status == 404  # not logged in: not found
        anonymous.close()
        user_msg.evaluate("e => e.scrollIntoView({block: 'start'})")  # thumbnail in the shot
        page.screenshot(path=str(tmp_path / "consult-answered.png"))

        # reload: the consultation is in the list (and reopens from it)
        page.reload()
        page.get_by_text("Demo model", exact=True).wait_for(state="visible", timeout=WAIT_MS)
        page.locator("#consult-list label", has_text=f"{MESSAGE} · #{cid}").click()
        user_msg.wait_for(state="visible", timeout=WAIT_MS)
        assert MESSAGE in user_msg.inner_text()
        page.locator(BOTS).first.wait_for(state="visible", timeout=WAIT_MS)
        assert alnum(page.evaluate(LAST_BOT_TEXT, BOTS)) == alnum(answer)
        assert page.locator(BOTS).count() == 1
        wait_for_image(page)
        user_msg.evaluate("e => e.scrollIntoView({block: 'start'})")  # thumbnail in the shot
        page.screenshot(path=str(tmp_path / "consult-reopened.png"))
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"))
        raise
    finally:
        context.close()
