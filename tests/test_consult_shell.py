"""The Consult tab as a chat shell, in a real headless Chromium against the launched app and the
real vLLM CPU server: the list of consultations (dates, newest first, search, rename by Enter,
delete after a confirmation: gone from the list, kept in SQL), a URL per consultation (`?c=`,
reload, someone else's or a deleted id said "not found" in place with no error badge, the last
one reopened after login), the phone viewport (drawer closed, composer on the first screen, the
name on one line), a refused upload named beside the composer with the draft kept, and answers
marked live: cut off at the length limit, the model's name and time under each answer, Stop and
Esc ending an answer with the page showing exactly the stored text, marked stopped.
Screenshots go to tests/artifacts/ (shell-*.png).

    OMP_NUM_THREADS=1 python -m pytest tests/test_consult_shell.py -q   (starts vLLM: ~1 min)
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from apphelpers import PASSWORD, make_users, png_file, running_app
from test_browser import BOTS, USERS, WAIT_MS, alnum, chromium  # noqa: F401 - fixture
from test_i18n import ERROR_MARKS

from app.config import AppConfig
from app.i18n import SERVER
from storage import (
    Database,
    MessageRecord,
    MessageRole,
    add_user_message,
    create_consultation,
    create_user,
    ensure_model_variant,
    get_user_by_name,
    history,
    list_consultations,
)
from storage.models import Consultation

pytestmark = [pytest.mark.browser, pytest.mark.vllm]

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
#: Short answers that always end at the length limit (the end token is held back).
SHORT = {"max_tokens": 40, "min_tokens": 40, "temperature": 0.8, "seed": 7}
#: Long enough to stop by hand (the tiny model writes a few hundred tokens a second).
LONG = {"max_tokens": 3000, "min_tokens": 3000, "temperature": 0.8, "seed": 7}
ANSWER_WAIT_S = 60.0
STOPPED = SERVER["consult.note.cancelled"]["en"]
META = """() => [...document.querySelectorAll('#consult-chat .answer-meta')].map(
    e => getComputedStyle(e, '::after').content)"""
LIST = "#consult-list label"


@pytest.fixture(scope="module")
def shell(vllm_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shell")
    db = Database.sqlite(tmp / "db" / "pulsemind.db")
    db.upgrade()
    make_users(db)
    create_user(db, "carol", PASSWORD, "clinician")  # starts with no consultation
    config = AppConfig(model_url=vllm_server.base_url, model="tiny", variant_name="tiny",
                       data_dir=str(tmp / "db"), port=0)  # fmt: skip
    with running_app(config, db) as url:
        yield url, db, vllm_server.base_url


def sampling(shell, settings: dict) -> None:
    _, db, base_url = shell
    ensure_model_variant(db, "tiny", base_url, "tiny", sampling_defaults=settings)


def open_page(chromium, url: str, user: str, path: str = "/", **context):  # noqa: F811
    context.setdefault("viewport", {"width": 1400, "height": 1000})
    ctx = chromium.new_context(**context)
    assert ctx.request.post(url + "/login", form={"username": user, "password": PASSWORD}).ok
    page = ctx.new_page()
    page.goto(url + path)
    page.locator("#consult-input textarea").wait_for(state="visible", timeout=WAIT_MS)
    return ctx, page


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))


def address(page) -> str:
    return page.evaluate("location.search")


def listed(page) -> list[str]:
    return [t.strip() for t in page.locator(LIST).all_inner_texts()]


def wait_until(check, what: str, timeout_s: float = ANSWER_WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stored_answer(db: Database, user: str) -> MessageRecord:
    """The newest consultation's last answer once it is final (not a streaming checkpoint)."""
    uid = get_user_by_name(db, user).id

    def final():
        found = list_consultations(db, uid, limit=1)
        msgs = history(db, found[0].id, user_id=uid) if found else []
        last = msgs[-1] if msgs else None
        if last and last.role is MessageRole.ASSISTANT and last.finish_reason.value != "cut_off":
            return last
        return None

    return wait_until(final, "the stored answer")


def no_error_badge(page) -> None:
    assert page.locator(ERROR_MARKS).count() == 0
    assert "Error" not in page.locator("body").inner_text()


def consultation(db: Database, user: str, question: str) -> int:
    uid = get_user_by_name(db, user).id
    cid = create_consultation(db, uid, question).id
    add_user_message(db, cid, uid, question, [])
    return cid


def test_list_search_rename_delete_and_addresses(chromium, shell):  # noqa: F811
    url, db, _ = shell
    knee = consultation(db, "alice", "Knee pain after running")
    throat = consultation(db, "alice", "Sore throat for two days")  # updated last
    bobs = consultation(db, "bob", "Bob's own patient")
    ctx, page = open_page(chromium, url, "alice")
    try:
        # after login the consultation updated last reopens, and the address names it
        wait_until(lambda: address(page) == f"?c={throat}", "?c= after login")
        assert "Sore throat" in page.locator(USERS).last.inner_text()
        entries = listed(page)
        assert entries[0].startswith("Sore throat for two days") and "Knee pain" in entries[1]
        day = f"{list_consultations(db, get_user_by_name(db, 'alice').id)[0].updated_at:%Y-%m-%d}"
        assert all(e.endswith(day) for e in entries[:2])  # each with its date
        assert page.locator(f"{LIST}:has(input:checked)").inner_text().startswith("Sore throat")

        # open another from the list: the chat, the title and the address follow
        page.locator(LIST, has_text="Knee pain").click()
        wait_until(lambda: address(page) == f"?c={knee}", "?c= after opening")
        assert "Knee pain" in page.locator(USERS).last.inner_text()
        assert page.locator("#consult-title textarea, #consult-title input").first.input_value() \
            == "Knee pain after running"

        # search narrows the list
        page.locator("#consult-search textarea, #consult-search input").first.fill("KNEE")
        wait_until(lambda: len(listed(page)) == 1, "the search")
        assert "Knee pain" in listed(page)[0]
        page.locator("#consult-search textarea, #consult-search input").first.fill("")
        wait_until(lambda: len(listed(page)) >= 2, "the cleared search")

        # rename by Enter in the title
        title = page.locator("#consult-title textarea, #consult-title input").first
        title.fill("Knee: follow-up")
        title.press("Enter")
        wait_until(lambda: any(e.startswith("Knee: follow-up") for e in listed(page)), "rename")
        with db.transaction(write=False) as s:
            assert s.get(Consultation, knee).title == "Knee: follow-up"

        # reload: the same consultation opens
        page.reload()
        page.locator(USERS).last.wait_for(state="visible", timeout=WAIT_MS)
        wait_until(lambda: "Knee pain" in page.locator(USERS).last.inner_text(), "the reload")
        assert address(page) == f"?c={knee}"

        # delete asks first, then the consultation leaves the list (kept in SQL)
        page.locator("#consult-delete").click()
        confirm = page.locator("#consult-confirm-delete")
        confirm.wait_for(state="visible", timeout=WAIT_MS)
        assert any(e.startswith("Knee: follow-up") for e in listed(page)), "not before confirming"
        shot(page, "shell-confirm-delete.png")
        confirm.click()
        wait_until(lambda: not any("Knee" in e for e in listed(page)), "the deletion")
        wait_until(lambda: address(page) == "", "the address cleared")
        assert page.locator(USERS).count() == 0
        with db.transaction(write=False) as s:
            assert s.get(Consultation, knee).deleted_at is not None
        assert len(history(db, knee)) == 1, "its messages are kept"
        no_error_badge(page)
        shot(page, "shell-list.png")

        # someone else's id, a deleted one: "not found" in place, nothing marked failed
        for cid, words in ((bobs, None), (knee, "deleted")):
            page.goto(f"{url}/?c={cid}")
            notice = page.locator("#consult-notice")
            notice.wait_for(state="visible", timeout=WAIT_MS)
            wait_until(lambda n=notice: n.inner_text().strip(), "the notice")
            text = notice.inner_text()
            assert words is None or words in text, text
            assert "Bob's own patient" not in page.locator("body").inner_text()
            assert page.locator(USERS).count() == 0
            time.sleep(1)  # the page-load chain has ended
            no_error_badge(page)
        shot(page, "shell-not-found.png")
    except BaseException:
        shot(page, "shell-list-failure.png")
        raise
    finally:
        ctx.close()


def test_phone_bad_upload_and_answer_marks(chromium, shell, tmp_path):  # noqa: F811
    url, db, _ = shell
    sampling(shell, SHORT)
    ctx, page = open_page(chromium, url, "carol", viewport={"width": 390, "height": 844},
                          is_mobile=True, has_touch=True)  # fmt: skip
    try:
        # the phone: the list is a closed drawer, the composer on the first screen
        time.sleep(1)
        assert page.locator("#consult-sidebar.open").count() == 0
        box = page.locator("#consult-input").bounding_box()
        assert box["y"] + box["height"] <= 844, box
        name = page.locator("#app-header h2")
        assert name.evaluate("e => e.getBoundingClientRect().height") < 2 * name.evaluate(
            "e => parseFloat(getComputedStyle(e).lineHeight) || 30")  # one line
        shot(page, "shell-phone.png")

        # a refused upload: the file named beside the composer, the draft and files kept
        fake = tmp_path / "scan.dcm"
        fake.write_text("this is a text file, not a DICOM")
        good = png_file(tmp_path / "ok.png", 3)
        composer = page.locator("#consult-input")
        composer.locator("input[type=file]").set_input_files([str(good), str(fake)])
        draft = "CT of the chest attached"
        composer.locator("textarea").fill(draft)
        composer.locator("textarea").press("Enter")
        notice = page.locator("#consult-notice")
        wait_until(lambda: "scan.dcm" in notice.inner_text(), "the refusal beside the composer")
        assert "ok.png" not in notice.inner_text()
        assert composer.locator("textarea").input_value() == draft
        assert composer.locator(".thumbnail-item").count() == 2  # both files still attached
        assert list_consultations(db, get_user_by_name(db, "carol").id) == []
        no_error_badge(page)
        shot(page, "shell-bad-upload.png")

        # an answer at the length limit: marked, with its model and time under it
        page.goto(url + "/")  # an empty composer
        composer.locator("textarea").fill("Short question")
        composer.locator("textarea").press("Enter")
        answer = stored_answer(db, "carol")
        assert answer.finish_reason.value == "length"
        metas = wait_until(lambda: page.evaluate(META), "the line under the answer")
        assert "cut off at the length limit" in metas[-1] and "tiny" in metas[-1], metas
        assert alnum(page.locator(BOTS).last.inner_text()) == alnum(answer.text)
        assert page.locator(USERS).last.bounding_box()["y"] < 844
        shot(page, "shell-phone-answered.png")
    except BaseException:
        shot(page, "shell-phone-failure.png")
        raise
    finally:
        ctx.close()


def _stop_and_compare(page, db: Database, question: str, stop) -> None:
    """Ask, stop the long answer once it streams; the page then shows exactly what was stored."""
    before = page.locator(BOTS).count()
    textarea = page.locator("#consult-input textarea")
    textarea.fill(question)
    textarea.press("Enter")
    wait_until(lambda: page.locator(BOTS).count() > before
               and len(alnum(page.locator(BOTS).last.inner_text())) > 20, "the answer streaming")  # fmt: skip
    stop()
    answer = stored_answer(db, "bob")
    assert answer.finish_reason.value == "cancelled" and answer.text
    bubble = page.locator(BOTS).last
    wait_until(lambda: "stopped" in bubble.inner_text(), "the stopped mark")
    shown = bubble.inner_text().replace(STOPPED.strip("*"), "")
    assert alnum(shown) == alnum(answer.text)
    assert "tiny" in page.evaluate(META)[-1]


def test_stop_and_esc_end_an_answer_as_stored(chromium, shell):  # noqa: F811
    url, db, _ = shell
    sampling(shell, LONG)
    ctx, page = open_page(chromium, url, "bob")
    try:
        page.locator("#consult-new").click()
        _stop_and_compare(page, db, "Tell me everything about chest pain",
                          lambda: page.locator("#consult-stop").click())  # fmt: skip
        shot(page, "shell-stopped.png")
        _stop_and_compare(page, db, "And about the follow-up?",
                          lambda: page.keyboard.press("Escape"))  # fmt: skip
        no_error_badge(page)
        shot(page, "shell-esc-stopped.png")
    except BaseException:
        shot(page, "shell-stop-failure.png")
        raise
    finally:
        ctx.close()
        sampling(shell, SHORT)


def test_upload_cards_and_a_thumbnail_opens_the_viewer(chromium, shell, tmp_path):  # noqa: F811
    """A CT and an MR flagged with burned-in text sent through the page: each shows as a card
    (de-identified; the MR's burned-in warning), and clicking the CT's thumbnail opens it in
    the viewer below the chat (not a raw PNG in a new tab), where the lung window re-renders it."""
    from intake_builders import dicom_with, dicom_with_phi

    url, db, _ = shell
    sampling(shell, SHORT)
    create_user(db, "erin", PASSWORD, "clinician")
    ct, mr = tmp_path / "chest.dcm", tmp_path / "head.dcm"
    ct.write_bytes(dicom_with_phi())
    mr.write_bytes(dicom_with("MR_small.dcm", BurnedInAnnotation="YES"))
    ctx, page = open_page(chromium, url, "erin")
    try:
        composer = page.locator("#consult-input")
        composer.locator("input[type=file]").set_input_files([str(ct), str(mr)])
        composer.locator("textarea").fill("CT and MR attached")
        composer.locator("textarea").press("Enter")
        stored_answer(db, "erin")
        cards = page.locator(f"{USERS} .pm-card")
        wait_until(lambda: cards.count() == 2, "both attachment cards")
        assert "chest.dcm" in cards.nth(0).inner_text() and "head.dcm" in cards.nth(1).inner_text()
        assert cards.nth(0).locator(".pm-card-warn").count() == 0
        warning = cards.nth(1).locator(".pm-card-warn")
        assert warning.is_visible() and "Burned-in text" in warning.inner_text()
        assert page.locator("#pm-viewer-panel .pm-pane").count() == 0  # nothing open yet

        pages_before = len(ctx.pages)
        cards.nth(0).locator(".pm-thumbs a").first.click()
        frame = page.locator("#viewer-view .pm-pane .pm-frame").first
        frame.wait_for(state="visible", timeout=WAIT_MS)
        assert len(ctx.pages) == pages_before  # no new tab
        stored_src = frame.get_attribute("src")
        page.locator("#viewer-preset").get_by_label("Lung").check()
        page.wait_for_function(
            "() => document.querySelector('#viewer-view .pm-pane')?.dataset.preset === 'lung'",
            timeout=WAIT_MS,
        )
        assert page.locator("#viewer-view .pm-pane .pm-frame").first.get_attribute("src") != stored_src
        no_error_badge(page)
        shot(page, "shell-cards-viewer.png")
    except BaseException:
        shot(page, "shell-cards-failure.png")
        raise
    finally:
        ctx.close()
