"""`/compare`, `/vote`, `/keep` through gradio_client against the launched app and the real vLLM
server with two variants ("tiny" and its adapter "a1"): both answers stream, the vote reveals,
a replay is the same vote; the role rules of the tabs; attackers get plain refusals and no rows.

Run: OMP_NUM_THREADS=1 python -m pytest tests/test_compare_api.py -q   (starts vLLM: ~1 min)
"""

from __future__ import annotations

import itertools
import uuid
from contextlib import closing

import httpx
import pytest
from apphelpers import PASSWORD, demo_case_file, login, make_users, png_file, running_app
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from test_attacks import LEAKS

from app.cases import load_case_file
from app.compare import AdHoc, Comparisons
from app.config import AppConfig
from model.engines import EngineRegistry
from storage import (
    Database,
    create_user,
    ensure_model_variant,
    get_user_by_name,
    history,
    list_votes,
)

pytestmark = pytest.mark.vllm

SAMPLING = {"max_tokens": 24, "min_tokens": 24, "temperature": 0.8, "seed": 7}
VOTE = dict(proactiveness="a", accuracy="a", usefulness="tie", language_quality="b", overall="a")


@pytest.fixture(scope="module")
def world(vllm_server, adapter_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare-api")
    db = Database.sqlite(tmp / "db" / "pulsemind.db")
    db.upgrade()
    make_users(db)
    create_user(db, "ann2", PASSWORD, "annotator")
    cases = demo_case_file(tmp)
    load_case_file(db, cases, name="demo")
    config = AppConfig(model_url=vllm_server.base_url, model="tiny", variant_name="tiny",
                       data_dir=str(tmp / "db"), port=0)  # fmt: skip
    with running_app(config, db) as url:
        # after the app registered "tiny": answers of a known length on both variants
        ensure_model_variant(db, "tiny", vllm_server.base_url, "tiny", sampling_defaults=SAMPLING)
        ensure_model_variant(db, "a1", vllm_server.base_url, "a1", adapter_path=str(adapter_dir),
                             parent="tiny", sampling_defaults=SAMPLING)  # fmt: skip
        yield {"url": url, "db": db, "tmp": tmp, "case_id": 1}


def count_comparisons(db: Database) -> int:
    from storage.models import Comparison

    with db.transaction(write=False) as s:
        return s.query(Comparison).count()


def client(world, who: str) -> Client:
    return Client(world["url"], auth=(who, PASSWORD), verbose=False)


def compare(c: Client, *args) -> list[dict]:
    """Every update of one /compare call (message, case_id, turn_id, consultation_id, keep)."""
    args = list(args) + [None] * (5 - len(args))
    job = c.submit(*args, api_name="/compare")
    job.result()
    return job.outputs()


def key() -> str:
    return str(uuid.uuid4())


def test_annotator_compares_a_case_votes_and_gets_the_reveal(world):
    db, ann = world["db"], client(world, "ann")
    updates = compare(ann, None, world["case_id"])
    last = updates[-1]
    tid = last["turn_id"]
    assert all(u["turn_id"] == tid for u in updates)
    assert len({u["a"] for u in updates}) >= 3 and len({u["b"] for u in updates}) >= 3, updates
    assert last["finish_reason"] == {"a": "length", "b": "length"}
    assert last["error"] == {"a": None, "b": None} and last["a"] and last["b"]

    k = key()
    first = ann.predict(tid, VOTE, k, api_name="/vote")
    assert set(first["names"].values()) == {"tiny", "a1"} and first["turn_id"] == tid
    assert ann.predict(tid, VOTE, k, api_name="/vote") == first  # a replay: the same answer
    assert len(list_votes(db, turn_id=tid)) == 1

    # continue with a message and the caller's own upload
    scan = png_file(world["tmp"] / "later.png", 6, size=(120, 90))
    nxt = compare(ann, {"text": "现在蔓延到了背部。", "files": [handle_file(str(scan))]}, None, tid)
    assert nxt[-1]["turn_id"] != tid and nxt[-1]["finish_reason"] == {"a": "length", "b": "length"}


def test_double_submit_with_one_key_stores_one_vote(world):
    db, ann = world["db"], client(world, "ann")
    tid = compare(ann, {"text": "Headache for a week.", "files": []})[-1]["turn_id"]
    k = key()
    jobs = [ann.submit(tid, VOTE, k, api_name="/vote") for _ in range(2)]
    results = [j.result() for j in jobs]
    assert results[0] == results[1]
    assert len(list_votes(db, turn_id=tid)) == 1
    with pytest.raises(AppError) as exc:  # another key, another vote: refused
        ann.predict(tid, dict(VOTE, overall="b"), key(), api_name="/vote")
    assert not LEAKS.search(str(exc.value))
    assert len(list_votes(db, turn_id=tid)) == 1


def test_a_stopped_answer_cannot_be_voted_on(world):
    """Stopped as the Stop button stops it (the reader leaves after the first text)."""
    db, ann = world["db"], client(world, "ann")
    with Comparisons(db, EngineRegistry()) as flow:
        pair = flow.start(get_user_by_name(db, "ann"), AdHoc("Blurred vision."))
        with closing(iter(pair)) as updates:
            next(updates)
    tid = pair.turn.id
    assert "cancelled" in {r.finish_reason for r in pair.turn.responses}
    with pytest.raises(AppError) as exc:
        ann.predict(tid, VOTE, key(), api_name="/vote")
    assert "complete" in str(exc.value) and not LEAKS.search(str(exc.value))
    assert list_votes(db, turn_id=tid) == []


def test_an_annotator_cannot_vote_on_another_annotators_turn(world):
    db = world["db"]
    tid = compare(client(world, "ann"), {"text": "Cough.", "files": []})[-1]["turn_id"]
    ann2 = client(world, "ann2")
    with pytest.raises(AppError) as exc:
        ann2.predict(tid, VOTE, key(), api_name="/vote")
    assert not LEAKS.search(str(exc.value))
    with pytest.raises(AppError):
        ann2.predict(tid, "a", api_name="/keep")
    with pytest.raises(AppError):
        compare(ann2, {"text": "more", "files": []}, None, tid)
    assert list_votes(db, turn_id=tid) == []


def test_clinician_compare_mode_in_her_own_consultation(world):
    db, alice = world["db"], client(world, "alice")
    cid = alice.predict({"text": "Chest pain.", "files": []}, None, "tiny",
                        api_name="/consult")["consultation_id"]  # fmt: skip
    last = compare(
        alice, {"text": "It is worse when climbing stairs.", "files": []}, None, None, cid
    )[-1]
    assert last["finish_reason"] == {"a": "length", "b": "length"}
    revealed = alice.predict(last["turn_id"], dict(VOTE, overall="b"), key(), api_name="/vote")
    assert revealed["kept_side"] == "b"
    msgs = history(db, cid)
    assert msgs[-2].text == "It is worse when climbing stairs." and msgs[-1].text == last["b"]
    # an annotator never compares in a consultation; another clinician not in hers
    for who in ("ann", "bob"):
        with pytest.raises(AppError) as exc:
            compare(client(world, who), None, None, None, cid)
        assert not LEAKS.search(str(exc.value))
    assert len(history(db, cid)) == len(msgs)


BAD_IDS = ["abc", -1, 0, 10**30, [], {}, 1.5, True]
BAD_VOTES = [None, "a", [], {"overall": "a"}, dict(VOTE, overall="z"), dict(VOTE, hack=1),
             dict(VOTE, accuracy=[1]), dict(VOTE, safety_flag_a="yes"), dict(VOTE, comment={})]  # fmt: skip


def test_attackers_get_plain_refusals_and_leave_no_rows(world):
    url, db = world["url"], world["db"]
    alice = client(world, "alice")
    alice_cid = alice.predict({"text": "Fever.", "files": []}, None, "tiny",
                              api_name="/consult")["consultation_id"]  # fmt: skip
    ann_tid = compare(client(world, "ann"), {"text": "Back pain.", "files": []})[-1]["turn_id"]
    votes_before = len(list_votes(db))
    comparisons_before = count_comparisons(db)
    callers = {who: client(world, who) for who in ("bob", "ann2", "root")}
    calls = []
    for bad in [ann_tid, *BAD_IDS]:  # someone else's turn, then malformed ids
        calls += [("/vote", (bad, VOTE, key())), ("/keep", (bad, "a")),
                  ("/compare", ({"text": "x", "files": []}, None, bad))]  # fmt: skip
    for bad in BAD_IDS:
        calls += [("/compare", (None, bad)), ("/compare", (None, None, None, bad))]
    calls += [("/vote", (ann_tid, v, key())) for v in BAD_VOTES]
    calls += [("/vote", (ann_tid, VOTE, bad)) for bad in ("", "x", [], "a" * 200)]
    calls += [("/keep", (ann_tid, bad)) for bad in ("c", [], None)]
    calls += [("/compare", (None, None, None, alice_cid)),  # someone else's consultation
              ("/compare", ("text", None)), ("/compare", ({"text": [], "files": []},)),
              ("/compare", ({"text": "x", "files": "f"},)), ("/compare", ()),
              ("/compare", ({"text": "x", "files": []}, 1, None, None, "a"))]  # fmt: skip
    tried = unsent = 0
    for (who, c), (api, args) in itertools.product(callers.items(), calls):
        args = tuple(args) + (None,) * ((5 if api == "/compare" else 0) - len(args))
        try:
            c.predict(*args, api_name=api)
        except AppError as exc:
            assert not LEAKS.search(str(exc)), (who, api, args, str(exc))
        except ValueError:
            unsent += 1  # gradio_client refuses to send it (not JSON): nothing reached us
        else:
            raise AssertionError(f"{who} {api} {args} was not refused")
        tried += 1
    assert len(list_votes(db)) == votes_before

    # anonymous: every endpoint refused before any handler runs
    anon = httpx.Client(base_url=url, timeout=30)
    for api, data in [("compare", [None, 1, None, None, None]), ("vote", [ann_tid, VOTE, key()]),
                      ("keep", [ann_tid, "a"])]:  # fmt: skip
        r = anon.post(f"/gradio_api/call/{api}", json={"data": data})
        assert r.status_code in (401, 403), (api, r.status_code, r.text)
        assert not LEAKS.search(r.text)

    # a server path in a file payload: 403 from the request guard, for every role
    secret = world["tmp"] / "secret.txt"
    secret.write_text("TOP-SECRET")
    for who in ("alice", "ann", "ann2", "root"):
        http = login(url, who)
        for api, data in [("compare", [{"text": "x", "files": [{"path": str(secret)}]}, None, None,
                                       None, None]),
                          ("compare", [{"text": "x", "files": [{"path": str(secret)}]}, None,
                                       ann_tid, None, None]),
                          ("vote", [ann_tid, {"path": str(secret)}, key()])]:  # fmt: skip
            r = http.post(f"/gradio_api/call/{api}", json={"data": data})
            assert r.status_code == 403, (who, api, r.status_code, r.text)
            assert not LEAKS.search(r.text)
    assert len(list_votes(db)) == votes_before
    assert count_comparisons(db) == comparisons_before
    assert unsent < tried // 10, unsent
    print(f"\ncompare API attacks: {tried} calls refused with plain messages ({unsent} not sent)")
