"""The Consult tab through gradio_client against the launched app and the real vLLM server."""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from typing import NamedTuple

import pytest
from apphelpers import (
    PASSWORD,
    lab_report_pdf,
    login,
    make_users,
    png_file,
    running_app,
    text_of,
)
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app.config import AppConfig
from storage import Database, MessageRole, get_user_by_name, history, list_audit

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def app_db(tmp_path_factory) -> Database:
    db = Database.sqlite(tmp_path_factory.mktemp("appdb") / "pulsemind.db")
    db.upgrade()
    make_users(db)
    return db


@pytest.fixture(scope="module")
def app_url(vllm_server, app_db, tmp_path_factory):
    config = AppConfig(
        model_url=vllm_server.base_url, model="tiny", variant_name="tiny",
        data_dir=str(tmp_path_factory.mktemp("data")), port=7860,
    )  # fmt: skip
    with running_app(config, app_db) as url:
        yield url


def client(url: str, user: str) -> Client:
    return Client(url, auth=(user, PASSWORD), verbose=False)


class Turn(NamedTuple):
    cid: int
    seen: list  # snapshots of every streamed (chat, status) output of /answer
    chat: list
    status: str


def send(c: Client, text: str, files=(), cid=None) -> Turn:
    """What the browser does on Enter: /send stores the turn, then /answer streams the answer."""
    msg = {"text": text, "files": [handle_file(str(f)) for f in files]}
    dropdown, *_ = c.predict(msg, cid, api_name="/send")
    cid = _cid(dropdown)
    job = c.submit(cid, "tiny", api_name="/answer")
    # gradio_client patches one output object in place as diffs arrive: copy each as it comes
    seen = [copy.deepcopy(out) for out in job]
    chat, status = job.result(timeout=300)
    return Turn(cid, seen, chat, status)


def _cid(dropdown_value) -> int:
    """/send answers with a dropdown update (choices + value); a plain id elsewhere."""
    if isinstance(dropdown_value, dict):
        dropdown_value = dropdown_value["value"]
    return int(dropdown_value)


def test_three_turn_consultation_streams_persists_and_reopens(app_url, app_db, tmp_path):
    alice = client(app_url, "alice")
    files = [png_file(tmp_path / "ecg.png", 1), png_file(tmp_path / "xray.png", 2, (800, 600)),
             lab_report_pdf(tmp_path / "labs.pdf")]  # fmt: skip
    turn = send(alice, "Chest pain since yesterday, see attached.", files)
    cid = turn.cid
    chats = [o[0] for o in turn.seen if o[0]]
    answers = [text_of(c[-1]) for c in chats if c[-1]["role"] == "assistant"]
    assert len(answers) >= 3, "the answer should arrive as several streamed updates"
    assert any(len(a) < len(answers[-2]) for a in answers[:-2]), "text should grow while streaming"

    user = get_user_by_name(app_db, "alice")
    msgs = history(app_db, cid, user_id=user.id)
    assert [m.role for m in msgs] == [MessageRole.USER, MessageRole.ASSISTANT]
    assert [a.kind.value for a in msgs[0].attachments] == ["image", "image", "pdf"]
    assert [a.original_name for a in msgs[0].attachments] == ["ecg.png", "xray.png", "labs.pdf"]
    ans = msgs[1]
    assert ans.finish_reason.value in ("stop", "length") and ans.text
    assert ans.prompt_tokens and ans.completion_tokens and ans.latency_ms is not None
    assert ans.sampling_params["max_tokens"] > 0 and ans.model_variant_id is not None

    for text in ("The pain gets worse when climbing stairs.", "What should we do next?"):
        assert send(alice, text, cid=cid).cid == cid
    msgs = history(app_db, cid, user_id=user.id)
    assert [m.role for m in msgs] == [MessageRole.USER, MessageRole.ASSISTANT] * 3

    # reopen from a fresh session (as after a reload): the whole conversation comes back
    again = client(app_url, "alice")
    chat, title, _report, _status = again.predict(cid, api_name="/open_consultation")
    assert len(chat) == 6 and "Chest pain" in title
    assert "/attachments/" in text_of(chat[0])  # thumbnails
    pdf_key = f"{msgs[0].id}:2"
    assert "Hemoglobin 13.2" in again.predict(cid, pdf_key, api_name="/report_text")

    kinds = [e.action for e in list_audit(app_db, user_id=user.id)]
    assert "login" in kinds and "upload" in kinds and kinds.count("answer") >= 3


def test_bad_upload_is_refused_per_file_and_nothing_is_lost(app_url, app_db, tmp_path):
    alice = client(app_url, "alice")
    cid = send(alice, "First question").cid
    user = get_user_by_name(app_db, "alice")
    before = history(app_db, cid, user_id=user.id)
    fake = tmp_path / "scan.dcm"
    fake.write_bytes(b"this is not a DICOM file at all" * 10)
    good = png_file(tmp_path / "ok.png", 5)
    with pytest.raises(AppError) as refused:
        send(alice, "Here is the CT", [good, fake], cid=cid)
    message = str(refused.value)
    assert "scan.dcm" in message and "DICOM" in message and "ok.png:" not in message
    assert history(app_db, cid, user_id=user.id) == before


def test_roles_are_checked_on_the_server(app_url, app_db, tmp_path):
    alice = client(app_url, "alice")
    cid = send(alice, "A private question", [png_file(tmp_path / "p.png", 9)]).cid
    att = history(app_db, cid, user_id=get_user_by_name(app_db, "alice").id)[0].attachments[0]

    ann = client(app_url, "ann")
    for args, api in [((cid,), "/open_consultation"), ((), "/new_consultation"),
                      (({"text": "hi", "files": []}, None), "/send"), ((cid, "tiny"), "/answer"),
                      ((cid, "tiny"), "/retry"), ((cid, "x"), "/rename")]:  # fmt: skip
        with pytest.raises(AppError, match="annotator"):
            ann.predict(*args, api_name=api)
    denied = list_audit(app_db, user_id=get_user_by_name(app_db, "ann").id)
    assert sum(e.action == "denied" for e in denied) >= 6

    # anonymous callers get nothing
    with pytest.raises(Exception):  # noqa: B017 - gradio_client raises different types by version
        Client(app_url, verbose=False).predict(cid, api_name="/open_consultation")
    import httpx

    assert httpx.post(f"{app_url}/gradio_api/call/open_consultation",
                      json={"data": [cid]}).status_code == 401  # fmt: skip

    # another clinician can read neither the consultation nor its files
    bob = client(app_url, "bob")
    with pytest.raises(AppError):
        bob.predict(cid, api_name="/open_consultation")
    url = f"/attachments/{att.id}/0.png"
    assert login(app_url, "alice").get(url).status_code == 200
    assert login(app_url, "bob").get(url).status_code == 404
    assert httpx.get(f"{app_url}{url}").status_code == 404

    # files uploaded through Gradio are readable by their uploader only
    a = login(app_url, "alice")
    path = a.post(
        "/gradio_api/upload",
        files={"files": ("scan.png", (tmp_path / "p.png").read_bytes(), "image/png")},
    ).json()[0]
    assert a.get(f"/gradio_api/file={path}").status_code == 200
    assert login(app_url, "bob").get(f"/gradio_api/file={path}").status_code == 404


def consult(c: Client, text: str, files=(), cid=None) -> tuple[list[dict], dict]:
    """/consult, as a program calls it: every streamed update (copied), then the last one."""
    job = c.submit({"text": text, "files": [handle_file(str(f)) for f in files]}, cid, "tiny",
                   api_name="/consult")  # fmt: skip
    seen = [copy.deepcopy(out) for out in job]
    return seen, job.result(timeout=300)


def test_consult_api_is_one_call_per_turn(app_url, app_db, tmp_path):
    alice = client(app_url, "alice")
    files = [png_file(tmp_path / "a.png", 5), png_file(tmp_path / "b.png", 6, (300, 900)),
             lab_report_pdf(tmp_path / "labs.pdf")]  # fmt: skip
    seen, last = consult(alice, "Fever and cough for 3 days, results attached.", files)
    cid = last["consultation_id"]
    texts = [u["text"] for u in seen if u.get("text")]
    assert len(set(texts)) >= 2, "the answer streams in several updates"
    assert last["finish_reason"] in ("stop", "length") and last["error"] is None
    seen2, last2 = consult(alice, "And if the fever persists?", cid=cid)
    assert last2["consultation_id"] == cid

    msgs = history(app_db, cid, user_id=get_user_by_name(app_db, "alice").id)
    assert [m.role for m in msgs] == [MessageRole.USER, MessageRole.ASSISTANT] * 2
    assert [a.original_name for a in msgs[0].attachments] == ["a.png", "b.png", "labs.pdf"]
    assert (msgs[1].id, msgs[1].text) == (last["message_id"], last["text"])
    assert msgs[3].id == last2["message_id"] and msgs[3].completion_tokens
    actions = {e.action for e in list_audit(app_db, user_id=msgs[0].author_id)}
    assert {"upload", "answer"} <= actions


def test_consult_api_checks_role_owner_and_files(app_url, app_db, tmp_path):
    alice = client(app_url, "alice")
    _, last = consult(alice, "Alice's question")
    cid = last["consultation_id"]
    path = login(app_url, "alice").post(  # a file alice uploaded, by its server path
        "/gradio_api/upload", files={"files": ("p.png", png_file(tmp_path / "p.png", 3).read_bytes(),
                                               "image/png")},
    ).json()[0]  # fmt: skip
    bob = client(app_url, "bob")
    bob_id = get_user_by_name(app_db, "bob").id
    for other in (bob, client(app_url, "root")):  # alice's consultation; admins read only
        with pytest.raises(AppError, match="not|owns"):
            other.predict({"text": "let me in", "files": []}, cid, "tiny", api_name="/consult")
    import httpx

    for files in ([{"path": path}], [{"path": "/etc/hostname"}]):  # not his uploads
        with pytest.raises(httpx.HTTPStatusError) as refused:  # before Gradio reads the payload
            bob.predict({"text": "see file", "files": files}, None, "tiny", api_name="/consult")
        assert refused.value.response.status_code == 403
    with pytest.raises(AppError, match="uploading them here"):  # a bare path: the handler's check
        bob.predict({"text": "see file", "files": [path]}, None, "tiny", api_name="/consult")
    with pytest.raises(AppError, match="annotator"):
        client(app_url, "ann").predict({"text": "hi", "files": []}, api_name="/consult")
    assert httpx.post(f"{app_url}/gradio_api/call/consult",
                      json={"data": [{"text": "hi", "files": []}]}).status_code == 401  # fmt: skip
    from storage import list_consultations

    assert list_consultations(app_db, bob_id) == [], "nothing was stored for bob"
    bobs = list_audit(app_db, user_id=bob_id)
    assert not [e for e in bobs if e.action in ("upload", "answer")]  # refusals are not turns
    assert any(e.action == "denied" for e in bobs)  # they are audited as refusals
    assert len(history(app_db, cid)) == 2, "alice's consultation is untouched"


def test_upload_size_is_capped(app_url):
    """Gradio refuses uploads over the configured cap before they reach intake."""
    a = login(app_url, "alice")
    big = b"\0" * (51 * 2**20)  # default cap: 50 MB
    r = a.post("/gradio_api/upload", files={"files": ("huge.png", big, "image/png")})
    assert r.status_code in (413, 400), r.text


@contextmanager
def long_answers(db: Database):
    """The "tiny" variant answers at length (3000 sampled tokens) inside the block; the end of
    answer is held back (`min_tokens`), as the random model can sample it early and the answer
    would then end on its own before the test stops it."""
    from storage import ensure_model_variant, get_variant_by_name

    endpoint = get_variant_by_name(db, "tiny").endpoint
    ensure_model_variant(db, "tiny", endpoint, "tiny",
                         sampling_defaults={"max_tokens": 3000, "min_tokens": 3000,
                                            "temperature": 1.0})  # fmt: skip
    try:
        yield
    finally:
        ensure_model_variant(db, "tiny", endpoint, "tiny", sampling_defaults={})


def wait_for_answer(db: Database, cid: int, user: str = "alice") -> list:
    """The consultation's messages once its answer is stored (at most 30 s)."""
    user_id = get_user_by_name(db, user).id
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msgs = history(db, cid, user_id=user_id)
        if len(msgs) == 2:
            break
        time.sleep(0.2)
    return msgs


def test_stop_keeps_the_partial_answer(app_url, app_db):
    """The Stop button (an event cancel, as the browser sends it) records what had arrived."""
    with long_answers(app_db):
        alice = client(app_url, "alice")
        dropdown, *_ = alice.predict({"text": "Long answer please", "files": []}, None,
                                     api_name="/send")  # fmt: skip
        cid = _cid(dropdown)
        job = alice.submit(cid, "tiny", api_name="/answer")
        for out in job:
            if out[0] and out[0][-1]["role"] == "assistant" and text_of(out[0][-1]):
                break
        job.cancel()
        msgs = wait_for_answer(app_db, cid)
        assert msgs[1].finish_reason.value == "cancelled" and msgs[1].text
        assert msgs[1].completion_tokens is None or msgs[1].completion_tokens < 3000


def test_consult_api_cancel_keeps_the_question_and_partial_answer(app_url, app_db):
    """A program that cancels /consult mid-answer: both the turn and the partial answer stay."""
    with long_answers(app_db):
        alice = client(app_url, "alice")
        job = alice.submit({"text": "Long answer please", "files": []}, None, "tiny",
                           api_name="/consult")  # fmt: skip
        cid = None
        for out in job:
            if out.get("text"):
                cid = out["consultation_id"]
                break
        job.cancel()
        msgs = wait_for_answer(app_db, cid)
        assert msgs[0].text == "Long answer please"
        assert msgs[1].finish_reason.value == "cancelled" and msgs[1].text
