"""The closed loop, end to end on the real vLLM CPU server: votes in SQL -> an SFT run started from
the Retrain tab (gradio_client, as an admin) -> the adapter registered as a variant and loaded
into vLLM -> it answers a Compare turn -> a vote on it is recorded. A run whose process is
killed midway is marked interrupted, resumes from its checkpoint and finishes.

Run: OMP_NUM_THREADS=1 python -m pytest tests/test_retrain.py -q   (vLLM + two short runs)
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from apphelpers import PASSWORD, make_users, running_app
from gradio_client import Client

from app.compare import AdHoc, Comparisons
from app.config import AppConfig
from app.i18n import SERVER
from app.retrain import Retrain
from model.engines import EngineRegistry
from storage import (
    Database,
    create_comparison,
    ensure_model_variant,
    get_user_by_name,
    get_variant_by_name,
    list_votes,
    record_response,
    record_vote,
    set_variant_active,
)
from storage.runs import get_run, metrics_of
from training.export import ExportConfig, export_dataset

#: Values a component rejects before the handler (app.edge.plain_input_errors).
BAD_VALUE = SERVER["edge.bad_value"]["en"]

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

SAMPLING = {"max_tokens": 12, "temperature": 0.0, "seed": 0}
VOTE = dict(proactiveness="a", accuracy="a", usefulness="tie", language_quality="b", overall="a")
#: Steps of the run killed midway: long enough that the kill comes before its end.
STEPS = 40
#: A run on the tiny model takes a few seconds per step on 2 cores, plus ~15 s to start.
RUN_TIMEOUT_S = 420


def _voted_turns(db: Database, n: int) -> None:
    """`n` voted comparison turns between "tiny" and "other" (the SFT rows: the winners)."""
    ann = get_user_by_name(db, "ann")
    tiny, other = get_variant_by_name(db, "tiny"), get_variant_by_name(db, "other")
    for i in range(n):
        turn = create_comparison(db, ann.id, "ad_hoc", variant_a_id=tiny.id, variant_b_id=other.id,
                                 prompt_text=f"头痛三天了，第{i}次问。")  # fmt: skip
        record_response(db, turn.id, ann.id, "a", f"请问是否伴有发热？({i})", sampling_params={},
                        finish_reason="stop")  # fmt: skip
        record_response(db, turn.id, ann.id, "b", "多喝水。", sampling_params={},
                        finish_reason="stop")  # fmt: skip
        record_vote(db, turn.id, ann.id, idempotency_key=f"retrain-vote-{i:04d}", **VOTE)


def _wait(client: Client, run_id: int, until: set[str]) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        status = client.predict(run_id, api_name="/retrain_run")
        if status["status"] in until:
            return status
        time.sleep(1.0)
    raise AssertionError(f"run {run_id} still {status}")


@pytest.fixture(scope="module")
def world(vllm_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retrain")
    db = Database.sqlite(tmp / "data" / "pulsemind.db")
    db.upgrade()
    make_users(db)
    config = AppConfig(model_url=vllm_server.base_url, model="tiny", variant_name="tiny",
                       data_dir=str(tmp / "data"), port=0)  # fmt: skip
    with running_app(config, db) as url:
        ensure_model_variant(db, "tiny", vllm_server.base_url, "tiny", sampling_defaults=SAMPLING)
        ensure_model_variant(db, "other", vllm_server.base_url, "tiny", sampling_defaults=SAMPLING)
        _voted_turns(db, 3)
        yield {"url": url, "db": db, "data": tmp / "data", "server": vllm_server}
    db.dispose()


def test_votes_to_sft_run_to_a_new_variant_in_compare(world):
    db, root = world["db"], Client(world["url"], auth=("root", PASSWORD), verbose=False)
    # the form: since the last run (none yet: everything), base "tiny", 3 steps
    msg, _, picked = root.predict("sft", "tiny", "", 3, "", "", 4, 2, api_name="/retrain_start")
    run_id = int(picked)
    assert f"{run_id}" in msg
    status = _wait(root, run_id, {"succeeded", "failed"})
    assert status["status"] == "succeeded", (status, _log(world, run_id))
    assert status["step"] == 3 and status["metrics"]["loss"] is not None
    new = get_variant_by_name(db, status["variant"])
    assert new.name == f"tiny-sft-{run_id}" and new.parent_id == get_variant_by_name(db, "tiny").id
    served = httpx.get(f"{world['server'].base_url}/models", timeout=10).json()["data"]
    assert new.served_model_name in {m["id"] for m in served}  # loaded into the running vLLM
    run = get_run(db, run_id)
    assert run.variant_id == new.id and Path(run.output_dir, "adapter_config.json").is_file()

    # nothing new since that run: the next "since last run" run fails, clearly, registers nothing
    before = {v.name for v in _variants(db)}
    _, _, again = root.predict("sft", "tiny", "", 3, "", "", 4, 2, api_name="/retrain_start")
    failed = _wait(root, int(again), {"succeeded", "failed"})
    assert failed["status"] == "failed" and "nothing new to train on" in failed["error"]
    assert {v.name for v in _variants(db)} == before

    # drawn into Compare: the new adapter against its parent, a vote recorded
    set_variant_active(db, "other", False)
    ann = get_user_by_name(db, "ann")
    with Comparisons(db, EngineRegistry()) as flow:
        pair = flow.start(ann, AdHoc("还是头痛，怎么办？"))
        with closing(iter(pair)) as updates:
            for _ in updates:
                pass
        turn = pair.turn
        assert {turn.variant_a_id, turn.variant_b_id} == {new.id, new.parent_id}
        assert all(r.finish_reason in ("stop", "length") and r.text for r in turn.responses)
        flow.vote(ann, turn.id, VOTE, "retrain-new-variant-1")
    assert [v.turn_id for v in list_votes(db, turn_id=turn.id)] == [turn.id]
    set_variant_active(db, "other", True)



def _log(world, run_id: int) -> str:
    """The end of a run's log (what its process printed), for a failing assertion."""
    log = world["data"] / "runs" / str(run_id) / "train.log"
    return log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"


def get_run_count(db) -> int:
    from storage.runs import list_runs

    return len(list_runs(db))


def _variants(db):
    from storage import list_variants

    return list_variants(db)


def test_killed_run_is_interrupted_resumes_and_finishes(world):
    db, root = world["db"], Client(world["url"], auth=("root", PASSWORD), verbose=False)
    export = world["data"] / "exports" / "manual" / "sft-all"
    assert export_dataset(db, ExportConfig(kind="sft", out=export)) >= 3
    _, _, picked = root.predict("sft", "tiny", "manual/sft-all", STEPS, "", "", 4, 2,
                                api_name="/retrain_start")  # fmt: skip
    run_id = int(picked)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while get_run(db, run_id).last_checkpoint is None:  # the first checkpoint: a quarter in
        assert get_run(db, run_id).status.value == "running", get_run(db, run_id)
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(get_run(db, run_id).pid, signal.SIGKILL)  # the run's whole process group
    time.sleep(1.0)
    retrain = Retrain(db, str(db.url), world["data"])
    assert [r.id for r in retrain.recover()] == [run_id]  # what the app does when it starts
    assert get_run(db, run_id).status.value == "interrupted"
    resumed_at = max(p.step for p in metrics_of(db, run_id)["loss"])
    msg, _ = root.predict(run_id, api_name="/retrain_resume")
    assert str(run_id) in msg
    done = _wait(root, run_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded" and done["step"] == STEPS, (done, _log(world, run_id))
    steps = [p.step for p in metrics_of(db, run_id)["loss"]]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS and resumed_at < STEPS


@pytest.mark.parametrize("who", ["alice", "ann"])
def test_only_admins_train(world, who):
    c = Client(world["url"], auth=(who, PASSWORD), verbose=False)
    with pytest.raises(Exception) as refused:
        c.predict("sft", "tiny", "", 3, "", "", 4, 2, api_name="/retrain_start")
    assert "Traceback" not in str(refused.value)


def test_bad_requests_are_refused_in_words(world):
    root = Client(world["url"], auth=("root", PASSWORD), verbose=False)
    queued = get_run_count(world["db"])
    for args in [("sft", "tiny", "../../etc", 3), ("sft", "tiny", "/etc", 3),
                 ("sft", "nope", "", 3), ("sft", "tiny", "", 0), ("sft", "tiny", "", 10**9),
                 ("crpo", "tiny", "", 3)]:  # fmt: skip
        msg, *_ = root.predict(*args, "", "", 4, 2, api_name="/retrain_start")
        assert msg.startswith("⚠️") and "Traceback" not in msg and "Error" not in msg, (args, msg)
    with pytest.raises(Exception) as refused:  # not a choice of the form: refused in words
        root.predict("dpo", "tiny", "", 3, "", "", 4, 2, api_name="/retrain_start")
    assert str(refused.value).startswith(BAD_VALUE), str(refused.value)  # not Gradio's "<class"
    assert get_run_count(world["db"]) == queued  # nothing queued by any of them


def test_crpo_run_from_the_tab_with_the_server_as_judge(world):
    """CRPO through the same loop: the policy "tiny", the logged answers of "other" as its
    counterparts (a crpo export made by the run), the vLLM server itself as the judge; the run
    records reward per dimension and registers its adapter as a variant."""
    db, root = world["db"], Client(world["url"], auth=("root", PASSWORD), verbose=False)
    export = world["data"] / "exports" / "manual" / "crpo-all"
    assert export_dataset(db, ExportConfig(kind="crpo", out=export, policy="tiny")) >= 1
    url = world["server"].base_url
    _, _, picked = root.predict("crpo", "tiny", "manual/crpo-all", 2, url, "tiny", 2, 1,
                                api_name="/retrain_start")  # fmt: skip
    run_id = int(picked)
    done = _wait(root, run_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded", (done, _log(world, run_id))
    curves = metrics_of(db, run_id)
    assert {"reward", "crpo/accuracy"} <= set(curves), sorted(curves)
    assert all(0 <= p.value <= 1 for p in curves["reward"] if p.value is not None)
    assert get_variant_by_name(db, done["variant"]).parent_id == get_variant_by_name(db, "tiny").id


@pytest.mark.parametrize("who", ["alice", "ann", "bob"])
def test_every_retrain_and_benchmark_endpoint_refuses_other_roles(world, who):
    """Clinicians and annotators get a sentence for each admin endpoint, never stack text."""
    c = Client(world["url"], auth=(who, PASSWORD), verbose=False)
    for api, args in [("/retrain_runs", ()), ("/retrain_run", (1,)), ("/retrain_resume", (1,)),
                      ("/eval_runs", ()), ("/eval_report", (1,))]:  # fmt: skip
        with pytest.raises(Exception) as refused:
            c.predict(*args, api_name=api)
        text = str(refused.value)
        assert "cannot" in text and "Traceback" not in text and "File \"" not in text, (api, text)


def test_malformed_run_ids_get_plain_messages(world):
    root = Client(world["url"], auth=("root", PASSWORD), verbose=False)
    for value in ("abc", -1, 10**30, "../../etc/passwd", None):
        with pytest.raises(Exception) as refused:
            root.predict(value, api_name="/retrain_run")
        text = str(refused.value)
        assert "Traceback" not in text and "Error:" not in text[:20], (value, text)
        try:  # the page's number box: what is not a number is refused before the handler
            msg, _ = root.predict(value, api_name="/retrain_resume")
        except Exception as exc:  # noqa: BLE001 - its words are checked below
            assert str(exc).startswith(BAD_VALUE), (value, str(exc))
            msg = f"⚠️ {exc}"
        assert msg.startswith("⚠️") and "Traceback" not in msg and "File \"" not in msg, (value, msg)
