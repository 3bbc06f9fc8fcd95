"""The Consult tab's handlers called directly (no browser, no server): the same rules hold, the
answer streams and is recorded, errors come out as storage errors with users' messages."""

from __future__ import annotations

import pytest
from apphelpers import make_users, png_file

from app.consult_tab import ConsultHandlers
from app.workflow import Consultations, UploadRejected
from model.engines import EngineRegistry
from storage import (
    Database,
    NotFound,
    PermissionDenied,
    ensure_model_variant,
    get_user_by_name,
    history,
)


@pytest.fixture
def tab(demo_model_dir, tmp_path):
    db = Database.sqlite(tmp_path / "t.db")
    db.upgrade()
    make_users(db)
    ensure_model_variant(db, "demo", "embedded", str(demo_model_dir),
                         sampling_defaults={"max_tokens": 8, "temperature": 0.0})  # fmt: skip
    with Consultations(db, EngineRegistry(), checkpoint_s=0.0) as flow:
        yield ConsultHandlers(db, flow), db, {n: get_user_by_name(db, n) for n in
                                              ("alice", "bob", "root")}  # fmt: skip
    db.dispose()


def test_send_answer_retry_open_as_the_tab_would(tab, tmp_path):
    h, db, u = tab
    scan = png_file(tmp_path / "scan.png", 4)
    h.flow.uploads.add("alice", [scan])
    dropdown, shown, box, status, title = h.send(
        u["alice"], {"text": "Chest pain", "files": [{"path": str(scan), "orig_name": "s.png"}]},
        None)  # fmt: skip
    cid = dropdown["value"]
    assert title == "Chest pain" and box is None and "s.png" in shown[0]["content"]
    updates = list(h.answer(u["alice"], cid, "demo"))
    chat, status = updates[-1]
    assert chat[-1]["role"] == "assistant" and status == ""
    first = history(db, cid)[-1]
    list(h.retry(u["alice"], cid, "demo"))
    (q, again) = history(db, cid)
    assert again.id != first.id and again.replaces_id == first.id
    # checkpointing every update stored the answer while it streamed, then finished that row
    assert again.finish_reason.value in ("stop", "length")
    chat, *_ = h.open_consultation(u["root"], cid)  # an admin reads
    assert len(chat) == 2


def test_rules_and_messages_without_a_browser(tab, tmp_path):
    h, db, u = tab
    dropdown, *_ = h.send(u["alice"], {"text": "Cough", "files": []}, None)
    cid = dropdown["value"]
    list(h.answer(u["alice"], cid, "demo"))
    before = history(db, cid, include_superseded=True)
    with pytest.raises(PermissionDenied):
        list(h.retry(u["root"], cid, "demo"))  # admins read, never answer, there
    with pytest.raises(PermissionDenied):
        h.open_consultation(u["bob"], cid)
    with pytest.raises(PermissionDenied):
        h.send(u["bob"], {"text": "mine", "files": []}, cid)
    assert history(db, cid, include_superseded=True) == before
    for bad in ("abc", -5, 10**30, 2.5):
        with pytest.raises(NotFound) as exc:
            h.open_consultation(u["alice"], bad)
        assert exc.value.user_message == "This consultation does not exist."
    # a file named by path that alice never uploaded is refused before it is opened
    secret = tmp_path / "secret.png"
    png_file(secret, 1)
    with pytest.raises(PermissionDenied) as exc:
        h.send(u["alice"], {"text": "x", "files": [{"path": str(secret)}]}, None)
    assert exc.value.user_message == "Attach files by uploading them here first."
    fake = tmp_path / "fake.dcm"
    fake.write_text("not a dicom")
    h.flow.uploads.add("alice", [fake])
    with pytest.raises(UploadRejected) as exc:
        h.send(u["alice"], {"text": "x", "files": [{"path": str(fake), "orig_name": "scan.dcm"}]},
               None)  # fmt: skip
    assert "scan.dcm" in str(exc.value)


def test_list_delete_versions_and_rating_as_the_page_uses_them(tab):
    from storage import InvalidInput, list_consultations

    h, db, u = tab
    alice = u["alice"]
    assert h.new_consultation(alice) == ({"__type__": "update", "value": None}, [], "")
    assert list_consultations(db, alice.id) == [], "the button stores nothing"
    dropdown, *_ = h.send(alice, {"text": "**Cough** for a week", "files": []}, None)
    cid = dropdown["value"]
    list(h.answer(alice, cid, "demo"))
    first = history(db, cid)[-1].id
    list(h.retry(alice, cid, "demo"))
    second = history(db, cid)[-1].id

    picker = h.answer_choices(alice, cid)
    assert [v for _, v in picker["choices"]] == [second] and picker["value"] == second
    versions, up, down, comment = h.show_answer(alice, cid, second)
    assert versions["choices"] == [("1/2", first), ("2/2", second)]
    assert versions["value"] == second and comment == ""
    assert (up["variant"], down["variant"]) == ("secondary", "secondary")
    up, down = h.rate(alice, second, "up", "Helpful")
    assert (up["variant"], down["variant"]) == ("primary", "secondary")
    _, up, _, comment = h.show_answer(alice, cid, second)
    assert up["variant"] == "primary" and comment == "Helpful"
    with pytest.raises(InvalidInput):
        h.rate(alice, None, "up", "")
    with pytest.raises(PermissionDenied):
        h.rate(u["root"], second, "down", "")  # an admin reads, never rates, there
    assert h.show_answer(u["root"], cid, second)[0]["value"] == second

    chat, picker = h.pick_version(alice, cid, first)
    assert picker["value"] == first and [m.id for m in history(db, cid)][-1] == first
    assert chat[-1]["content"] == history(db, cid)[-1].text
    with pytest.raises(PermissionDenied):
        h.pick_version(u["bob"], cid, second)

    (label, value), = h.filter_list(alice, "COUGH", None)["choices"]
    assert value == cid and label.startswith(f"Cough for a week · #{cid} · ")
    assert h.filter_list(alice, "fever", None)["choices"] == []
    # delete (after the page's confirmation): someone else's is refused in place, nothing gone
    *_, hidden, note = h.delete_page(u["bob"], cid, "")
    assert hidden["visible"] is False and "not" in note.lower()
    assert h.filter_list(alice, "", None)["choices"]
    opened, listing, chat, title, _, _, note = h.delete_page(alice, cid, "")
    assert opened is None and listing["choices"] == [] and chat == [] and "Deleted" in note
    with pytest.raises(NotFound, match="deleted"):
        h.open_consultation(alice, cid)
