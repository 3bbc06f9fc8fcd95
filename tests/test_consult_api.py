"""`Consultations.ask` (behind `/consult`): the turn is stored while the model starts, and the
model reads exactly what `answer` would have sent; with the model server down the question is
kept and the caller told."""

from __future__ import annotations

import pytest
from apphelpers import PASSWORD, lab_report_pdf, login, make_users, png_file, running_app
from gradio_client import Client

from app.config import AppConfig
from app.workflow import Consultations
from model.engines import EngineRegistry
from model.openai_engine import to_openai_messages
from model.prompt import to_chat_messages
from model.serve import free_port
from storage import Database, MessageRole, ensure_model_variant, get_user_by_name, history


def test_ask_sends_what_the_stored_turn_would_and_stores_it(demo_model_dir, tmp_path):
    db = Database.sqlite(tmp_path / "t.db")
    db.upgrade()
    make_users(db)
    ensure_model_variant(db, "demo", "embedded", str(demo_model_dir),
                         sampling_defaults={"max_tokens": 8, "temperature": 0.0})  # fmt: skip
    flow = Consultations(db, EngineRegistry())
    alice = get_user_by_name(db, "alice")
    files = [
        ("ecg.png", png_file(tmp_path / "ecg.png", 1)),
        ("labs.pdf", lab_report_pdf(tmp_path / "l.pdf")),
    ]
    flow.uploads.add(alice.username, [p for _, p in files])  # as the server records uploads
    cid = None
    for text, turn_files in [("Chest pain, see attached.", files), ("Any other tests?", [])]:
        answer = flow.ask(alice, cid, text, turn_files)
        assert "".join(answer)  # streams once the turn is stored
        flow.record(alice, answer)
        cid = answer.consultation_id
        stored = history(db, cid, user_id=alice.id, with_png=True)
        assert stored[-2].role is MessageRole.USER and stored[-2].text == text
        assert stored[-1].id == answer.recorded.id and stored[-1].role is MessageRole.ASSISTANT
        # what the model got == what `answer` builds from the stored history
        assert to_openai_messages(answer.stream.messages) == to_openai_messages(
            to_chat_messages(stored[:-1])
        )
    assert len(stored) == 4 and [a.original_name for a in stored[0].attachments] == [
        "ecg.png",
        "labs.pdf",
    ]


@pytest.fixture(scope="module")
def down_app(tmp_path_factory):
    """The app pointed at a model server that is not there (nothing listens on the port)."""
    tmp = tmp_path_factory.mktemp("down")
    db = Database.sqlite(tmp / "t.db")
    db.upgrade()
    make_users(db)
    config = AppConfig(model_url=f"http://127.0.0.1:{free_port()}/v1", model="tiny",
                       variant_name="tiny", data_dir=str(tmp), port=0)  # fmt: skip
    with running_app(config, db) as url:
        yield url, db


def test_consult_with_the_model_server_down_keeps_the_question(down_app):
    url, db = down_app
    alice = Client(url, auth=("alice", PASSWORD), verbose=False)
    last = alice.predict({"text": "Is anyone there?", "files": []}, api_name="/consult")
    assert last["finish_reason"] == "error" and "reached" in last["error"]
    assert last["message_id"] is None and last["text"] == ""
    (question,) = history(db, last["consultation_id"])
    assert question.role is MessageRole.USER and question.text == "Is anyone there?"


def test_two_clinicians_may_attach_the_same_file(down_app, tmp_path):
    """Gradio stores identical uploads under one path; each uploader may still use it."""
    url, db = down_app
    data = png_file(tmp_path / "same.png", 7).read_bytes()
    paths = {
        who: login(url, who).post("/gradio_api/upload",
                                  files={"files": ("same.png", data, "image/png")}).json()[0]
        for who in ("alice", "bob")
    }  # fmt: skip
    assert paths["alice"] == paths["bob"]  # one cached file, two uploaders
    for who in ("alice", "bob"):
        c = Client(url, auth=(who, PASSWORD), verbose=False)
        f = {"path": paths[who], "orig_name": "same.png"}  # already uploaded: sent as is
        last = c.predict({"text": "Same scan", "files": [f]}, api_name="/consult")
        (question,) = history(db, last["consultation_id"])
        assert [a.original_name for a in question.attachments] == ["same.png"], who
