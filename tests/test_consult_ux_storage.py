"""Consult UX in storage, on real SQLite files: soft delete, title search, answer feedback,
answer versions, and the migration that brings existing consultations along (0003).

Every rule is tried per role (owner, another clinician, annotator, admin) and on other
people's ids. Run: OMP_NUM_THREADS=1 python -m pytest tests/test_consult_ux_storage.py -q
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from storage import (
    Database,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Thumbs,
    add_assistant_message,
    add_user_message,
    answer_versions,
    check_writable,
    choose_version,
    create_consultation,
    create_user,
    delete_consultation,
    get_consultation,
    get_feedback,
    history,
    list_consultations,
    list_consultations_of,
    rename_consultation,
    set_feedback,
    update_assistant_message,
)
from storage.messages import current_path
from storage.models import AnswerFeedback, Consultation, Message, utcnow

PASSWORD = "correct horse battery"
DELETED = "This consultation was deleted. / 此会诊已删除。"


@pytest.fixture
def people(db: Database):
    return {
        name: create_user(db, name, PASSWORD, role)
        for name, role in [
            ("alice", "clinician"),
            ("bob", "clinician"),
            ("ann", "annotator"),
            ("root", "admin"),
        ]  # fmt: skip
    }


def _answer(db: Database, cid: int, user_id: int, text_: str, **kw):
    return add_assistant_message(
        db, cid, text_, user_id=user_id, model_variant_id=None, sampling_params=None,
        latency_ms=None, first_token_ms=None, prompt_tokens=None, completion_tokens=None,
        finish_reason=kw.pop("finish_reason", "stop"), **kw,
    )  # fmt: skip


def _rows(db: Database, model, **where) -> list:
    with db.transaction(write=False) as s:
        return list(s.scalars(select(model).filter_by(**where)))


# --- soft delete ----------------------------------------------------------------------------


def test_deleted_consultation_is_hidden_refused_and_kept(db, people):
    alice, bob, ann, root = (people[n] for n in ("alice", "bob", "ann", "root"))
    keep = create_consultation(db, alice.id, "Cough")
    gone = create_consultation(db, alice.id, "Rash")
    q = add_user_message(db, gone.id, alice.id, "Rash on the arm.")
    a = _answer(db, gone.id, alice.id, "Since when?")

    for outsider in (bob, ann, root):  # only the owner deletes (an admin reads, never writes)
        with pytest.raises(PermissionDenied):
            delete_consultation(db, gone.id, outsider.id)
    with pytest.raises(NotFound):
        delete_consultation(db, 10**30, alice.id)
    deleted = delete_consultation(db, gone.id, alice.id)
    assert deleted.deleted_at is not None and deleted.deleted_at.tzinfo is not None

    # gone from her list; the other one stays
    assert [c.id for c in list_consultations(db, alice.id)] == [keep.id]
    # refused to her for reading and writing, with a message in both languages
    refusals = [
        lambda: get_consultation(db, gone.id, alice.id),
        lambda: history(db, gone.id, user_id=alice.id),
        lambda: check_writable(db, gone.id, alice.id),
        lambda: add_user_message(db, gone.id, alice.id, "one more"),
        lambda: _answer(db, gone.id, alice.id, "again", replaces_id=a.id),
        lambda: update_assistant_message(db, a.id, "x", user_id=alice.id, finish_reason="stop"),
        lambda: rename_consultation(db, gone.id, alice.id, "back"),
        lambda: delete_consultation(db, gone.id, alice.id),
        lambda: answer_versions(db, gone.id, a.id, alice.id),
        lambda: choose_version(db, gone.id, a.id, alice.id),
        lambda: set_feedback(db, a.id, alice.id, "up"),
    ]
    for refuse in refusals:
        with pytest.raises(NotFound) as exc:
            refuse()
        assert exc.value.user_message == DELETED
    # others are refused as before (nothing tells them it existed)
    for outsider in (bob, ann):
        with pytest.raises(PermissionDenied):
            get_consultation(db, gone.id, outsider.id)
    # an admin still reads it, and writes nothing
    assert get_consultation(db, gone.id, root.id).deleted_at == deleted.deleted_at
    assert [m.id for m in history(db, gone.id, user_id=root.id)] == [q.id, a.id]
    assert answer_versions(db, gone.id, a.id, root.id).current_id == a.id
    with pytest.raises(PermissionDenied):
        add_user_message(db, gone.id, root.id, "admin note")

    # kept in SQL, with its messages
    (row,) = _rows(db, Consultation, id=gone.id)
    assert row.deleted_at is not None and row.title == "Rash"
    assert [m.id for m in _rows(db, Message, consultation_id=gone.id)] == [q.id, a.id]


def test_only_admins_list_deleted_consultations(db, people):
    alice, bob, ann, root = (people[n] for n in ("alice", "bob", "ann", "root"))
    live = create_consultation(db, alice.id, "Fever")
    gone = create_consultation(db, alice.id, "Fever again")
    delete_consultation(db, gone.id, alice.id)

    assert [c.id for c in list_consultations_of(db, root.id, alice.id)] == [live.id]
    listed = list_consultations_of(db, root.id, alice.id, include_deleted=True)
    assert [(c.id, c.deleted_at is not None) for c in listed] == [(gone.id, True), (live.id, False)]
    assert [c.id for c in list_consultations_of(db, root.id, alice.id, "AGAIN", True)] == [gone.id]
    for asker in (alice, bob, ann):
        with pytest.raises(PermissionDenied) as exc:
            list_consultations_of(db, asker.id, alice.id, include_deleted=True)
        assert "管理员" in exc.value.user_message
        with pytest.raises(PermissionDenied):
            list_consultations(db, asker.id, include_deleted=True)
    mine = create_consultation(db, root.id, "Admin's own")
    delete_consultation(db, mine.id, root.id)
    assert [c.id for c in list_consultations(db, root.id)] == []
    assert [c.id for c in list_consultations(db, root.id, include_deleted=True)] == [mine.id]


# --- search ---------------------------------------------------------------------------------


def test_search_titles_any_case_newest_activity_first_with_dates(db, people):
    alice, bob = people["alice"], people["bob"]
    chest = create_consultation(db, alice.id, "Chest pain, 54 y")
    fever = create_consultation(db, alice.id, "Fever in a child")
    chinese = create_consultation(db, alice.id, "胸痛三天")
    odd = create_consultation(db, alice.id, "100% sure_not a wildcard")
    create_consultation(db, bob.id, "Chest pain (bob's)")
    add_user_message(db, chest.id, alice.id, "Worse today.")  # newest activity

    def found(search):
        return [c.id for c in list_consultations(db, alice.id, search)]

    assert found(None) == found("") == found("   ") == [chest.id, odd.id, chinese.id, fever.id]
    assert found("CHEST") == found("chest pain") == [chest.id]  # bob's is not hers
    assert found("胸痛") == [chinese.id]
    assert found("%") == found("_not") == [odd.id]  # LIKE wildcards are plain characters
    assert found("e_t") == [] and found("nothing like it") == []
    first = list_consultations(db, alice.id, "chest")[0]
    assert first.updated_at > first.created_at and first.updated_at - utcnow() < timedelta(0)
    for bad in (["chest"], {"q": 1}, 5, "x" * 201):
        with pytest.raises(InvalidInput) as exc:
            list_consultations(db, alice.id, bad)
        assert " / " in exc.value.user_message


# --- feedback -------------------------------------------------------------------------------


def test_feedback_is_one_row_per_user_and_answer_and_owner_only(db, people):
    alice, bob, ann, root = (people[n] for n in ("alice", "bob", "ann", "root"))
    c = create_consultation(db, alice.id, "Cough")
    q = add_user_message(db, c.id, alice.id, "Cough for a week.")
    a = _answer(db, c.id, alice.id, "Any fever?")

    first = set_feedback(db, a.id, alice.id, "up")
    assert (first.thumbs, first.comment) == (Thumbs.UP, None)
    again = set_feedback(db, a.id, alice.id, Thumbs.DOWN, "  Missed the smoking history.  ")
    assert again.id == first.id and again.created_at == first.created_at
    assert (again.thumbs, again.comment) == (Thumbs.DOWN, "Missed the smoking history.")
    assert again.updated_at >= first.updated_at
    assert set_feedback(db, a.id, alice.id, "down", "   ").comment is None  # blank: no comment
    rows = _rows(db, AnswerFeedback, message_id=a.id)
    assert [(r.user_id, r.thumbs.value, r.comment) for r in rows] == [(alice.id, "down", None)]
    assert get_feedback(db, a.id, alice.id).thumbs is Thumbs.DOWN
    assert get_feedback(db, a.id, root.id) is None  # an admin reads; has given none

    # nobody but the owner rates (an admin reads only; others see nothing)
    for outsider in (bob, ann, root):
        with pytest.raises(PermissionDenied):
            set_feedback(db, a.id, outsider.id, "up")
    for outsider in (bob, ann):
        with pytest.raises(PermissionDenied):
            get_feedback(db, a.id, outsider.id)
    # bad values: messages for people in both languages, nothing written
    for args in [(q.id, "up", None), (a.id, "sideways", None), (a.id, True, None),
                 (a.id, ["up"], None), (a.id, "up", "x" * 2001), (a.id, "up", {"c": 1})]:  # fmt: skip
        with pytest.raises(InvalidInput) as exc:
            set_feedback(db, args[0], alice.id, args[1], args[2])
        assert " / " in exc.value.user_message
    assert set_feedback(db, a.id, alice.id, "up", "x" * 2000).comment == "x" * 2000
    for missing in (10**6, 10**30):
        with pytest.raises(NotFound):
            set_feedback(db, missing, alice.id, "up")
    assert len(_rows(db, AnswerFeedback)) == 1

    # the table itself holds one row per user and answer
    with pytest.raises(IntegrityError), db.transaction() as s:
        now = utcnow()
        s.add(AnswerFeedback(message_id=a.id, user_id=alice.id, thumbs="up", created_at=now,
                             updated_at=now))  # fmt: skip


# --- answer versions ------------------------------------------------------------------------


def test_versions_regenerate_choose_and_continue(db, people):
    alice = people["alice"]
    c = create_consultation(db, alice.id, "Headache")
    u1 = add_user_message(db, c.id, alice.id, "Headache.").id
    a1 = _answer(db, c.id, alice.id, "How long?").id
    u2 = add_user_message(db, c.id, alice.id, "Two weeks.").id
    a2 = _answer(db, c.id, alice.id, "Any vision changes?").id

    def path() -> list[int]:
        return [m.id for m in history(db, c.id)]

    assert answer_versions(db, c.id, a1, alice.id).versions[0].id == a1
    # regenerate the first answer twice: three versions, the newest current
    a1b = _answer(db, c.id, alice.id, "Where is the pain?", replaces_id=a1).id
    assert path() == [u1, a1b]
    a1c = _answer(db, c.id, alice.id, "Is it worse in the morning?", replaces_id=a1b).id
    v = answer_versions(db, c.id, a1b, alice.id)  # any version names the same answer
    assert [m.id for m in v.versions] == [a1, a1b, a1c]
    assert (v.current_id, v.current_number) == (a1c, 3)
    u3 = add_user_message(db, c.id, alice.id, "Yes, mornings.").id
    assert path() == [u1, a1c, u3]

    # back to version 1: its own continuation comes back, version 3's leaves (kept)
    v = choose_version(db, c.id, a1, alice.id)
    assert (v.current_id, v.current_number, len(v.versions)) == (a1, 1, 3)
    assert path() == [u1, a1, u2, a2]
    everything = {m.id: m for m in history(db, c.id, include_superseded=True)}
    assert {i for i, m in everything.items() if m.superseded} == {a1b, a1c, u3}
    assert everything[a1].chosen and not everything[a1c].chosen and everything[u3].chosen

    # the consultation continues from the chosen version
    u4 = add_user_message(db, c.id, alice.id, "And now nausea.").id
    assert path() == [u1, a1, u2, a2, u4]
    assert history(db, c.id)[-1].seq == 8  # seq keeps counting across branches
    # a deeper answer's versions, then switching the upper one away and back keeps the choice
    a4 = _answer(db, c.id, alice.id, "Since when?").id
    a4b = _answer(db, c.id, alice.id, "Any fever?", replaces_id=a4).id
    choose_version(db, c.id, a4, alice.id)
    assert path() == [u1, a1, u2, a2, u4, a4]
    choose_version(db, c.id, a1c, alice.id)
    assert path() == [u1, a1c, u3]
    choose_version(db, c.id, a1, alice.id)
    assert path() == [u1, a1, u2, a2, u4, a4]  # a4, not the newer a4b: the choice is kept
    assert [m.id for m in answer_versions(db, c.id, a4, alice.id).versions] == [a4, a4b]

    # regenerating a chosen older version adds a newest version of the same answer
    a1d = _answer(db, c.id, alice.id, "Describe the pain.", replaces_id=a1).id
    v = answer_versions(db, c.id, a1d, alice.id)
    assert [m.id for m in v.versions] == [a1, a1b, a1c, a1d] and v.current_id == a1d
    assert path() == [u1, a1d]
    # choosing the current version changes nothing
    before = history(db, c.id, include_superseded=True)
    choose_version(db, c.id, a1d, alice.id)
    assert history(db, c.id, include_superseded=True) == before
    # choosing a version on a branch that is not shown brings that whole branch back
    choose_version(db, c.id, a4b, alice.id)
    assert path() == [u1, a1, u2, a2, u4, a4b]


def test_versions_rules_per_role_and_other_peoples_ids(db, people):
    alice, bob, ann, root = (people[n] for n in ("alice", "bob", "ann", "root"))
    c = create_consultation(db, alice.id, "Knee")
    q = add_user_message(db, c.id, alice.id, "Knee pain.")
    a = _answer(db, c.id, alice.id, "Swelling?")
    b = _answer(db, c.id, alice.id, "Any injury?", replaces_id=a.id)
    mine = create_consultation(db, bob.id, "Bob's")
    add_user_message(db, mine.id, bob.id, "Back pain.")
    bobs_answer = _answer(db, mine.id, bob.id, "Since when?")
    before = history(db, c.id, include_superseded=True)

    assert answer_versions(db, c.id, a.id, root.id).current_id == b.id  # an admin reads
    for outsider in (bob, ann):
        with pytest.raises(PermissionDenied):
            answer_versions(db, c.id, a.id, outsider.id)
    for outsider in (bob, ann, root):
        with pytest.raises(PermissionDenied):
            choose_version(db, c.id, a.id, outsider.id)
    # bob names his own consultation with alice's answer, and the other way round
    with pytest.raises(NotFound) as exc:
        choose_version(db, mine.id, a.id, bob.id)
    assert exc.value.user_message.endswith("此会诊中没有这条回答。")
    with pytest.raises(NotFound):
        answer_versions(db, c.id, bobs_answer.id, alice.id)
    with pytest.raises(InvalidInput):
        choose_version(db, c.id, q.id, alice.id)  # a question has no versions
    for missing in (10**6, 10**30):
        with pytest.raises(NotFound):
            choose_version(db, c.id, missing, alice.id)
        with pytest.raises(NotFound):
            choose_version(db, missing, a.id, alice.id)
    assert history(db, c.id, include_superseded=True) == before


def test_current_path_follows_chosen_children():
    children = {None: [1], 1: [2, 4], 2: [3], 4: [5, 6]}
    assert current_path(children, {1, 2, 3, 5}) == [1, 2, 3]
    assert current_path(children, {1, 4, 5}) == [1, 4, 5]
    assert current_path(children, {1, 4}) == [1, 4, 6]  # no choice made: the newest
    assert current_path({}, set()) == []


# --- migration 0003 -------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_db(request, tmp_path):
    """An empty database at revision 0002 (before this change), SQLite or PostgreSQL."""
    if request.param == "sqlite":
        db = Database.sqlite(tmp_path / "old.db")
        db.upgrade("0002")
        yield db
        db.dispose()
        return
    from app.bench.postgres import PostgresUnavailable, fresh_database, postgres_server

    try:
        with postgres_server() as url:
            db = Database(fresh_database(url, "upgrade0003"))
            db.upgrade("0002")
            yield db
            db.dispose()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL server here: {exc}")


def test_upgrade_brings_existing_regenerated_answers_along(old_db):
    """Messages written under 0002 (regenerated by `replaces_id` + `superseded`) get their
    parents and chosen versions; what the clinician saw stays the current path."""
    db = old_db
    at = "2026-11-01 10:00:00"
    # u1 a1 u2 a2, then a1 regenerated (a1b) and continued (u3), then a1b regenerated (a1c)
    rows = [  # id, seq, role, replaces_id, superseded
        (1, 1, "user", None, False), (2, 2, "assistant", None, True), (3, 3, "user", None, True),
        (4, 4, "assistant", None, True), (5, 5, "assistant", 2, True), (6, 6, "user", None, True),
        (7, 7, "assistant", 5, False),
    ]  # fmt: skip
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, username, role, password_hash, active, "
                          "created_at) VALUES (1, 'alice', 'clinician', 'x', :t, :at)"),
                     {"t": True, "at": at})  # fmt: skip
        conn.execute(text("INSERT INTO consultations (id, owner_id, title, created_at, "
                          "updated_at) VALUES (1, 1, 'Old', :at, :at)"), {"at": at})  # fmt: skip
        conn.execute(
            text("INSERT INTO messages (id, consultation_id, seq, role, text, replaces_id, "
                 "superseded, created_at) VALUES (:id, 1, :seq, :role, 'm', :rep, :sup, :at)"),
            [{"id": i, "seq": q, "role": r, "rep": rep, "sup": sup, "at": at}
             for i, q, r, rep, sup in rows],
        )  # fmt: skip
        if db.engine.dialect.name == "postgresql":  # rows given ids: move the id sequences on
            for table in ("users", "consultations", "messages"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT max(id) FROM {table}))"))  # fmt: skip
    db.upgrade("0003")
    with db.engine.connect() as conn:
        tree = conn.execute(text("SELECT id, parent_id, chosen FROM messages ORDER BY id")).all()
        assert conn.scalar(text("SELECT count(*) FROM answer_feedback")) == 0
        assert conn.scalar(text("SELECT deleted_at FROM consultations")) is None
    assert [(i, parent, bool(chosen)) for i, parent, chosen in tree] == [
        (1, None, True), (2, 1, False), (3, 2, True), (4, 3, True), (5, 1, False),
        (6, 5, True), (7, 1, True),
    ]  # fmt: skip
    assert [m.id for m in history(db, 1)] == [1, 7]
    v = answer_versions(db, 1, 2, 1)
    assert [m.id for m in v.versions] == [2, 5, 7] and v.current_id == 7
    choose_version(db, 1, 2, 1)
    assert [m.id for m in history(db, 1)] == [1, 2, 3, 4]
    choose_version(db, 1, 5, 1)
    assert [m.id for m in history(db, 1)] == [1, 5, 6]
    q = add_user_message(db, 1, 1, "New turn after the upgrade.")
    assert (q.parent_id, q.seq) == (6, 8)

    db.downgrade("0002")  # and back: the new columns and table go, the messages stay
    with db.engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM messages")) == 8
        with pytest.raises(Exception, match="parent_id"):
            conn.execute(text("SELECT parent_id FROM messages"))
