"""Compare storage on real SQLite files (and PostgreSQL where marked): votes kept exactly once,
who may compare, vote and read, the snapshot of what was shown, case files whole or nothing.

Run: OMP_NUM_THREADS=1 python -m pytest tests/test_compare_storage.py -q   (PostgreSQL tests
need the server from app/bench/postgres.py and skip, saying why, where none can be started)
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from app.bench.postgres import PostgresUnavailable, fresh_database, postgres_server
from app.cases import CaseFileError, load_case_file
from storage import (
    CompareSource,
    Conflict,
    Database,
    DatabaseBusy,
    InvalidInput,
    NewAttachment,
    NewCase,
    NewCaseTurn,
    NewImage,
    NotFound,
    PermissionDenied,
    add_compare_turn,
    add_user_message,
    count_cases,
    create_comparison,
    create_consultation,
    create_user,
    ensure_model_variant,
    get_case,
    get_compare_turn,
    get_vote,
    history,
    import_case_set,
    keep_response,
    list_votes,
    record_response,
    record_vote,
    reveal,
    set_user_active,
    turn_context,
    user_can_access_attachment,
)
from storage.models import CaseTurn, Vote
from tests.test_storage import png_bytes

PASSWORD = "correct horse battery"
VOTE = dict(proactiveness="a", accuracy="tie", usefulness="a", language_quality="b", overall="a")
OTHER_VOTE = dict(proactiveness="b", accuracy="b", usefulness="b", language_quality="b",
                  overall="b")  # fmt: skip
#: Concurrent voters in the race tests (the issue's figure).
VOTERS = 50


@pytest.fixture
def people(db: Database):
    return {name: create_user(db, name, PASSWORD, role) for name, role in [
        ("ann", "annotator"), ("ann2", "annotator"), ("alice", "clinician"),
        ("bob", "clinician"), ("root", "admin")]}  # fmt: skip


def variants(db: Database):
    base = ensure_model_variant(db, "base", "http://127.0.0.1:1/v1", "tiny",
                                sampling_defaults={"max_tokens": 8})  # fmt: skip
    lora = ensure_model_variant(db, "lora", "http://127.0.0.1:1/v1", "a1", adapter_path="/a1",
                                parent="base")  # fmt: skip
    return base, lora


def image(color=(200, 30, 30)) -> NewAttachment:
    png = png_bytes(color)
    return NewAttachment(sha256=hashlib.sha256(png).hexdigest(), kind="image", mime="image/png",
                         size_bytes=len(png), deidentified=True, original_name="x.png",
                         images=[NewImage("photo", 8, 6, png)])  # fmt: skip


def answer(db, turn, user, side, finish="stop", text=None):
    return record_response(db, turn.id, user.id, side, text if text is not None else f"answer {side}",
                           sampling_params={"temperature": 0.7}, finish_reason=finish,
                           latency_ms=900, first_token_ms=80, completion_tokens=5)  # fmt: skip


def answered_turn(db, user, finishes=("stop", "stop"), text="Cough for a week."):
    base, lora = variants(db)
    turn = create_comparison(db, user.id, "ad_hoc", variant_a_id=base.id, variant_b_id=lora.id,
                             prompt_text=text)  # fmt: skip
    for side, finish in zip("ab", finishes, strict=False):
        if finish is not None:
            turn = answer(db, turn, user, side, finish)
    return turn


def vote_rows(db) -> int:
    with db.transaction(write=False) as s:
        return s.scalar(select(func.count()).select_from(Vote))


def bilingual(message: str) -> bool:
    """English, then " / ", then Chinese."""
    return " / " in message and any("\u4e00" <= ch <= "\u9fff" for ch in message.split(" / ", 1)[1])


# --- votes ----------------------------------------------------------------------------------


def test_replay_is_one_vote_and_a_second_vote_is_refused(db, people):
    ann = people["ann"]
    turn = answered_turn(db, ann)
    first = record_vote(db, turn.id, ann.id, idempotency_key="click-0001", comment=" tired ", **VOTE)
    again = record_vote(db, turn.id, ann.id, idempotency_key="click-0001", comment="tired", **VOTE)
    assert again == first and vote_rows(db) == 1
    assert (first.overall, first.accuracy, first.comment, first.safety_flag_a) == ("a", "tie", "tired", False)
    assert first.time_to_vote_ms is not None and first.time_to_vote_ms >= 0
    assert get_compare_turn(db, turn.id, user_id=ann.id).state == "voted"
    # a different vote by the same voter on the same turn: refused, the first one stays
    with pytest.raises(Conflict) as exc:
        record_vote(db, turn.id, ann.id, idempotency_key="click-0002", **OTHER_VOTE)
    assert bilingual(exc.value.user_message) and "already voted" in exc.value.user_message
    # the same key with other choices is not a replay either
    with pytest.raises(Conflict) as exc:
        record_vote(db, turn.id, ann.id, idempotency_key="click-0001", **OTHER_VOTE)
    assert bilingual(exc.value.user_message)
    assert vote_rows(db) == 1 and get_vote(db, turn.id, ann.id) == first
    names = {side.value: v.name for side, v in reveal(db, turn.id, ann.id).items()}
    assert names == {"a": "base", "b": "lora"}


@pytest.mark.parametrize("finishes", [("stop", "cut_off"), ("error", "stop"), ("cancelled", "length"),
                                      ("stop", None), (None, None)])  # fmt: skip
def test_vote_refused_unless_both_answers_ended_on_their_own(db, people, finishes):
    ann = people["ann"]
    turn = answered_turn(db, ann, finishes)
    with pytest.raises(InvalidInput) as exc:
        record_vote(db, turn.id, ann.id, idempotency_key="key-00000001", **VOTE)
    assert bilingual(exc.value.user_message) and "complete" in exc.value.user_message
    assert vote_rows(db) == 0
    assert get_compare_turn(db, turn.id, user_id=ann.id).state != "voted"


def test_length_is_a_finished_answer(db, people):
    ann = people["ann"]
    turn = answered_turn(db, ann, ("length", "stop"))
    assert record_vote(db, turn.id, ann.id, idempotency_key="key-00000001", **VOTE).id


MALFORMED = [
    dict(VOTE, proactiveness="A!"), dict(VOTE, accuracy=None), dict(VOTE, usefulness="both_bad"),
    dict(VOTE, language_quality=1), dict(VOTE, overall="maybe"), dict(VOTE, safety_flag_a="yes"),
    dict(VOTE, safety_flag_b=1), dict(VOTE, comment="x" * 5001), dict(VOTE, comment=["x"]),
]


def test_malformed_votes_are_refused_with_a_message(db, people):
    ann = people["ann"]
    turn = answered_turn(db, ann)
    for bad in MALFORMED:
        with pytest.raises(InvalidInput) as exc:
            record_vote(db, turn.id, ann.id, idempotency_key="key-00000001", **bad)
        assert bilingual(exc.value.user_message), bad
    for key in ("", "short", "x" * 65, "has space 123", "../../etc", None, 12345678, "-leading-dash"):
        with pytest.raises(InvalidInput) as exc:
            record_vote(db, turn.id, ann.id, idempotency_key=key, **VOTE)
        assert bilingual(exc.value.user_message), key
    with pytest.raises(NotFound):
        record_vote(db, 10**6, ann.id, idempotency_key="key-00000001", **VOTE)
    assert vote_rows(db) == 0


# --- who may do what --------------------------------------------------------------------------


def test_who_may_compare_vote_and_read(db, people):
    ann, ann2, alice, bob, root = (people[n] for n in ("ann", "ann2", "alice", "bob", "root"))
    base, lora = variants(db)
    ids = dict(variant_a_id=base.id, variant_b_id=lora.id)
    c = create_consultation(db, alice.id, "Fever")
    add_user_message(db, c.id, alice.id, "Fever since Monday.")
    # starting: annotators and admins on typed turns; a clinician only in her own consultation
    for user in (alice, bob):
        with pytest.raises(PermissionDenied):
            create_comparison(db, user.id, "ad_hoc", prompt_text="x", **ids)
    for user in (ann, bob, root):  # root reads alice's consultation but never writes into it
        with pytest.raises(PermissionDenied):
            create_comparison(db, user.id, "consultation", consultation_id=c.id, **ids)
    with pytest.raises(InvalidInput):
        create_comparison(db, ann.id, "ad_hoc", prompt_text="x", variant_a_id=base.id,
                          variant_b_id=base.id)  # fmt: skip
    mine = create_comparison(db, alice.id, "consultation", consultation_id=c.id, **ids)
    assert create_comparison(db, root.id, "ad_hoc", prompt_text="x", **ids).id

    turn = answered_turn(db, ann)
    # someone else's turn: no answers recorded, no vote, nothing revealed
    for user in (ann2, alice, bob, root):
        with pytest.raises(PermissionDenied):
            record_vote(db, turn.id, user.id, idempotency_key=f"key-{user.username}-1", **VOTE)
        with pytest.raises(PermissionDenied):
            keep_response(db, turn.id, user.id, "a")
    with pytest.raises(PermissionDenied):
        answer(db, mine, ann, "a")
    with pytest.raises(PermissionDenied):  # before her vote, not even the creator sees the names
        reveal(db, turn.id, ann.id)
    # reading: creator and admins; not another annotator or a clinician
    for user in (ann2, alice):
        with pytest.raises(PermissionDenied):
            get_compare_turn(db, turn.id, user_id=user.id)
        with pytest.raises(PermissionDenied):
            turn_context(db, turn.id, user_id=user.id)
    assert get_compare_turn(db, turn.id, user_id=root.id).id == turn.id
    assert [m.text for m in turn_context(db, turn.id, user_id=root.id)] == ["Cough for a week."]
    # an annotator reads no consultation, also not one compared in
    with pytest.raises(PermissionDenied):
        history(db, c.id, user_id=ann.id)
    with pytest.raises(PermissionDenied):
        get_compare_turn(db, mine.id, user_id=ann.id)
    # an inactive annotator does nothing
    set_user_active(db, ann.id, False)
    with pytest.raises(PermissionDenied):
        record_vote(db, turn.id, ann.id, idempotency_key="key-ann-0001", **VOTE)
    assert vote_rows(db) == 0


def test_case_snapshot_what_was_shown_and_who_sees_its_files(db, people):
    ann, ann2, alice = people["ann"], people["ann2"], people["alice"]
    base, lora = variants(db)
    scan, xray = image((10, 200, 10)), image((10, 10, 200))
    case_set = import_case_set(db, "demo", "pulsemind_jsonl", "0" * 64, [NewCase([
        NewCaseTurn("Rash on the arm.", "Since when?", [scan]),
        NewCaseTurn("Two days.", "Any fever?"),
        NewCaseTurn("Now it spreads.", None, [xray]),
    ], source_id="c1", cate1="皮肤科")])  # fmt: skip
    case = get_case(db, 1, user_id=ann.id)
    assert (case.case_set_id, case.cate1, len(case.turns)) == (case_set.id, "皮肤科", 3)
    with pytest.raises(PermissionDenied):  # clinicians do not browse imported cases
        get_case(db, case.id, user_id=alice.id)
    turn = create_comparison(db, ann.id, CompareSource.CASE, case_id=case.id, variant_a_id=base.id,
                             variant_b_id=lora.id, language="zh-CN")  # fmt: skip
    assert turn.reference_answer is None and turn.prompt_text == "Now it spreads."
    shown = turn_context(db, turn.id, user_id=ann.id, with_png=True)
    assert [(m.role, m.text) for m in shown] == [
        ("user", "Rash on the arm."), ("assistant", "Since when?"), ("user", "Two days."),
        ("assistant", "Any fever?"), ("user", "Now it spreads.")]  # fmt: skip
    assert shown[0].attachments[0].images[0].png == scan.images[0].png
    assert [a.sha256 for a in turn.attachments] == [xray.sha256]
    scan_id, xray_id = shown[0].attachments[0].id, shown[4].attachments[0].id
    for attachment_id in (scan_id, xray_id):  # what her comparison shows, and nothing to others
        assert user_can_access_attachment(db, ann.id, attachment_id)
        assert not user_can_access_attachment(db, ann2.id, attachment_id)
        assert not user_can_access_attachment(db, alice.id, attachment_id)
    # the same question in another comparison has the same content hash
    again = create_comparison(db, ann2.id, "case", case_id=case.id, variant_a_id=lora.id,
                              variant_b_id=base.id, language="zh-CN")  # fmt: skip
    assert again.context_sha256 == turn.context_sha256 and again.id != turn.id
    # an earlier turn as the question: later turns are not shown
    early = create_comparison(db, ann2.id, "case", case_id=case.id, case_turn=2,
                              variant_a_id=lora.id, variant_b_id=base.id)  # fmt: skip
    assert early.reference_answer == "Any fever?"
    assert len(turn_context(db, early.id, user_id=ann2.id)) == 3
    with pytest.raises(InvalidInput):
        create_comparison(db, ann.id, "case", case_id=case.id, case_turn=4, variant_a_id=base.id,
                          variant_b_id=lora.id)  # fmt: skip
    # what was shown changed afterwards: the snapshot no longer resolves
    with db.transaction() as s:
        s.execute(update(CaseTurn).where(CaseTurn.position == 2).values(patient_text="Edited."))
    with pytest.raises(Conflict):
        turn_context(db, turn.id, user_id=ann.id)


def test_continuing_keeps_the_preferred_answer_as_history(db, people):
    ann = people["ann"]
    turn = answered_turn(db, ann)
    base_id, lora_id = turn.variant_a_id, turn.variant_b_id
    with pytest.raises(InvalidInput):  # not before the vote
        keep_response(db, turn.id, ann.id, "b")
    record_vote(db, turn.id, ann.id, idempotency_key="key-00000001", **VOTE)
    with pytest.raises(InvalidInput):  # nothing kept yet
        add_compare_turn(db, turn.id, ann.id, variant_a_id=lora_id, variant_b_id=base_id,
                         prompt_text="More?")  # fmt: skip
    kept = keep_response(db, turn.id, ann.id, "b")
    assert kept.kept_side == "b" and keep_response(db, turn.id, ann.id, "b") == kept
    with pytest.raises(Conflict):
        keep_response(db, turn.id, ann.id, "a")
    second = add_compare_turn(db, turn.id, ann.id, variant_a_id=lora_id, variant_b_id=base_id,
                              prompt_text="It got worse at night.", prompt_attachments=[image()])  # fmt: skip
    assert second.position == 2 and second.comparison_id == turn.comparison_id
    shown = turn_context(db, second.id, user_id=ann.id)
    assert [(m.role, m.text) for m in shown] == [
        ("user", "Cough for a week."), ("assistant", "answer b"), ("user", "It got worse at night.")]
    assert len(shown[2].attachments) == 1
    with pytest.raises(Conflict):  # the comparison went on from turn 1 already
        add_compare_turn(db, turn.id, ann.id, variant_a_id=lora_id, variant_b_id=base_id,
                         prompt_text="Again?")  # fmt: skip


def test_clinician_pick_becomes_the_consultations_answer(db, people):
    alice = people["alice"]
    base, lora = variants(db)
    c = create_consultation(db, alice.id, "Headache")
    question = add_user_message(db, c.id, alice.id, "Headache for two days.", [image()])
    turn = create_comparison(db, alice.id, "consultation", consultation_id=c.id,
                             variant_a_id=lora.id, variant_b_id=base.id)  # fmt: skip
    assert turn.prompt_message_id == question.id and len(turn.attachments) == 1
    answer(db, turn, alice, "a", text="Any nausea?")
    answer(db, turn, alice, "b", text="Drink water.")
    record_vote(db, turn.id, alice.id, idempotency_key="alice-vote-1", **VOTE)
    kept = keep_response(db, turn.id, alice.id, "a")
    msgs = history(db, c.id, user_id=alice.id)
    assert [(m.role, m.text) for m in msgs] == [("user", "Headache for two days."),
                                                ("assistant", "Any nausea?")]  # fmt: skip
    assert (msgs[1].id, msgs[1].model_variant_id, msgs[1].finish_reason) == (
        kept.kept_message_id, lora.id, "stop")  # fmt: skip
    # the next question goes into the consultation; the next turn's snapshot is its history
    add_user_message(db, c.id, alice.id, "No nausea.")
    second = add_compare_turn(db, turn.id, alice.id, variant_a_id=base.id, variant_b_id=lora.id)
    assert [m.text for m in turn_context(db, second.id, user_id=alice.id)] == [
        "Headache for two days.", "Any nausea?", "No nausea."]
    # a turn whose consultation moved on cannot put its answer there any more
    answer(db, second, alice, "a")
    answer(db, second, alice, "b")
    record_vote(db, second.id, alice.id, idempotency_key="alice-vote-2", **VOTE)
    add_user_message(db, c.id, alice.id, "Also dizzy.")
    with pytest.raises(Conflict):
        keep_response(db, second.id, alice.id, "a")


# --- exactly once under concurrency -----------------------------------------------------------


def _race(db: Database, voters: list, turns: list) -> dict:
    """Per voter, at once: the same vote 3 times (one key: double clicks, retries) and a
    different vote (another key). Returns what each call got."""
    calls = []
    for voter, turn in zip(voters, turns, strict=True):
        for n in range(3):
            calls.append((voter, turn, f"same-{voter.id}-key", VOTE, n))
        calls.append((voter, turn, f"other-{voter.id}-key", OTHER_VOTE, 3))
    results: dict = {}
    start = threading.Barrier(len(calls))

    def cast(voter, turn, key, choice, n):
        start.wait()
        try:
            results[(voter.id, n)] = record_vote(db, turn.id, voter.id, idempotency_key=key, **choice)
        except BaseException as exc:  # judged by the test
            results[(voter.id, n)] = exc

    threads = [threading.Thread(target=cast, args=c) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _check_race(db: Database, voters: list, results: dict) -> Counter:
    outcomes: Counter = Counter()
    stored = {v.voter_id: v for v in list_votes(db)}
    assert len(list_votes(db)) == len(voters) == len(stored)  # none lost, none twice
    for voter in voters:
        got = [results[(voter.id, n)] for n in range(4)]
        errors = [g for g in got if isinstance(g, BaseException)]
        assert not [e for e in errors if not isinstance(e, Conflict)], errors  # no DatabaseBusy
        assert not any(isinstance(e, DatabaseBusy) for e in errors)
        winner = stored[voter.id]
        votes = [g for g in got if not isinstance(g, BaseException)]
        assert votes and all(v == winner for v in votes)  # every success is the stored vote
        if winner.idempotency_key.startswith("same"):
            assert len(votes) == 3 and isinstance(got[3], Conflict)
            outcomes["replayed vote won"] += 1
        else:
            assert votes == [got[3]] and all(isinstance(g, Conflict) for g in got[:3])
            outcomes["other vote won"] += 1
    return outcomes


def _voters(db: Database) -> tuple[list, list]:
    base, lora = variants(db)
    voters, turns = [], []
    for n in range(VOTERS):
        voter = create_user(db, f"voter{n}", PASSWORD, "annotator")
        turn = create_comparison(db, voter.id, "ad_hoc", variant_a_id=base.id, variant_b_id=lora.id,
                                 prompt_text=f"Question {n}")  # fmt: skip
        answer(db, turn, voter, "a")
        answer(db, turn, voter, "b")
        voters.append(voter)
        turns.append(turn)
    return voters, turns


def test_concurrent_voters_sqlite(db):
    voters, turns = _voters(db)
    outcomes = _check_race(db, voters, _race(db, voters, turns))
    print(f"\nSQLite: {VOTERS} voters x 4 concurrent calls: {len(list_votes(db))} votes stored, "
          f"{dict(outcomes)}, 0 lost, 0 duplicated, 0 busy")


@pytest.fixture(scope="module")
def pg_server():
    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL server here: {exc}")


@pytest.mark.postgres
def test_concurrent_voters_postgres(pg_server):
    db = Database(fresh_database(pg_server, "compare_votes"))
    db.upgrade()
    try:
        voters, turns = _voters(db)
        outcomes = _check_race(db, voters, _race(db, voters, turns))
        # the same key raced on two turns at once: one vote, the other call refused
        ann = voters[0]
        extra = [create_comparison(db, ann.id, "ad_hoc", variant_a_id=turns[0].variant_a_id,
                                   variant_b_id=turns[0].variant_b_id, prompt_text=f"Extra {n}")
                 for n in range(2)]  # fmt: skip
        for t in extra:
            answer(db, t, ann, "a")
            answer(db, t, ann, "b")
        got = _race_one_key(db, ann, extra)
        assert sorted(type(g).__name__ for g in got) == ["Conflict", "VoteRecord"]
    finally:
        db.dispose()
    print(f"\nPostgreSQL: {VOTERS} voters x 4 concurrent calls: {VOTERS} votes stored, "
          f"{dict(outcomes)}, 0 lost, 0 duplicated")


def _race_one_key(db, voter, turns) -> list:
    got: list = []
    start = threading.Barrier(len(turns))

    def cast(turn):
        start.wait()
        try:
            got.append(record_vote(db, turn.id, voter.id, idempotency_key="one-key-two-turns", **VOTE))
        except Conflict as exc:
            got.append(exc)

    threads = [threading.Thread(target=cast, args=(t,)) for t in turns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


# --- case files -------------------------------------------------------------------------------

CMTMEDQA = [
    {"id": 101, "cate1": "内科", "cate2": "消化内科", "instruction": "吃完饭后胃胀，还反酸，怎么办？",
     "output": "建议少食多餐，避免辛辣油腻食物；如持续不缓解，请到消化内科就诊。",
     "history": [["医生您好，我最近胃不舒服。", "请问持续多久了？有没有恶心呕吐？"],
                 ["大概两周了，没有呕吐。", "饭后会加重吗？"]]},
    {"id": 102, "cate1": "外科", "cate2": "骨科", "instruction": "膝盖扭伤后肿了怎么办？",
     "output": "先冰敷、抬高患肢并制动，48小时后可热敷；若无法负重请拍片检查。", "history": []},
]  # fmt: skip


def test_cmtmedqa_file_loads_in_chinese(db, tmp_path):
    path = tmp_path / "cmtmedqa-test.json"
    path.write_text(json.dumps(CMTMEDQA, ensure_ascii=False), encoding="utf-8")
    record = load_case_file(db, path)
    assert (record.name, record.format, record.case_count) == ("cmtmedqa-test", "cmtmedqa", 2)
    assert record.file_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    first = get_case(db, 1)
    assert (first.source_id, first.cate1, first.cate2) == ("101", "内科", "消化内科")
    assert [(t.patient_text, t.reference_answer) for t in first.turns] == [
        ("医生您好，我最近胃不舒服。", "请问持续多久了？有没有恶心呕吐？"),
        ("大概两周了，没有呕吐。", "饭后会加重吗？"),
        ("吃完饭后胃胀，还反酸，怎么办？", CMTMEDQA[0]["output"])]  # fmt: skip
    assert len(get_case(db, 2).turns) == 1
    with pytest.raises(Conflict) as exc:  # the same name twice
        load_case_file(db, path)
    assert bilingual(exc.value.user_message) and count_cases(db) == (1, 2)


@pytest.mark.parametrize("broken, record, problem", [
    ({"output": "x", "history": []}, 2, "instruction"),
    ({"instruction": "头痛", "output": "", "history": []}, 2, "output"),
    ({"instruction": "头痛", "output": "休息", "history": [["只有患者"]]}, 2, "history"),
    ("not a record", 2, "object"),
])  # fmt: skip
def test_broken_cmtmedqa_names_the_record_and_stores_nothing(db, tmp_path, broken, record, problem):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps([CMTMEDQA[0], broken, CMTMEDQA[1]], ensure_ascii=False), "utf-8")
    with pytest.raises(CaseFileError) as exc:
        load_case_file(db, path)
    message = exc.value.user_message
    assert f"Record {record}:" in message and f"第 {record} 条记录" in message, message
    assert "Nothing was stored" in message and "未保存任何内容" in message
    assert problem in message.lower() or problem == "object"
    assert count_cases(db) == (0, 0)
    path.write_text('[{"instruction": "头痛", "output": "休息"},', "utf-8")  # cut off
    with pytest.raises(CaseFileError) as exc:
        load_case_file(db, path)
    assert "not valid JSON" in exc.value.user_message and count_cases(db) == (0, 0)


def _jsonl(path: Path, records: list) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", "utf-8")
    return path


def test_jsonl_case_file_with_images(db, people, tmp_path):
    from tests.apphelpers import png_file

    (tmp_path / "imgs").mkdir()
    png_file(tmp_path / "imgs" / "rash.png", 1, size=(96, 64))
    png_file(tmp_path / "imgs" / "later.png", 2, size=(96, 64))
    good = [
        {"id": "c1", "cate1": "皮肤科", "turns": [
            {"patient": "Rash on the arm.", "images": ["imgs/rash.png"], "doctor": "Since when?"},
            {"patient": "Two days.", "images": ["imgs/later.png"]}]},
        {"id": "c2", "turns": [{"patient": "Cough.", "doctor": "Any fever?"}]},
    ]  # fmt: skip
    record = load_case_file(db, _jsonl(tmp_path / "demo.jsonl", good), name="demo set")
    assert (record.name, record.format, record.case_count) == ("demo set", "pulsemind_jsonl", 2)
    case = get_case(db, 1, with_png=True)
    stored = case.turns[0].attachments[0]
    assert stored.kind == "image" and stored.deidentified and stored.images[0].png
    assert case.turns[1].reference_answer is None
    assert get_case(db, 2).turns[0].reference_answer == "Any fever?"

    for bad_turns, problem in [
        ([{"patient": "x", "images": ["imgs/missing.png"]}], "cannot be read"),
        ([{"patient": "x", "images": ["../demo.jsonl"]}], "inside the file's folder"),
        ([{"patient": "x", "images": ["/etc/hostname"]}], "inside the file's folder"),
        ([{"patient": "x"}, {"patient": "y"}], "only the last turn"),
        ([{"patient": "x", "doctr": "typo"}], "turn 1 must be an object"),
    ]:  # fmt: skip
        path = _jsonl(tmp_path / "bad.jsonl", [good[1], {"id": "c3", "turns": bad_turns}])
        with pytest.raises(CaseFileError) as exc:
            load_case_file(db, path, name="bad")
        assert "Line 2:" in exc.value.user_message and "第 2 行" in exc.value.user_message
        assert problem in exc.value.user_message, exc.value.user_message
    (tmp_path / "garbled.jsonl").write_text('{"turns": [}\n', "utf-8")
    with pytest.raises(CaseFileError) as exc:
        load_case_file(db, tmp_path / "garbled.jsonl")
    assert "Line 1:" in exc.value.user_message
    assert count_cases(db) == (1, 2)  # only the good set


def test_cases_load_command(tmp_path):
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    good, bad = tmp_path / "cmt.json", tmp_path / "bad.json"
    good.write_text(json.dumps(CMTMEDQA, ensure_ascii=False), "utf-8")
    bad.write_text(json.dumps([CMTMEDQA[0], {"instruction": "头痛"}], ensure_ascii=False), "utf-8")

    def pulsemind(*args):
        return subprocess.run([sys.executable, "-m", "app.cli", *args, "--database-url", url],
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    refused = pulsemind("cases", "load", str(bad))
    assert refused.returncode != 0 and "Record 2:" in refused.stderr and "第 2 条记录" in refused.stderr
    loaded = pulsemind("cases", "load", str(good), "--name", "CMtMedQA-test")
    assert loaded.returncode == 0, loaded.stderr
    assert "'CMtMedQA-test'" in loaded.stdout and "2 cases, 4 turns, 0 files" in loaded.stdout
    db = Database(url)
    assert count_cases(db) == (1, 2)
    db.dispose()
