"""Consult UX through gradio_client against the launched app and the real vLLM server: the
consultation list (search, dates), first-message consultations with plain titles, soft delete,
answer feedback and answer versions — stored in SQL, and refused, in words written for
people, to every other role, on other people's ids, with malformed values and file payloads.

    OMP_NUM_THREADS=1 python -m pytest tests/test_consult_ux_api.py -q   (needs scripts/test's
    vLLM environment, as tests/test_app_consult.py)
"""

from __future__ import annotations

import re

import httpx
import pytest
from apphelpers import PASSWORD, login, make_users, running_app
from gradio_client import Client
from gradio_client.exceptions import AppError
from sqlalchemy import func, select
from test_attacks import LEAKS

from app.config import AppConfig
from storage import Database, MessageRole, get_user_by_name, history, list_audit
from storage.models import AnswerFeedback, Consultation

pytestmark = pytest.mark.vllm

NEW_ENDPOINTS = ("/list_consultations", "/delete_consultation", "/feedback", "/versions",
                 "/choose_version")  # fmt: skip


@pytest.fixture(scope="module")
def app_db(tmp_path_factory) -> Database:
    db = Database.sqlite(tmp_path_factory.mktemp("uxdb") / "pulsemind.db")
    db.upgrade()
    make_users(db)
    return db


@pytest.fixture(scope="module")
def app_url(vllm_server, app_db, tmp_path_factory):
    config = AppConfig(
        model_url=vllm_server.base_url, model="tiny", variant_name="tiny",
        data_dir=str(tmp_path_factory.mktemp("data")), port=0,
    )  # fmt: skip
    with running_app(config, app_db) as url:
        yield url


def client(url: str, user: str) -> Client:
    return Client(url, auth=(user, PASSWORD), verbose=False)


def consult(c: Client, text: str, cid: int | None = None) -> dict:
    """One turn through /consult; its last update (consultation id, stored answer id)."""
    return c.predict({"text": text, "files": []}, cid, "tiny", api_name="/consult")


def uid(db: Database, name: str) -> int:
    return get_user_by_name(db, name).id


def count(db: Database, model, **where) -> int:
    with db.transaction(write=False) as s:
        return s.scalar(select(func.count()).select_from(model).filter_by(**where))


def refused(c: Client, *args, api_name: str, match: str | None = None) -> str:
    """The call fails with a message for people (no Python, SQL or stack); returns it."""
    with pytest.raises(AppError) as exc:
        c.predict(*args, api_name=api_name)
    message = str(exc.value)
    assert not LEAKS.search(message), (api_name, args, message)
    if match is not None:
        assert re.search(match, message), (api_name, args, message)
    return message


@pytest.fixture(scope="module")
def alices(app_url, app_db) -> dict:
    """Alice's consultation with one answer in three versions (two Retries)."""
    alice = client(app_url, "alice")
    first = consult(alice, "Knee pain after running, **swollen** since Monday.")
    cid = first["consultation_id"]
    for _ in range(2):
        alice.submit(cid, "tiny", api_name="/retry").result(timeout=300)
    answers = [m for m in history(app_db, cid, include_superseded=True)
               if m.role is MessageRole.ASSISTANT]  # fmt: skip
    assert len(answers) == 3
    return {"cid": cid, "answers": [m.id for m in answers], "question": answers[0].parent_id}


def test_a_consultation_starts_with_its_first_message_and_is_listed_with_dates(app_url, app_db):
    bob = client(app_url, "bob")
    before = count(app_db, Consultation)
    dropdown, chat, title = bob.predict(api_name="/new_consultation")
    assert (dropdown.get("value") if isinstance(dropdown, dict) else dropdown) is None
    assert chat == [] and title == ""
    assert count(app_db, Consultation) == before, "the button stores nothing"

    question = "## **Chest pain** since [yesterday](http://x) — see `ECG`, please advise"
    cid = consult(bob, question)["consultation_id"]
    (row,) = [r for r in bob.predict(None, api_name="/list_consultations") if r["id"] == cid]
    assert row["title"] == "Chest pain since yesterday — see ECG, please advise"
    assert row["created_at"] <= row["updated_at"]
    assert row["label"] == f"{row['title']} · #{cid} · {row['updated_at'][:10]}"
    assert [r["id"] for r in bob.predict("CHEST PAIN", api_name="/list_consultations")] == [cid]
    assert bob.predict("no such title", api_name="/list_consultations") == []
    with app_db.transaction(write=False) as s:
        assert s.get(Consultation, cid).title == row["title"]
    # the page's list shows the same label (/send updates it)
    dropdown, *_ = bob.predict({"text": "Also short of breath.", "files": []}, cid,
                               api_name="/send")  # fmt: skip
    (label,) = [label for label, value in dropdown["choices"] if value == cid]
    assert label.startswith(f"{row['title']} · #{cid} · 20")


def test_versions_and_feedback_are_stored(app_url, app_db, alices):
    alice = client(app_url, "alice")
    cid, (v1, v2, v3) = alices["cid"], alices["answers"]
    got = alice.predict(cid, v1, api_name="/versions")
    assert [v["message_id"] for v in got["versions"]] == [v1, v2, v3]
    assert (got["current_id"], got["current"], got["count"]) == (v3, 3, 3)

    chosen = alice.predict(cid, v1, api_name="/choose_version")
    assert (chosen["current_id"], chosen["current"]) == (v1, 1)
    current = history(app_db, cid)
    assert [m.id for m in current if m.role is MessageRole.ASSISTANT] == [v1]
    assert {m.id for m in history(app_db, cid, include_superseded=True) if m.superseded} == {v2, v3}
    # the page's chat shows the chosen version after a reopen
    chat, *_ = alice.predict(cid, api_name="/open_consultation")
    assert len(chat) == 2

    # the next answer continues from version 1 (the model is sent version 1)
    last = consult(alice, "It is worse going downstairs.", cid)
    assert history(app_db, cid)[-1].id == last["message_id"]
    assert [m.id for m in history(app_db, cid)][:2] == [alices["question"], v1]

    up = alice.predict(v1, "up", "Asked the right question.", api_name="/feedback")
    down = alice.predict(v1, "down", None, api_name="/feedback")  # changed, not added
    assert (up["thumbs"], down["thumbs"], down["comment"]) == ("up", "down", None)
    alice.predict(v2, "up", "Good follow-up.", api_name="/feedback")  # any version is rated
    with app_db.transaction(write=False) as s:
        rows = s.scalars(select(AnswerFeedback).order_by(AnswerFeedback.message_id)).all()
        stored = [(r.message_id, r.user_id, r.thumbs.value, r.comment) for r in rows]
    alice_id = uid(app_db, "alice")
    assert stored == [(v1, alice_id, "down", None), (v2, alice_id, "up", "Good follow-up.")]
    alice.predict(cid, v3, api_name="/choose_version")  # back to the newest for other tests


def test_a_deleted_consultation_is_gone_for_the_clinician_and_kept_in_sql(app_url, app_db):
    alice, root = client(app_url, "alice"), client(app_url, "root")
    last = consult(alice, "Sore throat for two days.")
    cid, answer = last["consultation_id"], last["message_id"]
    assert cid in [r["id"] for r in alice.predict(None, api_name="/list_consultations")]

    deleted = alice.predict(cid, api_name="/delete_consultation")
    assert deleted["consultation_id"] == cid and deleted["deleted_at"]
    assert cid not in [r["id"] for r in alice.predict(None, api_name="/list_consultations")]
    gone = "deleted"
    refused(alice, cid, api_name="/open_consultation", match=gone)
    refused(alice, {"text": "one more", "files": []}, cid, api_name="/send", match=gone)
    refused(alice, {"text": "one more", "files": []}, cid, "tiny", api_name="/consult", match=gone)
    refused(alice, cid, "tiny", api_name="/retry", match=gone)
    refused(alice, cid, "back", api_name="/rename", match=gone)
    refused(alice, cid, api_name="/delete_consultation", match=gone)
    refused(alice, answer, "up", None, api_name="/feedback", match=gone)
    refused(alice, cid, answer, api_name="/versions", match=gone)
    refused(alice, cid, answer, api_name="/choose_version", match=gone)

    with app_db.transaction(write=False) as s:
        row = s.get(Consultation, cid)
        assert row.deleted_at is not None and row.title == "Sore throat for two days."
    assert len(history(app_db, cid)) == 2, "its messages are kept"
    chat, *_ = root.predict(cid, api_name="/open_consultation")  # an admin still reads it
    assert len(chat) == 2
    assert root.predict(cid, answer, api_name="/versions")["current_id"] == answer
    audit = list_audit(app_db, user_id=uid(app_db, "alice"), action="consultation.delete")
    assert [e.target_id for e in audit] == [str(cid)]


def test_every_new_endpoint_refuses_other_roles_and_other_peoples_ids(app_url, app_db, alices):
    cid, answers = alices["cid"], alices["answers"]
    mid = answers[-1]
    before = [(m.id, m.text, m.superseded, m.chosen) for m in
              history(app_db, cid, include_superseded=True)]  # fmt: skip
    feedback_before = count(app_db, AnswerFeedback)
    calls = {"/delete_consultation": (cid,), "/feedback": (mid, "down", "not mine"),
             "/versions": (cid, mid), "/choose_version": (cid, answers[0])}  # fmt: skip
    tried = 0
    for who in ("bob", "ann", "root"):
        c = client(app_url, who)
        for api, args in calls.items():
            tried += 1
            if who == "root" and api == "/versions":
                assert c.predict(*args, api_name=api)["current_id"] == mid  # an admin reads
                continue
            refused(c, *args, api_name=api, match="annotator" if who == "ann" else None)
        if who == "ann":
            refused(c, None, api_name="/list_consultations", match="annotator")
        else:  # the list is the caller's own: alice's consultation is never in it
            assert cid not in [r["id"] for r in c.predict(None, api_name="/list_consultations")]
    # bob names alice's answer inside his own consultation
    bob = client(app_url, "bob")
    bobs = consult(bob, "My own patient: back pain.")["consultation_id"]
    for api, args in {"/versions": (bobs, mid), "/choose_version": (bobs, mid)}.items():
        refused(bob, *args, api_name=api)
    # anonymous callers get nothing
    for api in NEW_ENDPOINTS:
        r = httpx.post(f"{app_url}/gradio_api/call{api}", json={"data": [cid, mid]})
        assert r.status_code == 401, (api, r.status_code)

    after = [(m.id, m.text, m.superseded, m.chosen) for m in
             history(app_db, cid, include_superseded=True)]  # fmt: skip
    assert after == before and count(app_db, AnswerFeedback) == feedback_before
    with app_db.transaction(write=False) as s:
        assert s.get(Consultation, cid).deleted_at is None
    denied = [e for e in list_audit(app_db, user_id=uid(app_db, "ann"), action="denied")]
    assert len(denied) >= len(calls) + 1
    print(f"\nnew endpoints x other roles: {tried} calls, writes all refused")


#: test_attacks' values, and None. Not "１２": `app.edge.parse_id` reads full-width digits as an
#: id (12), which then goes through the access rule like any other id.
MALFORMED = ["abc", -1, 0, 10**30, 1.5, [], {}, "1; DROP TABLE users", True, None]


def test_new_endpoints_answer_malformed_values_in_plain_words(app_url, app_db, alices):
    alice = client(app_url, "alice")
    cid, mid = alices["cid"], alices["answers"][-1]
    before = [(m.id, m.superseded) for m in history(app_db, cid, include_superseded=True)]
    answered = 0
    for bad in MALFORMED:
        calls = [("/delete_consultation", (bad,)), ("/feedback", (bad, "up", None)),
                 ("/versions", (bad, mid)), ("/versions", (cid, bad)),
                 ("/choose_version", (bad, mid)), ("/choose_version", (cid, bad)),
                 ("/feedback", (mid, bad, None))]  # fmt: skip
        if bad is not None and not isinstance(bad, str):  # any text is a comment or a search
            calls += [("/feedback", (mid, "up", bad)), ("/list_consultations", (bad,))]
        for api, args in calls:
            refused(alice, *args, api_name=api)
            answered += 1
    refused(alice, mid, "up", "x" * 2001, api_name="/feedback", match="2000")
    refused(alice, "x" * 300, api_name="/list_consultations", match="200")
    refused(alice, cid, alices["question"], api_name="/versions", match="answer")  # a question
    assert [(m.id, m.superseded) for m in history(app_db, cid, include_superseded=True)] == before
    with app_db.transaction(write=False) as s:
        assert s.get(Consultation, cid).deleted_at is None
    print(f"\nmalformed values on the new endpoints: {answered} calls, plain messages")


def test_file_payloads_in_new_endpoints_are_refused_before_any_file_is_read(app_url, tmp_path,
                                                                           alices):  # fmt: skip
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER")
    cid, mid = alices["cid"], alices["answers"][-1]
    bob = client(app_url, "bob")
    http = login(app_url, "bob")
    for path in (str(secret), "/etc/hostname", "../" * 8 + "etc/hostname"):
        plain = {"path": path}  # gradio_client sends it as it is
        filedata = {"path": path, "meta": {"_type": "gradio.FileData"}}  # what a file value is
        for api, where in {"/list_consultations": 0, "/delete_consultation": 0, "/feedback": 2,
                           "/versions": 1, "/choose_version": 0}.items():  # fmt: skip
            args = {"/list_consultations": [None], "/delete_consultation": [cid],
                    "/feedback": [mid, "up", None], "/versions": [cid, mid],
                    "/choose_version": [cid, mid]}[api]  # fmt: skip
            with pytest.raises(httpx.HTTPStatusError) as exc:
                bob.predict(*[plain if i == where else a for i, a in enumerate(args)],
                            api_name=api)  # fmt: skip
            assert exc.value.response.status_code == 403
            assert not LEAKS.search(exc.value.response.text)
            data = [filedata if i == where else a for i, a in enumerate(args)]
            r = http.post(f"/gradio_api/call{api}", json={"data": data})
            assert r.status_code == 403 and "TOP-SECRET" not in r.text, (api, r.text)
            assert not LEAKS.search(r.text)
