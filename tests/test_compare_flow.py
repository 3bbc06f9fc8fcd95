"""The compare workflow against the real vLLM CPU server: two variants ("tiny", the base model,
and "a1", its LoRA adapter) answer at once, blind; vote, reveal, continue; the clinician compare
mode; `pulsemind variant add` loading an adapter into the running server.

Run: OMP_NUM_THREADS=1 python -m pytest tests/test_compare_flow.py -q   (starts vLLM: ~1 min)
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from contextlib import closing

import httpx
import pytest

import storage
from app.cases import load_case_file
from app.compare import (
    AdHoc,
    CompareConfig,
    Comparisons,
    FromCase,
    FromConsultation,
    FromLog,
    draw_pair,
)
from app.consult_tab import ConsultHandlers
from app.workflow import Consultations
from model.engines import EngineRegistry
from model.serve import free_port
from storage import (
    Database,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Uploads,
    create_user,
    ensure_model_variant,
    get_compare_turn,
    get_variant_by_name,
    history,
    list_votes,
    logged_questions,
    record_vote,
    turn_context,
)
from storage.access import may_read_compared_attachment
from tests.apphelpers import demo_case_file, png_file

PASSWORD = "correct horse battery"
#: Answers of a known length (the end token is held back): long enough that both sides stream
#: over several updates even on a busy machine (at 24 tokens one side once ended in one update).
ANSWER_TOKENS = 96
SAMPLING = {"max_tokens": ANSWER_TOKENS, "min_tokens": ANSWER_TOKENS, "temperature": 0.8, "seed": 7}
VOTE = dict(proactiveness="a", accuracy="a", usefulness="tie", language_quality="b", overall="a")


@pytest.fixture(scope="module")
def world(vllm_server, adapter_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    db = Database.sqlite(tmp / "pulsemind.db")
    db.upgrade()
    users = {name: create_user(db, name, PASSWORD, role) for name, role in
             [("ann", "annotator"), ("alice", "clinician"), ("root", "admin")]}  # fmt: skip
    ensure_model_variant(db, "tiny", vllm_server.base_url, "tiny", sampling_defaults=SAMPLING)
    ensure_model_variant(db, "a1", vllm_server.base_url, "a1", adapter_path=str(adapter_dir),
                         parent="tiny", sampling_defaults=SAMPLING)  # fmt: skip
    cases = demo_case_file(tmp)
    case_set = load_case_file(db, cases, name="demo")
    uploads = Uploads()
    flow = Comparisons(db, EngineRegistry(), uploads, config=CompareConfig(seed=3))
    consult = Consultations(db, flow.engines, uploads)
    yield {"db": db, "flow": flow, "consult": consult, "case_set": case_set, "tmp": tmp,
           "uploads": uploads, **users}  # fmt: skip
    flow.close()
    consult.close()
    db.dispose()


def stream_both(pair) -> list[tuple[str, str]]:
    with closing(iter(pair)) as updates:
        return list(updates)


def assert_streamed_at_once(updates: list[tuple[str, str]]) -> None:
    """Both sides grew over several updates, and each changed while the other was unfinished."""
    a_texts = [a for a, _ in updates]
    b_texts = [b for _, b in updates]
    assert len(set(a_texts)) >= 3 and len(set(b_texts)) >= 3, updates
    first_b = next(i for i, (_, b) in enumerate(updates) if b)
    first_a = next(i for i, (a, _) in enumerate(updates) if a)
    assert first_b < a_texts.index(a_texts[-1]) and first_a < b_texts.index(b_texts[-1]), updates


@pytest.mark.vllm
def test_case_compare_streams_both_votes_reveals_and_continues(world):
    db, flow, ann = world["db"], world["flow"], world["ann"]
    pair = flow.start(ann, FromCase(1), language="zh-CN")
    updates = stream_both(pair)
    assert_streamed_at_once(updates)
    turn = pair.turn
    assert turn.state == "answered" and [r.side for r in turn.responses] == ["a", "b"]
    for r, final in zip(turn.responses, updates[-1], strict=True):
        assert r.text == final and r.finish_reason == "length" and r.completion_tokens == ANSWER_TOKENS
        assert r.first_token_ms is not None and r.latency_ms >= r.first_token_ms
        assert r.sampling_params["max_tokens"] == ANSWER_TOKENS
    assert {turn.variant_a_id, turn.variant_b_id} == {get_variant_by_name(db, n).id for n in ("tiny", "a1")}
    shown = turn_context(db, turn.id, user_id=ann.id)
    assert [m.text for m in shown] == ["手臂上起了红疹，很痒。", "多久了？", "三天了。"]
    assert len(shown[0].attachments) == 1  # the case's image went to both models

    revealed = flow.vote(ann, turn.id, VOTE, "vote-case-0001")
    assert set(revealed.names.values()) == {"tiny", "a1"}
    assert revealed.names["a"] == ("tiny" if turn.variant_a_id == get_variant_by_name(db, "tiny").id else "a1")
    assert flow.vote(ann, turn.id, VOTE, "vote-case-0001").vote == revealed.vote  # double click
    assert len(list_votes(db, turn_id=turn.id)) == 1

    upload = png_file(world["tmp"] / "later.png", 6, size=(120, 90))
    world["uploads"].add("ann", [str(upload)])
    nxt = flow.continue_(ann, turn.id, "现在蔓延到了背部。", [("later.png", str(upload))])
    stream_both(nxt)
    second = nxt.turn
    assert second.position == 2 and second.state == "answered" and len(second.attachments) == 1
    kept_text = turn.response("a").text  # overall "a" won
    assert [m.text for m in turn_context(db, second.id, user_id=ann.id)] == [
        "手臂上起了红疹，很痒。", "多久了？", "三天了。", kept_text, "现在蔓延到了背部。"]
    assert {second.variant_a_id, second.variant_b_id} == {turn.variant_a_id, turn.variant_b_id}
    assert flow.vote(ann, second.id, dict(VOTE, overall="both_bad"), "vote-case-0002").vote.overall == "both_bad"
    with pytest.raises(InvalidInput):  # a tie continues only with a chosen answer
        flow.continue_(ann, second.id, "再问一句。")


@pytest.mark.vllm
def test_clinician_compare_mode_continues_her_consultation(world):
    db, flow, alice = world["db"], world["flow"], world["alice"]
    cid, question = world["consult"].add_turn(alice, None, "Chest pain since yesterday.")
    pair = flow.start(alice, FromConsultation(cid))
    assert_streamed_at_once(stream_both(pair))
    revealed = flow.vote(alice, pair.turn.id, dict(VOTE, overall="b"), "alice-vote-0001")
    turn = revealed.turn
    assert turn.kept_side == "b" and turn.kept_message_id is not None
    msgs = history(db, cid, user_id=alice.id)
    assert [(m.role, m.id) for m in msgs] == [("user", question.id), ("assistant", turn.kept_message_id)]
    assert msgs[1].text == turn.response("b").text
    assert msgs[1].model_variant_id == turn.variant_b_id
    assert get_variant_by_name(db, revealed.names["b"]).id == turn.variant_b_id

    nxt = flow.continue_(alice, turn.id, "It gets worse when I climb stairs.")
    stream_both(nxt)
    assert [m.text for m in history(db, cid, user_id=alice.id)][-1] == "It gets worse when I climb stairs."
    assert nxt.turn.prompt_message_id == history(db, cid, user_id=alice.id)[-1].id
    with pytest.raises(PermissionDenied):  # an annotator cannot compare in her consultation
        flow.start(world["ann"], FromConsultation(cid))


@pytest.mark.vllm
def test_consult_tab_compare_switch_pick_continues_with_dimensions_optional(world):
    """The Consult tab's compare mode (its handlers, as the page calls them): both answers
    stream into the panel, the pick buttons unlock at the end, a pick with no dimensions rated
    is one vote (twice clicked), the chat continues with the pick and names both models."""
    db, alice = world["db"], world["alice"]
    h = ConsultHandlers(db, world["consult"], world["flow"])
    assert h.compare_available(alice)["visible"] is True
    cid, _ = world["consult"].add_turn(alice, None, "Fever and a rash on both arms.")
    updates = list(h.compare(alice, cid))
    first, last = updates[0], updates[-1]
    assert first[4]["interactive"] is False and first[6]["visible"] is True
    assert len({u[0] for u in updates}) >= 3 and len({u[1] for u in updates}) >= 3  # both grew
    answer_a, answer_b, tid, key, pick_a, pick_b, _, note = last
    assert pick_a["interactive"] is True and pick_b["interactive"] is True and note == ""
    turn = get_compare_turn(db, tid, user_id=alice.id)
    assert (answer_a, answer_b) == (turn.response("a").text, turn.response("b").text)

    for _ in range(2):  # a double click: one vote
        chat, panel, *_, status = h.pick(alice, cid, tid, key, "b", None, None, "a", None)
    [vote] = list_votes(db, turn_id=tid)
    assert (vote.overall, vote.usefulness, vote.accuracy) == ("b", "a", None)
    assert panel["visible"] is False and chat[-1]["content"] == answer_b
    names = {v: get_variant_by_name(db, v).id for v in ("tiny", "a1")}
    shown_b = next(n for n, i in names.items() if i == turn.variant_b_id)
    assert shown_b in status and "B" in status
    with pytest.raises(InvalidInput):  # annotators rate every dimension
        ann_pair = world["flow"].start(world["ann"], AdHoc("Dizzy when standing up."))
        stream_both(ann_pair)
        record_vote(db, ann_pair.turn.id, world["ann"].id, idempotency_key="ann-unrated-1",
                    **dict(VOTE, accuracy=None))  # fmt: skip
    with pytest.raises(PermissionDenied):  # someone else's consultation
        list(h.compare(world["root"], cid))


@pytest.mark.vllm
def test_annotator_compares_on_a_logged_consultation_without_changing_it(world):
    """An annotator picks a clinician's question from the log (never her name), compares on
    the consultation up to it, votes and continues; the consultation is unchanged; the
    history's image is readable for the annotator through the comparison only."""
    db, flow, ann, alice = world["db"], world["flow"], world["ann"], world["alice"]
    consult = world["consult"]
    upload = png_file(world["tmp"] / "rash.png", 4, size=(96, 96))
    world["uploads"].add("alice", [str(upload)])
    cid, first = consult.add_turn(alice, None, "Rash on the forearm.", [("rash.png", str(upload))])
    consult_pair = flow.start(alice, FromConsultation(cid))
    stream_both(consult_pair)
    flow.vote(alice, consult_pair.turn.id, dict(VOTE, overall="a"), "alice-log-0001")
    _, second = consult.add_turn(alice, cid, "It itches at night.")
    before = [(m.id, m.text) for m in history(db, cid, user_id=alice.id)]
    image_id = history(db, cid, user_id=alice.id)[0].attachments[0].id

    listed = [q for q in logged_questions(db, ann.id) if q.consultation_id == cid]
    assert [(q.message_id, q.turn, q.files) for q in listed] == [(second.id, 2, 0), (first.id, 1, 1)]
    assert "alice" not in repr(listed)
    with pytest.raises(PermissionDenied):
        logged_questions(db, alice.id)  # clinicians do not browse the log
    with pytest.raises(PermissionDenied):  # nor compare on someone's log
        flow.start(alice, FromLog(cid, second.id))

    with db.transaction(write=False) as session:
        assert not may_read_compared_attachment(session, ann.id, image_id)
    pair = flow.start(ann, FromLog(cid, second.id))
    stream_both(pair)
    shown = turn_context(db, pair.turn.id, user_id=ann.id)
    assert [m.text for m in shown][0::2] == ["Rash on the forearm.", "It itches at night."]
    assert len(shown[0].attachments) == 1
    with db.transaction(write=False) as session:
        assert may_read_compared_attachment(session, ann.id, image_id)
    flow.vote(ann, pair.turn.id, VOTE, "ann-log-0001")
    stream_both(flow.continue_(ann, pair.turn.id, "Any fever?"))
    assert [(m.id, m.text) for m in history(db, cid, user_id=alice.id)] == before

    with pytest.raises(NotFound):  # a message not on the consultation
        flow.start(ann, FromLog(cid, 10**6))
    storage.delete_consultation(db, cid, alice.id)
    with pytest.raises(NotFound):  # deleted by its owner: out of the log
        flow.start(ann, FromLog(cid, second.id))
    assert all(q.consultation_id != cid for q in logged_questions(db, ann.id))


@pytest.mark.vllm
def test_stopped_answers_are_recorded_and_cannot_be_judged(world):
    db, flow, ann = world["db"], world["flow"], world["ann"]
    pair = flow.start(ann, AdHoc("Headache and blurred vision."))
    with closing(iter(pair)) as updates:
        next(updates)  # the reader leaves after the first text: both answers stop
    turn = get_compare_turn(db, pair.turn.id, user_id=ann.id)
    assert turn.state == "answered" and len(turn.responses) == 2
    assert "cancelled" in {r.finish_reason for r in turn.responses}
    with pytest.raises(InvalidInput):
        record_vote(db, turn.id, ann.id, idempotency_key="vote-stopped-1", **VOTE)


def pulsemind(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.vllm
def test_variant_add_loads_the_adapter_into_the_running_server(vllm_server, adapter_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'variants.db'}"
    endpoint = vllm_server.base_url
    db_args = ("--database-url", url)
    assert pulsemind("variant", "add", "tiny", "--endpoint", endpoint, "--model", "tiny", *db_args).returncode == 0
    added = pulsemind("variant", "add", "a1-rt", "--endpoint", endpoint, "--model", "a1-rt",
                      "--adapter", str(adapter_dir), "--parent", "tiny", "--temperature", "0.5",
                      "--max-tokens", "16", *db_args)  # fmt: skip
    assert added.returncode == 0, added.stderr
    served = {m["id"]: m.get("root") for m in httpx.get(f"{vllm_server.url}/v1/models").json()["data"]}
    assert served["a1-rt"] == str(adapter_dir.resolve())
    db = Database(url)
    v = get_variant_by_name(db, "a1-rt")
    assert (v.adapter_path, v.sampling_defaults, v.active) == (
        str(adapter_dir.resolve()), {"temperature": 0.5, "max_tokens": 16}, True)  # fmt: skip
    assert v.parent_id == get_variant_by_name(db, "tiny").id

    # refused: the name is taken, the server cannot load it, the server is down
    again = pulsemind("variant", "add", "a1-rt", "--endpoint", endpoint, "--model", "a1-rt2",
                      "--adapter", str(adapter_dir), *db_args)  # fmt: skip
    assert again.returncode != 0 and "exists" in again.stderr
    missing = pulsemind("variant", "add", "a1-bad", "--endpoint", endpoint, "--model", "a1-bad",
                        "--adapter", str(tmp_path / "no-adapter"), *db_args)  # fmt: skip
    assert missing.returncode != 0 and "refused to load adapter 'a1-bad'" in missing.stderr, missing.stderr
    down = pulsemind("variant", "add", "a1-down", "--endpoint", f"http://127.0.0.1:{free_port()}/v1",
                     "--model", "a1-down", "--adapter", str(adapter_dir), *db_args)  # fmt: skip
    assert down.returncode != 0 and "cannot be reached" in down.stderr and "无法连接" in down.stderr
    served = {m["id"] for m in httpx.get(f"{vllm_server.url}/v1/models").json()["data"]}
    assert "a1-bad" not in served and "a1-down" not in served
    assert get_variant_by_name(db, "a1-bad") is None and get_variant_by_name(db, "a1-down") is None

    assert pulsemind("variant", "deactivate", "a1-rt", *db_args).returncode == 0
    assert not get_variant_by_name(db, "a1-rt").active
    assert pulsemind("variant", "activate", "a1-rt", *db_args).returncode == 0  # served already: fine
    listed = pulsemind("variant", "list", *db_args)
    assert listed.returncode == 0 and "a1-rt\tactive" in listed.stdout and "parent=tiny" in listed.stdout
    db.dispose()


# --- drawing pairs (no server) ----------------------------------------------------------------


def test_draw_prefers_an_adapter_against_its_parent(db):
    base = ensure_model_variant(db, "base", "http://127.0.0.1:1/v1", "base")
    ensure_model_variant(db, "lora", "http://127.0.0.1:1/v1", "lora", parent="base")
    ensure_model_variant(db, "other", "http://127.0.0.1:1/v1", "other")
    from storage import list_active_variants

    variants = list_active_variants(db)
    rng = random.Random(0)
    draws = [draw_pair(variants, CompareConfig(), rng) for _ in range(3000)]
    pairs = Counter(frozenset((a.name, b.name)) for a, b in draws)
    assert all(a.id != b.id for a, b in draws)
    # weights 4 (adapter vs parent), 1, 1: two thirds of the draws
    assert 0.62 < pairs[frozenset(("base", "lora"))] / len(draws) < 0.71, pairs
    assert 0.45 < sum(a.id == base.id for a, _ in draws) / sum(base.id in (a.id, b.id) for a, b in draws) < 0.55
    never = [draw_pair(variants, CompareConfig(weights={"other": 0}), rng) for _ in range(200)]
    assert all("other" not in (a.name, b.name) for a, b in never)
    with pytest.raises(InvalidInput) as exc:
        draw_pair(variants[:1], CompareConfig(), rng)
    assert " / " in exc.value.user_message
