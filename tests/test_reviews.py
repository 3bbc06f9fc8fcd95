"""Second opinions (storage/reviews.py): a voted compare turn is assigned to another annotator, who
reads that turn and votes on it, nothing else; agreement between annotators then has data.

On real SQLite files (and PostgreSQL where marked): the migration up and down, which turn is
assigned (fewest annotators first; never one's own, one already voted, a clinician's own
consultation or an answer that did not end), a pending assignment comes back on reload, two
racing requests make one assignment, what an assigned reviewer may and may not do, time to vote
from the assignment, and `agreement` on the leaderboard's real rows. The Compare tab's handler,
and through gradio_client against the app and the real vLLM server (marked vllm): annotator 1
compares and votes, annotator 2 gets the same turn from /compare_review, votes with /vote, sees
the reveal; a clinician gets the role message.

Run: OMP_NUM_THREADS=1 python -m pytest tests/test_reviews.py -q   (the vllm test starts vLLM)
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from gradio_client.exceptions import AppError
from sqlalchemy import func, inspect, select, update
from test_attacks import LEAKS
from test_compare_api import client, compare, world  # noqa: F401 - fixture

from app.bench.postgres import fresh_database
from app.compare import Comparisons
from app.compare_tab import STREAM_FIELDS, CompareHandlers
from app.i18n import SERVER
from model.engines import EngineRegistry
from storage import (
    Database,
    PermissionDenied,
    add_compare_turn,
    add_user_message,
    assign_review,
    create_comparison,
    create_consultation,
    create_user,
    get_compare_turn,
    get_user_by_name,
    keep_response,
    list_votes,
    record_vote,
    reveal,
    turn_context,
    user_can_access_attachment,
)
from storage.leaderboard_data import leaderboard_rows
from storage.models import Base, CompareReview, ComparisonResponse, Vote, utcnow
from tests.test_compare_storage import (  # noqa: F401 - fixtures
    OTHER_VOTE,
    PASSWORD,
    VOTE,
    answer,
    answered_turn,
    bilingual,
    image,
    pg_server,
    variants,
)
from training.leaderboard import agreement


@pytest.fixture
def people(db: Database):
    return {name: create_user(db, name, PASSWORD, role) for name, role in [
        ("ann", "annotator"), ("ann2", "annotator"), ("alice", "clinician"), ("root", "admin")]}  # fmt: skip


def key() -> str:
    return str(uuid.uuid4())


def review_rows(db: Database) -> list[tuple[int, int]]:
    with db.transaction(write=False) as s:
        return [tuple(r) for r in s.execute(
            select(CompareReview.turn_id, CompareReview.reviewer_id).order_by(CompareReview.id))]  # fmt: skip


def voted_turn(db, user, text="Cough for a week.", vote=VOTE, **kw):
    turn = answered_turn(db, user, text=text, **kw)
    record_vote(db, turn.id, user.id, idempotency_key=key(), **vote)
    return turn


# --- the migration ------------------------------------------------------------------------------


def _migrate_round_trip(db: Database, people_of) -> None:
    db.upgrade("0007")
    who = people_of(db)
    turn = answered_turn(db, who["ann"])  # a comparison made before the upgrade
    db.upgrade("0008")
    record_vote(db, turn.id, who["ann"].id, idempotency_key=key(), **VOTE)
    assert db.current_revision() == "0008"
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        uniques = inspect(conn).get_unique_constraints("compare_reviews")
    assert [u["column_names"] for u in uniques] == [["turn_id", "reviewer_id"]]
    assert assign_review(db, who["ann2"].id).id == turn.id
    db.downgrade("0007")
    assert db.current_revision() == "0007"
    with db.engine.connect() as conn:
        assert "compare_reviews" not in inspect(conn).get_table_names()
    assert len(list_votes(db, turn_id=turn.id)) == 1  # nothing else went
    db.upgrade()
    assert review_rows(db) == []


def _two_annotators(db: Database) -> dict:
    return {n: create_user(db, n, PASSWORD, "annotator") for n in ("ann", "ann2")}


def test_migration_up_and_down_sqlite(tmp_path):
    db = Database.sqlite(tmp_path / "m.db")
    try:
        _migrate_round_trip(db, _two_annotators)
    finally:
        db.dispose()


@pytest.mark.postgres
def test_migration_up_and_down_postgres(pg_server):  # noqa: F811 - fixture
    db = Database(fresh_database(pg_server, "reviews_migration"))
    try:
        _migrate_round_trip(db, _two_annotators)
    finally:
        db.dispose()


# --- which turn is assigned -----------------------------------------------------------------------


def test_assignment_rules(db, people):
    ann, ann2, alice, root = (people[n] for n in ("ann", "ann2", "alice", "root"))
    assert assign_review(db, ann2.id) is None  # nothing voted yet
    old = voted_turn(db, ann, "Old question.")
    new = voted_turn(db, ann, "New question.")
    answered_turn(db, ann, text="Not voted yet.")
    mine = voted_turn(db, ann2, "ann2's own turn.")
    # an answer cut off: no vote can be cast on it; a vote row written in SQL shows the rule
    # does not depend on that
    cut = answered_turn(db, ann, ("stop", "cut_off"), text="Cut off.")
    with db.transaction() as s:
        s.add(Vote(turn_id=cut.id, voter_id=ann.id, overall="a", safety_flag_a=False,
                   safety_flag_b=False, idempotency_key="fake-vote-on-cut-off", created_at=utcnow(),
                   **{d: "a" for d in ("proactiveness", "accuracy", "usefulness",
                                       "language_quality")}))  # fmt: skip
    # a clinician's own consultation compared and voted: hers alone
    c = create_consultation(db, alice.id, "Fever")
    add_user_message(db, c.id, alice.id, "Fever since Monday.")
    base, lora = variants(db)
    theirs = create_comparison(db, alice.id, "consultation", consultation_id=c.id,
                               variant_a_id=base.id, variant_b_id=lora.id)  # fmt: skip
    answer(db, theirs, alice, "a")
    answer(db, theirs, alice, "b")
    record_vote(db, theirs.id, alice.id, idempotency_key=key(), overall="a", proactiveness=None,
                accuracy=None, usefulness=None, language_quality=None)  # fmt: skip

    # clinicians give no second opinions
    with pytest.raises(PermissionDenied) as exc:
        assign_review(db, alice.id)
    assert bilingual(exc.value.user_message)

    # equal load: the oldest first; a reload gives the same pending turn
    first = assign_review(db, root.id)
    assert first.id == old.id and first.prompt_text == "Old question."
    assert [r.text for r in first.responses] == ["answer a", "answer b"]
    assert assign_review(db, root.id).id == old.id
    # old has 2 annotators now (ann voted, root assigned): ann2 gets new, never her own
    assert assign_review(db, ann2.id).id == new.id
    assert assign_review(db, ann2.id).id == new.id
    record_vote(db, new.id, ann2.id, idempotency_key=key(), **VOTE)
    assert assign_review(db, ann2.id).id == old.id
    record_vote(db, old.id, ann2.id, idempotency_key=key(), **OTHER_VOTE)
    assert assign_review(db, ann2.id) is None  # voted both; the rest is hers or not reviewable
    # root still has old pending, then new (2 votes), then mine
    assert assign_review(db, root.id).id == old.id
    record_vote(db, old.id, root.id, idempotency_key=key(), **VOTE)
    assert assign_review(db, root.id).id == mine.id  # 1 annotator on it vs 2 on new
    record_vote(db, mine.id, root.id, idempotency_key=key(), **VOTE)
    assert assign_review(db, root.id).id == new.id
    record_vote(db, new.id, root.id, idempotency_key=key(), **VOTE)
    assert assign_review(db, root.id) is None
    assert review_rows(db) == [(old.id, root.id), (new.id, ann2.id), (old.id, ann2.id),
                               (mine.id, root.id), (new.id, root.id)]  # fmt: skip


def _race(db: Database, user_id: int, n: int) -> list:
    got: list = []
    start = threading.Barrier(n)

    def ask():
        start.wait()
        try:
            got.append(assign_review(db, user_id))
        except Exception as exc:  # noqa: BLE001 - collected and asserted on below
            got.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def _check_one_assignment(db: Database, people_: dict) -> None:
    turns = [voted_turn(db, people_["ann"], f"Question {n}.") for n in range(3)]
    got = _race(db, people_["ann2"].id, 8)
    assert [type(g).__name__ for g in got] == ["CompareTurnRecord"] * 8, got
    assert {g.id for g in got} == {turns[0].id}
    assert review_rows(db) == [(turns[0].id, people_["ann2"].id)]


def test_concurrent_requests_make_one_assignment_sqlite(db, people):
    _check_one_assignment(db, people)


@pytest.mark.postgres
def test_concurrent_requests_make_one_assignment_postgres(pg_server):  # noqa: F811 - fixture
    db = Database(fresh_database(pg_server, "reviews_race"))
    db.upgrade()
    try:
        _check_one_assignment(db, _two_annotators(db))
    finally:
        db.dispose()


# --- what an assigned reviewer may do ------------------------------------------------------------


def test_an_assigned_reviewer_reads_and_votes_on_that_turn_only(db, people):
    ann, ann2 = people["ann"], people["ann2"]
    ann3 = create_user(db, "ann3", PASSWORD, "annotator")
    base, lora = variants(db)
    turn = create_comparison(db, ann.id, "ad_hoc", variant_a_id=base.id, variant_b_id=lora.id,
                             prompt_text="What is this rash?", prompt_attachments=[image()])  # fmt: skip
    answer(db, turn, ann, "a")
    answer(db, turn, ann, "b")
    record_vote(db, turn.id, ann.id, idempotency_key=key(), **VOTE)
    scan = turn.attachments[0].id
    for user in (ann2, ann3):  # before any assignment: someone else's turn
        with pytest.raises(PermissionDenied):
            get_compare_turn(db, turn.id, user_id=user.id)
        with pytest.raises(PermissionDenied):
            record_vote(db, turn.id, user.id, idempotency_key=key(), **VOTE)
        assert not user_can_access_attachment(db, user.id, scan)

    assert assign_review(db, ann2.id).id == turn.id
    # the reviewer reads the turn, its context and its file; nothing revealed yet
    assert get_compare_turn(db, turn.id, user_id=ann2.id).response("a").text == "answer a"
    assert [m.text for m in turn_context(db, turn.id, user_id=ann2.id)] == ["What is this rash?"]
    assert user_can_access_attachment(db, ann2.id, scan)
    with pytest.raises(PermissionDenied):
        reveal(db, turn.id, ann2.id)
    # ... and writes nothing but the vote
    with pytest.raises(PermissionDenied):
        keep_response(db, turn.id, ann2.id, "a")
    with pytest.raises(PermissionDenied):
        answer(db, turn, ann2, "a")
    # an unassigned annotator is still refused
    with pytest.raises(PermissionDenied):
        record_vote(db, turn.id, ann3.id, idempotency_key=key(), **VOTE)
    assert not user_can_access_attachment(db, ann3.id, scan)

    # time to vote counts from the assignment, not from when the answers ended
    now = utcnow()
    with db.transaction() as s:
        s.execute(update(ComparisonResponse).where(ComparisonResponse.turn_id == turn.id)
                  .values(finished_at=now - timedelta(days=1)))  # fmt: skip
        s.execute(update(CompareReview).where(CompareReview.reviewer_id == ann2.id)
                  .values(assigned_at=now - timedelta(seconds=90)))  # fmt: skip
    k = key()
    vote = record_vote(db, turn.id, ann2.id, idempotency_key=k, **OTHER_VOTE)
    assert 90_000 <= vote.time_to_vote_ms < 150_000, vote.time_to_vote_ms
    assert record_vote(db, turn.id, ann2.id, idempotency_key=k, **OTHER_VOTE) == vote  # a replay
    assert [(v.voter_id, v.overall.value) for v in list_votes(db, turn_id=turn.id)] == [
        (ann.id, "a"), (ann2.id, "b")]  # fmt: skip
    assert {side.value: v.name for side, v in reveal(db, turn.id, ann2.id).items()} == {
        "a": "base", "b": "lora"}  # fmt: skip
    # after the vote: still no keep, no next turn in someone else's comparison
    with pytest.raises(PermissionDenied):
        keep_response(db, turn.id, ann2.id, "b")
    keep_response(db, turn.id, ann.id, "a")
    with pytest.raises(PermissionDenied):
        add_compare_turn(db, turn.id, ann2.id, variant_a_id=base.id, variant_b_id=lora.id,
                         prompt_text="More?")  # fmt: skip
    with pytest.raises(PermissionDenied):
        record_vote(db, turn.id, ann3.id, idempotency_key=key(), **VOTE)
    with db.transaction(write=False) as s:
        assert s.scalar(select(func.count()).select_from(Vote)) == 2


def test_agreement_counts_the_double_annotated_turn(db, people):
    ann, ann2 = people["ann"], people["ann2"]
    turn = voted_turn(db, ann)  # VOTE: a, tie, a, b; overall a
    voted_turn(db, ann, "Only one vote here.")
    assert all(a.turns == 0 for a in agreement(leaderboard_rows(db)))
    assert assign_review(db, ann2.id).id == turn.id
    record_vote(db, turn.id, ann2.id, idempotency_key=key(), proactiveness="a", accuracy="a",
                usefulness="a", language_quality="a", overall="a")  # fmt: skip
    got = {a.field: (a.turns, a.pairs, a.agreement) for a in agreement(leaderboard_rows(db))}
    assert got == {"proactiveness": (1, 1, 1.0), "accuracy": (1, 1, 0.0),
                   "usefulness": (1, 1, 1.0), "language_quality": (1, 1, 0.0),
                   "overall": (1, 1, 1.0)}  # fmt: skip


# --- the Compare tab's "Second opinion" source (handlers, no model needed) ------------------------


def test_second_opinion_in_the_compare_tab(db, people):
    ann, ann2, alice = people["ann"], people["ann2"], people["alice"]
    at = STREAM_FIELDS.index
    with Comparisons(db, EngineRegistry()) as flow:
        h = CompareHandlers(db, flow)
        (empty,) = list(h.compare_review(ann2))
        assert empty[at("status")] == SERVER["compare.review_none"]["en"]
        (refused,) = list(h.compare_review(alice))
        assert "second opinions" in refused[at("status")] and not LEAKS.search(refused[at("status")])

        turn = voted_turn(db, ann, "Dizzy when standing up.")
        (shown,) = list(h.compare_review(ann2))
        assert shown[at("turn_id")] == turn.id
        assert "Dizzy when standing up." in str(shown[at("context")])
        assert (shown[at("a")], shown[at("b")]) == ("answer a", "answer b")  # stored, not new
        assert shown[at("vote_button")]["interactive"] is True
        assert shown[at("reveal")] == "" and shown[at("status")] == SERVER["compare.review_ready"]["en"]
        k = shown[at("key")]
        note, button, revealed, keep = h.vote(ann2, turn.id, k, "a", "a", "a", "a", "tie", False,
                                              False, None)  # fmt: skip
        assert note == SERVER["compare.saved"]["en"]  # a tie asks nothing: the reviewer keeps nothing
        assert "base" in revealed and "lora" in revealed and keep["visible"] is False
        assert h.vote(ann2, turn.id, k, "a", "a", "a", "a", "tie", False, False, None)[0] == note
        assert len(list_votes(db, turn_id=turn.id)) == 2
        # continuing someone else's comparison stays refused, in plain words
        (cont,) = list(h.continue_comparison(ann2, turn.id, {"text": "more", "files": []}, "a"))
        assert PermissionDenied.user_message in cont[at("continue_note")]
        (done,) = list(h.compare_review(ann2))
        assert done[at("status")] == SERVER["compare.review_none"]["en"]


# --- through gradio_client against the app and the real vLLM server --------------------------------


@pytest.mark.vllm
def test_second_opinion_through_the_api(world):  # noqa: F811 - fixture
    """The app of tests/test_compare_api.py: users ann, ann2, alice, root; the demo case set;
    variants "tiny" and "a1" on the real vLLM server."""
    db = world["db"]
    ann, ann2, alice = (client(world, n) for n in ("ann", "ann2", "alice"))
    assert ann2.predict(api_name="/compare_review") == SERVER["compare.review_none"]["en"]
    last = compare(ann, None, world["case_id"])[-1]
    tid = last["turn_id"]
    mine = ann.predict(tid, VOTE, key(), api_name="/vote")

    got = ann2.predict(api_name="/compare_review")
    assert (got["turn_id"], got["a"], got["b"]) == (tid, last["a"], last["b"])
    assert got["finish_reason"] == {"a": "length", "b": "length"}
    assert got["context"][-1]["role"] == "user" and got["context"][-1]["text"]
    assert not {"names", "variant_a_id", "variant_b_id"} & set(got)  # blind until the vote
    assert ann2.predict(api_name="/compare_review")["turn_id"] == tid  # pending: the same turn
    k = key()
    theirs = ann2.predict(tid, OTHER_VOTE, k, api_name="/vote")
    assert theirs["names"] == mine["names"] and theirs["vote_id"] != mine["vote_id"]
    assert ann2.predict(tid, OTHER_VOTE, k, api_name="/vote") == theirs  # a replay: one row
    ann2_id = get_user_by_name(db, "ann2").id
    assert sorted(v.voter_id == ann2_id for v in list_votes(db, turn_id=tid)) == [False, True]
    assert ann2.predict(api_name="/compare_review") == SERVER["compare.review_none"]["en"]

    for call in (lambda: alice.predict(api_name="/compare_review"),  # a clinician: the role
                 lambda: ann2.predict(tid, "a", api_name="/keep")):  # a reviewer keeps nothing
        with pytest.raises(AppError) as exc:
            call()
        assert not LEAKS.search(str(exc.value))
    with pytest.raises(AppError, match=r"Your role \(clinician\) cannot"):
        alice.predict(api_name="/compare_review")
    assert len(list_votes(db, turn_id=tid)) == 2


