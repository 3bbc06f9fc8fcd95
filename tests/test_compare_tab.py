"""The Compare tab against the launched app and the real vLLM CPU server serving two variants
("tiny", the base model, and "a1", its LoRA adapter): an annotator starts from a loaded case,
both answers stream, the vote is one row however often it is sent, "Saved" and the reveal come
after the commit, and continuing gives a second turn on the kept answer; after a tie the page
asks which answer continues; a clinician's logged question is compared without naming them. A
clinician is refused by every endpoint of the tab; an annotator cannot reach another's turn or
a server file. Every label is catalogued page text. One Playwright test (Debian's headless Chromium) does the annotator's round in a real page;
screenshots go to tests/artifacts/ (compare-*.png).

Run: OMP_NUM_THREADS=1 python -m pytest tests/test_compare_tab.py -q   (starts vLLM: ~1 min)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import gradio as gr
import httpx
import pytest
from apphelpers import PASSWORD, demo_case_file, login, make_users, running_app
from gradio.i18n import I18nData
from gradio_client import Client
from gradio_client.exceptions import AppError
from test_attacks import LEAKS
from test_browser import WAIT_MS, chromium  # noqa: F401 - fixture

from app.auth import Auth
from app.cases import load_case_file
from app.compare import Comparisons
from app.compare_tab import STREAM_FIELDS, CompareHandlers, build_compare_tab
from app.config import AppConfig
from app.i18n import PAGE, SERVER
from app.workflow import Consultations
from model.engines import EngineRegistry
from storage import (
    Database,
    NotFound,
    PermissionDenied,
    Uploads,
    create_user,
    ensure_model_variant,
    get_compare_turn,
    get_user_by_name,
    get_variant,
    history,
    list_votes,
)

#: Answers of a known length (the end token is held back): long enough to see both stream.
SAMPLING = {"max_tokens": 24, "min_tokens": 24, "temperature": 0.8, "seed": 7}
#: For the browser: long enough to watch both columns grow in the page.
BROWSER_SAMPLING = {"max_tokens": 320, "min_tokens": 320, "temperature": 0.8, "seed": 7}
#: The vote panel's values, in the order /compare_vote takes them (after the session's state).
VOTE = ("a", "a", "tie", "b", "a", False, True, "A asks about fever; B does not.")
#: What /compare_from_case, /compare_typed and /compare_continue return to programs (the
#: session's state — turn id and vote key — stays on the server; buttons are not values).
OUT = {
    n: i
    for i, n in enumerate(n for n in STREAM_FIELDS if n not in ("turn_id", "key", "vote_button"))
}
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
POLL_S = 0.05
#: Samples both answer columns in the page itself, on every change of the page (a mutation
#: observer) and on a timer: a busy machine may render few frames, but each one is seen.
START_SAMPLER = """(ms) => {
    window.__lengths = {a: [], b: []};
    const sample = () => {
        for (const side of ["a", "b"]) {
            const el = document.querySelector(`#compare-answer-${side} .prose`)
                || document.querySelector(`#compare-answer-${side}`);
            const n = el ? el.innerText.trim().length : 0;
            const seen = window.__lengths[side];
            if (n && seen[seen.length - 1] !== n) seen.push(n);
        }
    };
    window.__observer = new MutationObserver(sample);
    window.__observer.observe(document.body, {subtree: true, childList: true, characterData: true});
    window.__sampler = setInterval(sample, ms);
}"""


@pytest.fixture(scope="module")
def world(vllm_server, adapter_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare-tab")
    db = Database.sqlite(tmp / "db" / "pulsemind.db")
    db.upgrade()
    make_users(db)
    create_user(db, "ann2", PASSWORD, "annotator")
    load_case_file(db, demo_case_file(tmp), name="demo")
    config = AppConfig(model_url=vllm_server.base_url, model="tiny", variant_name="tiny",
                       data_dir=str(tmp / "db"), port=0)  # fmt: skip
    with running_app(config, db) as url:
        # after the app registered "tiny": answers of a known length on both variants
        ensure_model_variant(db, "tiny", vllm_server.base_url, "tiny", sampling_defaults=SAMPLING)
        ensure_model_variant(db, "a1", vllm_server.base_url, "a1", adapter_path=str(adapter_dir),
                             parent="tiny", sampling_defaults=SAMPLING)  # fmt: skip
        clients: list[Client] = []
        yield {"url": url, "db": db, "tmp": tmp, "case_id": 1, "base_url": vllm_server.base_url,
               "adapter": str(adapter_dir), "clients": clients}  # fmt: skip
        for c in clients:  # their heartbeat streams would hold the server's shutdown
            c.close()


def client(world, who: str) -> Client:
    c = Client(world["url"], auth=(who, PASSWORD), verbose=False)
    world["clients"].append(c)
    return c


def streamed(c: Client, *args, api: str) -> list[tuple]:
    """Every update of one streaming event of the tab."""
    job = c.submit(*args, api_name=api)
    job.result()
    return job.outputs()


def count(db: Database, model_name: str) -> int:
    import storage.models as m

    with db.transaction(write=False) as s:
        return s.query(getattr(m, model_name)).count()


def last_turn(db: Database, user: str):
    """The newest compare turn of a comparison `user` made (the page keeps its id)."""
    import storage.models as m

    uid = get_user_by_name(db, user).id
    with db.transaction(write=False) as s:
        tid = (s.query(m.ComparisonTurn.id).join(m.Comparison)
               .filter(m.Comparison.creator_id == uid).order_by(m.ComparisonTurn.id.desc())
               .first()[0])  # fmt: skip
    return get_compare_turn(db, tid, user_id=uid)


def text_of(value) -> str:
    """A Markdown output's text (gradio_client may hand back an update dict)."""
    if isinstance(value, dict):
        value = value.get("value")
    return value if isinstance(value, str) else ""


# --- page text ---------------------------------------------------------------------------------


def test_every_label_is_catalogued(db, tmp_path):
    """Labels, infos, placeholders, buttons and the vote choices are page text (both languages);
    without variants the tab says so."""
    with Comparisons(db, EngineRegistry()) as flow, gr.Blocks() as blocks:
        build_compare_tab(AppConfig(data_dir=str(tmp_path)), db, Auth(db), flow)(blocks)
    keys, english = set(), []
    for c in blocks.get_config_file()["components"]:
        props = c.get("props", {})
        texts = [props.get(p) for p in ("label", "placeholder", "info")]
        if c.get("type") in ("button", "markdown"):
            texts.append(props.get("value"))
        texts += [label for label, _ in props.get("choices") or []]
        for value in texts:
            if isinstance(value, I18nData | str) and str(value).startswith("__i18n__"):
                keys.add(json.loads(str(value).removeprefix("__i18n__"))["key"])
            elif isinstance(value, str) and re.search("[A-Za-z]{2}", value):
                english.append(f"{c.get('type')} {props.get('elem_id')}: {value!r}")
    assert english == []
    assert {"compare.answer_a", "compare.answer_b", "compare.tie", "compare.both_bad",
            "compare.proactiveness", "compare.accuracy", "compare.usefulness",
            "compare.language_quality", "compare.overall", "compare.safety_a",
            "compare.vote", "compare.continue"} <= keys <= set(PAGE)  # fmt: skip
    assert PAGE["compare.both_bad"]["zh-CN"] == "两者都差"
    assert PAGE["compare.language_quality"]["zh-CN"] == "语言质量"

    with gr.Blocks() as none:
        build_compare_tab(AppConfig(data_dir=str(tmp_path)), db, Auth(db), None)(none)
    values = [str(c["props"].get("value")) for c in none.get_config_file()["components"]]
    assert any('"compare.unavailable"' in v for v in values)


# --- the tab through gradio_client ------------------------------------------------------------


@pytest.mark.vllm
def test_case_stream_vote_once_reveal_continue(world):
    db, ann = world["db"], client(world, "ann")
    preview = ann.predict(world["case_id"], api_name="/compare_case")
    context = json.dumps(preview[0], ensure_ascii=False)
    assert "手臂上起了红疹" in context and "多久了？" in context and "三天了。" in context

    updates = streamed(ann, world["case_id"], None, api="/compare_from_case")
    texts_a = [text_of(u[OUT["a"]]) for u in updates]
    texts_b = [text_of(u[OUT["b"]]) for u in updates]
    assert len(set(texts_a)) >= 3 and len(set(texts_b)) >= 3, updates  # both streamed
    turn = last_turn(db, "ann")
    assert [r.finish_reason.value for r in turn.responses] == ["length", "length"]
    assert texts_a[-1] == turn.response("a").text and texts_b[-1] == turn.response("b").text
    final = updates[-1]
    assert SERVER["compare.ready"]["en"] in text_of(final[OUT["status"]])
    # nothing names a variant before the vote
    assert not any(re.search(r"\b(tiny|a1)\b", text_of(u[OUT["reveal"]])) for u in updates)

    # the vote, sent twice with the session's one key (a double click / a resend): one row
    first = ann.predict(*VOTE, api_name="/compare_vote")
    again = ann.predict(*VOTE, api_name="/compare_vote")
    assert len(list_votes(db, turn_id=turn.id)) == 1
    variants = {side: get_variant(db, getattr(turn, f"variant_{side}_id")).name for side in "ab"}
    for note, reveal, _ in (first, again):  # the vote's note, the reveal, the keep choice
        assert text_of(note) == SERVER["compare.saved"]["en"]
        assert text_of(reveal) == SERVER["compare.reveal"]["en"].format(**variants)
    assert set(variants.values()) == {"tiny", "a1"}
    vote = list_votes(db, turn_id=turn.id)[0]
    assert (vote.overall.value, vote.safety_flag_b, vote.comment) == ("a", True, VOTE[-1])

    # continue: A (the overall winner) is the shared history of a second turn
    nxt = streamed(ann, {"text": "现在蔓延到了背部。", "files": []}, None, api="/compare_continue")
    second = last_turn(db, "ann")
    assert second.id != turn.id and second.comparison_id == turn.comparison_id
    assert get_compare_turn(db, turn.id, user_id=vote.voter_id).kept_side.value == "a"
    kept = second.context["history"][-1]
    assert kept["ref"] == {"comparison_response": turn.response("a").id}
    assert [r.finish_reason.value for r in second.responses] == ["length", "length"]
    assert text_of(nxt[-1][OUT["a"]]) == second.response("a").text
    assert "现在蔓延到了背部。" in json.dumps(nxt[0][OUT["context"]], ensure_ascii=False)


@pytest.mark.vllm
def test_a_clinician_is_refused_by_every_endpoint_of_the_tab(world):
    db, alice = world["db"], client(world, "alice")
    before = count(db, "Comparison")
    for api, args in [("/compare_from_case", (world["case_id"], None)),
                      ("/compare_typed", ({"text": "Chest pain.", "files": []},)),
                      ("/compare_from_log", ("1:1",)),
                      ("/compare_continue", ({"text": "more", "files": []}, None)),
                      ("/compare_vote", VOTE), ("/compare_cases", (1,)),
                      ("/compare_case", (world["case_id"],))]:  # fmt: skip
        with pytest.raises(AppError, match=r"Your role \(clinician\) cannot") as exc:
            alice.predict(*args, api_name=api)
        assert not LEAKS.search(str(exc.value))
    assert count(db, "Comparison") == before


@pytest.mark.vllm
def test_no_one_elses_turn_no_server_file(world):
    db, tmp = world["db"], world["tmp"]
    ann, ann2 = (get_user_by_name(db, n) for n in ("ann", "ann2"))
    ann_c = client(world, "ann")
    streamed(ann_c, {"text": "Cough for two weeks.", "files": []}, api="/compare_typed")
    theirs = last_turn(db, "ann")
    comparisons, votes = count(db, "Comparison"), len(list_votes(db))

    # the page holds its turn id in the session: another annotator's page has none
    out = client(world, "ann2").predict(*VOTE, api_name="/compare_vote")
    assert text_of(out[0]) == SERVER["compare.start_first"]["en"]

    # the handlers refuse another's turn id in plain words, and a file nobody uploaded
    secret = tmp / "secret.txt"
    secret.write_text("TOP-SECRET")
    with Comparisons(db, EngineRegistry(), Uploads()) as flow:
        h = CompareHandlers(db, flow)
        status = h.vote(ann2, theirs.id, "k" * 16, *VOTE)[0]
        assert PermissionDenied.user_message in status and not LEAKS.search(status)
        shown = list(h.continue_comparison(ann2, theirs.id, {"text": "more", "files": []}, None))
        # refused before anything is read: only the caller's own vote lets a turn continue
        assert len(shown) == 1 and "Vote first" in shown[0][STREAM_FIELDS.index("continue_note")]
        for message in ({"text": "x", "files": [str(secret)]},
                        {"text": "x", "files": [{"path": str(secret)}]}):  # fmt: skip
            shown = list(h.compare_typed(ann, message))
            status = shown[-1][STREAM_FIELDS.index("status")]
            assert "Attach files by uploading them here first." in status, status
        shown = list(h.compare_case(ann, 10**6, None))
        assert NotFound.user_message in shown[-1][STREAM_FIELDS.index("status")]
    assert count(db, "Comparison") == comparisons and len(list_votes(db)) == votes

    # over HTTP: a server path in the typed turn is refused before Gradio opens it
    http = login(world["url"], "ann")
    for api in ("compare_typed", "compare_continue"):
        r = http.post(f"/gradio_api/call/{api}", json={"data": [
            {"text": "x", "files": [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}]},
            None]})  # fmt: skip
        assert r.status_code == 403 and "TOP-SECRET" not in r.text, r.text
    anon = httpx.post(f"{world['url']}/gradio_api/call/compare_from_case",
                      json={"data": [1, None]}, timeout=30)  # fmt: skip
    assert anon.status_code in (401, 403)
    assert count(db, "Comparison") == comparisons


@pytest.mark.vllm
def test_a_tie_asks_which_answer_continues(world):
    """Handler level: after an overall tie (or both bad) the page asks which answer the
    conversation continues with, and continuing without a choice says so in place."""
    db = world["db"]
    ann = get_user_by_name(db, "ann")
    field = STREAM_FIELDS.index
    with Comparisons(db, EngineRegistry()) as flow:
        h = CompareHandlers(db, flow)
        shown = list(h.compare_typed(ann, {"text": "Dizzy when standing up.", "files": []}))
        tid, key = shown[0][field("turn_id")], shown[0][field("key")]
        assert shown[-1][field("vote_button")]["interactive"] is True
        note, _, reveal, keep = h.vote(ann, tid, key, "a", "b", "tie", "a", "both_bad", False,
                                       False, "")  # fmt: skip
        assert SERVER["compare.choose_kept"]["en"] in note and keep["visible"] is True
        shown = list(
            h.continue_comparison(ann, tid, {"text": "Since last week.", "files": []}, None)
        )
        assert len(shown) == 1 and "choose the one the conversation continues with" in shown[0][
            field("continue_note")]  # fmt: skip
        assert shown[0][field("keep")]["visible"] is True
        shown = list(
            h.continue_comparison(ann, tid, {"text": "Since last week.", "files": []}, "b")
        )
        assert shown[0][field("next")] is None  # the box is cleared once the turn started
    first = get_compare_turn(db, tid, user_id=ann.id)
    second = last_turn(db, "ann")
    assert first.kept_side.value == "b" and second.id != tid
    assert second.context["history"][-1]["ref"] == {"comparison_response": first.response("b").id}
    assert list_votes(db, turn_id=tid)[0].overall.value == "both_bad"


@pytest.mark.vllm
def test_compare_on_a_logged_consultation(world):
    """An annotator picks a clinician's question from the log: compared up to it, the
    consultation only read, the clinician never named."""
    db = world["db"]
    alice = get_user_by_name(db, "alice")
    with Consultations(db, EngineRegistry()) as consult:
        cid, asked = consult.add_turn(alice, None, "Chest pain since this morning.", [])
    with Comparisons(db, EngineRegistry()) as flow:
        listed, status = CompareHandlers(db, flow).log_choices(get_user_by_name(db, "ann"))
    labels = dict((v, label) for label, v in listed["choices"])
    assert "Chest pain since this morning." in labels[f"{cid}:{asked.id}"] and status == ""
    assert not any("alice" in label for label in labels.values())

    updates = streamed(client(world, "ann"), f"{cid}:{asked.id}", api="/compare_from_log")
    turn = last_turn(db, "ann")
    assert [r.finish_reason.value for r in turn.responses] == ["length", "length"]
    shown = json.dumps(updates[0][OUT["context"]], ensure_ascii=False)
    assert "Chest pain since this morning." in shown and "alice" not in shown
    assert [m.id for m in history(db, cid, user_id=alice.id)] == [asked.id]  # only read


# --- the page in Chromium -------------------------------------------------------------------


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


@pytest.mark.vllm
@pytest.mark.browser
@pytest.mark.slow
def test_annotator_compares_in_the_browser(chromium, world):  # noqa: F811 - fixture
    db = world["db"]
    for name, extra in (("tiny", {}), ("a1", {"adapter_path": world["adapter"],
                                              "parent": "tiny"})):  # fmt: skip
        ensure_model_variant(db, name, world["base_url"], name,
                             sampling_defaults=BROWSER_SAMPLING, **extra)  # fmt: skip
    context = chromium.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    try:
        page.goto(world["url"] + "/")
        page.get_by_label("username").fill("ann2")
        page.get_by_label("password").fill(PASSWORD)
        page.get_by_role("button", name="Login").click()
        # lands on Compare: the only tab, no Consult
        start = page.locator("#compare-start-case")
        start.wait_for(state="visible", timeout=WAIT_MS)
        assert page.get_by_role("tab", name="Compare", exact=True).count() == 1
        assert page.get_by_role("tab", name="Consult", exact=True).count() == 0
        vote_btn = page.locator("#compare-vote-button")
        assert vote_btn.is_disabled()
        for side in ("A", "B"):  # the columns are labelled, anonymously
            assert page.locator(f"#compare-heading-{side.lower()}").inner_text() == f"Answer {side}"

        # the case set is picked; pick the case: its turns and the reference are shown
        page.get_by_role("combobox", name="Case", exact=True).click()
        page.get_by_role("option", name=re.compile("c1")).click()
        page.locator("#compare-context").get_by_text("手臂上起了红疹", exact=False).wait_for(
            timeout=WAIT_MS
        )
        assert "多久了？" in page.locator("#compare-context").inner_text()

        page.evaluate(START_SAMPLER, int(POLL_S * 1000))
        start.click()
        page.wait_for_function(
            "() => document.querySelector('#compare-vote-note').innerText.includes('unlocks')",
            timeout=WAIT_MS,
        )
        assert vote_btn.is_disabled()  # locked while both answers stream
        page.wait_for_function(
            "() => !document.querySelector('#compare-vote-button').disabled", timeout=60_000
        )
        lengths = page.evaluate(
            "() => { clearInterval(window.__sampler); window.__observer.disconnect(); "
            "return window.__lengths; }"
        )
        turn = last_turn(db, "ann2")
        for side in ("a", "b"):
            final = lengths[side][-1]
            grown = [n for n in lengths[side][:-1] if 0 < n < final]
            assert len(grown) >= 2, f"answer {side} did not stream: {lengths}"
            assert turn.response(side).finish_reason.value == "length"
        assert not re.search(r"\b(tiny|a1)\b", page.locator("#compare-reveal").inner_text())
        shot(page, "compare-streamed.png")

        for dim, choice in (("proactiveness", "A"), ("accuracy", "B"), ("usefulness", "Tie"),
                            ("language_quality", "A"), ("overall", "A")):  # fmt: skip
            page.locator(f"#compare-{dim}").get_by_label(choice, exact=True).check()
        page.locator("#compare-safety-b").get_by_role("checkbox").check()
        vote_btn.click()
        page.locator("#compare-vote-note").get_by_text("Saved").wait_for(timeout=WAIT_MS)
        reveal = page.locator("#compare-reveal").inner_text()
        assert re.search(r"Answer A was written by (tiny|a1), answer B by (tiny|a1)", reveal)
        assert vote_btn.is_disabled()
        votes = list_votes(db, turn_id=turn.id)
        assert len(votes) == 1 and votes[0].accuracy.value == "b" and votes[0].safety_flag_b
        shot(page, "compare-revealed.png")

        # a clinician's page has no Compare tab
        page.goto(world["url"] + "/logout")
        page.get_by_label("username").fill("alice")
        page.get_by_label("password").fill(PASSWORD)
        page.get_by_role("button", name="Login").click()
        page.get_by_role("button", name="New consultation").wait_for(timeout=WAIT_MS)
        assert page.get_by_role("tab", name="Compare", exact=True).count() == 0
        assert page.locator("#compare-start-case").is_hidden()
    except BaseException:
        shot(page, "compare-failure.png")
        raise
    finally:
        context.close()
        for name, extra in (("tiny", {}), ("a1", {"adapter_path": world["adapter"],
                                                  "parent": "tiny"})):  # fmt: skip
            ensure_model_variant(db, name, world["base_url"], name, sampling_defaults=SAMPLING,
                                 **extra)  # fmt: skip


@pytest.mark.vllm
@pytest.mark.browser
@pytest.mark.slow
def test_clinician_compare_mode_in_the_browser(chromium, world):  # noqa: F811 - fixture
    """Alice switches compare on, sends a question, sees two answers side by side with the
    pick buttons locked until both end, picks B without rating dimensions: the chat continues
    with B's answer, both models are named, one vote is stored with the dimensions unrated."""
    db = world["db"]
    context = chromium.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    try:
        page.goto(world["url"] + "/")
        page.get_by_label("username").fill("alice")
        page.get_by_label("password").fill(PASSWORD)
        page.get_by_role("button", name="Login").click()
        switch = page.locator("#consult-compare-switch").get_by_role("checkbox")
        switch.wait_for(state="visible", timeout=WAIT_MS)
        switch.check()
        box = page.locator("#consult-input textarea")
        box.fill("Chest tightness when climbing stairs, since last week.")
        box.press("Enter")
        panel = page.locator("#consult-compare").first  # Gradio puts the id on two wrappers
        panel.wait_for(state="visible", timeout=WAIT_MS)
        pick_b = page.get_by_role("button", name="B is better", exact=True)
        page.wait_for_function(
            "() => [...document.querySelectorAll('#consult-compare button')]"
            ".some(b => b.innerText.includes('B is better') && !b.disabled)", timeout=60_000)
        for side in ("a", "b"):  # labelled, anonymously
            heading = page.locator(f"#consult-compare-heading-{side}").first.inner_text()
            assert heading.strip() == f"Answer {side.upper()}"
        a_text = page.locator("#consult-compare-a").inner_text()
        b_text = page.locator("#consult-compare-b").inner_text()
        assert a_text.strip() and b_text.strip() and "tiny" not in a_text + b_text
        shot(page, "consult-compare-streamed.png")
        pick_b.click()
        status = page.locator("#consult-status")
        status.get_by_text("You picked answer B").wait_for(timeout=WAIT_MS)
        assert re.search(r"Answer A was written by (tiny|a1), answer B by (tiny|a1)",
                         status.inner_text())  # fmt: skip
        panel.wait_for(state="hidden", timeout=WAIT_MS)
        chat = page.locator("#consult-chat").inner_text()
        assert "Chest tightness" in chat
        turn = last_turn(db, "alice")
        [vote] = list_votes(db, turn_id=turn.id)
        assert vote.overall.value == "b" and vote.accuracy is None and turn.kept_side.value == "b"
        assert turn.response("b").text.split()[0] in chat  # the pick is in the chat now
        shot(page, "consult-compare-picked.png")
    except BaseException:
        shot(page, "consult-compare-failure.png")
        raise
    finally:
        context.close()
