"""The PulseMind Benchmark: case files in each format run against the real vLLM CPU server (model,
opponent and judge, structured output), an interrupted run resumed, judge-clinician agreement,
and bad input refused with nothing stored.

Run: OMP_NUM_THREADS=1 python -m pytest tests/test_eval.py -q   (~2 min with the server start)

- Real server: counts add up per dimension and category, every interval holds its point
  estimate, both orders are judged and stored, every answer is stored; a run killed with
  SIGKILL and resumed gives the totals of an uninterrupted run without judging a case twice;
  `pulsemind eval agreement` scores answers 1-5 with structured output.
- Scripted server (tests/test_judge.py's `ScriptedServer`, a fake named as such, for a judge
  that answers garbage): such a case is a judge error, never a loss, and --resume judges it.
- A stub judge with known verdicts and scores gives known agreement numbers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cases import CaseFileError, read_case_file
from app.cli import main
from storage import (
    Database,
    PermissionDenied,
    create_comparison,
    create_user,
    ensure_model_variant,
    record_response,
    record_vote,
)
from storage.cases import count_cases
from storage.errors import Conflict, NotFound
from storage.evals import (
    FIELDS,
    VotedTurn,
    count_eval_runs,
    eval_cases,
    eval_responses,
    eval_verdicts,
    get_eval_run,
    resume_eval_run,
    voted_turns,
)
from storage.votes import DIMENSIONS
from training.eval import (
    EvalConfig,
    EvalRunner,
    RunSpec,
    case_outcomes,
    eval_report,
    select_positions,
    start_run,
)
from training.eval_agreement import Scores, measure_agreement
from training.eval_stats import ALL, CaseOutcome, summarize
from training.judge import Verdict

REPO = Path(__file__).resolve().parents[1]
SAMPLING = {"temperature": 0.0, "max_tokens": 8, "seed": 0}

# --- case files written by the tests (Chinese text included) ----------------------------------


def cmtmedqa_file(folder: Path, n: int = 4) -> Path:
    cates = ["内科", "外科", "儿科"]
    records = [{"id": 100 + i, "cate1": cates[i % len(cates)], "cate2": "其他",
                "instruction": f"第{i}个问题：还需要做什么检查？",
                "output": "建议做血常规。", "history": [[f"我咳嗽{i + 1}天了。", "有发热吗？"]]}
               for i in range(n)]  # fmt: skip
    path = folder / "cmtmedqa.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def jsonl_file(folder: Path) -> Path:
    (folder / "imgs").mkdir(exist_ok=True)
    noise_png(folder / "imgs" / "rash.png", 1)
    lines = [
        {"id": "c1", "cate1": "皮肤科", "turns": [
            {"patient": "手臂起疹子两天。", "images": ["imgs/rash.png"], "doctor": "痒吗？"},
            {"patient": "很痒。", "doctor": "可以外用炉甘石洗剂。"}]},
        {"id": "c2", "cate1": "Cardiology", "turns": [
            {"patient": "Chest pain since this morning.", "doctor": "Does it spread to the arm?"},
            {"patient": "Yes, to the left arm."}]},
        {"id": "c3", "cate1": "皮肤科", "turns": [{"patient": "脸上长痘。", "doctor": "多久了？"}]},
    ]  # fmt: skip
    path = folder / "cases.jsonl"
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines), encoding="utf-8")
    return path


def noise_png(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def meddiagnose_records() -> list[dict]:
    return [
        {"id": "md-1", "cate1": "放射科", "dialogue": [
            {"role": "patient", "text": "这是我的胸片。", "images": ["md-1/1.png"]},
            {"role": "patient", "text": "最近一直咳嗽。"},
            {"role": "doctor", "text": "咳嗽多久了？"},
            {"role": "patient", "text": "两周。", "images": ["md-1/2.png"]},
            {"role": "doctor", "text": "建议做胸部 CT。"}]},
        {"id": "md-2", "cate1": "皮肤科", "dialogue": [
            {"role": "patient", "text": "", "images": ["md-2/1.png"]},
            {"role": "doctor", "text": "皮疹多久了？"}]},
    ]  # fmt: skip


def meddiagnose_file(folder: Path, records: list[dict] | None = None) -> Path:
    for name, seed in (("md-1/1.png", 2), ("md-1/2.png", 3), ("md-2/1.png", 4)):
        noise_png(folder / "images" / name, seed)
    path = folder / "meddiagnose.json"
    path.write_text(json.dumps(records or meddiagnose_records(), ensure_ascii=False), encoding="utf-8")
    return path


def variants(db: Database, url: str) -> None:
    ensure_model_variant(db, "tiny", url, "tiny", sampling_defaults=SAMPLING)
    ensure_model_variant(db, "a1", url, "a1", parent="tiny", sampling_defaults=SAMPLING)


# --- pure parts ---------------------------------------------------------------------------------


def test_both_orders_must_agree_for_a_win():
    first = Verdict(dict(zip(DIMENSIONS, ("a", "a", "b", "tie"), strict=True)))  # model shown as A
    # judged with the model as B: "b" is the model
    second = Verdict(dict(zip(DIMENSIONS, ("b", "tie", "a", "a"), strict=True)))
    out = case_outcomes(first, second)
    assert out == {"proactiveness": "win", "accuracy": "tie", "usefulness": "loss",
                   "language_quality": "tie", "overall": "tie"}  # fmt: skip
    # overall: the majority in each order (above: win, then loss: a tie); here win and win
    second = Verdict(dict(zip(DIMENSIONS, ("b", "b", "tie", "tie"), strict=True)))
    assert case_outcomes(first, second)["overall"] == "win"


def test_counts_add_up_and_intervals_hold_the_point_estimate():
    rng = np.random.default_rng(3)
    cases = [CaseOutcome(i, ["A", "B", None][i % 3],
                         {f: str(rng.choice(["win", "tie", "loss"])) for f in FIELDS})
             for i in range(1, 61)]  # fmt: skip
    cases += [CaseOutcome(61, "A", None, "judge: unusable verdict"),
              CaseOutcome(62, "B", None, "model answer, turn 1: down")]
    groups = summarize(cases, bootstrap=300)
    assert groups[0].group == ALL and {g.group for g in groups[1:]} == {"A", "B", "(none)"}
    everything = groups[0]
    assert (everything.cases, everything.judged, everything.judge_errors,
            everything.model_errors) == (62, 60, 1, 1)  # fmt: skip
    assert sum(g.cases for g in groups[1:]) == 62
    for g in groups:
        for r in g.fields.values():
            assert sum(r.counts.values()) == r.n == g.judged
            for o, rate in r.rates.items():
                assert rate.value == pytest.approx(r.counts[o] / r.n)
                assert rate.lower <= rate.value <= rate.upper
    for f in FIELDS:  # categories add up to all
        for o in ("win", "tie", "loss"):
            assert sum(g.fields[f].counts[o] for g in groups[1:]) == everything.fields[f].counts[o]


def test_sample_is_reproducible():
    assert select_positions(10, limit=3) == [1, 2, 3]
    drawn = select_positions(100, sample=10, seed=7)
    assert drawn == select_positions(100, sample=10, seed=7) == sorted(drawn) and len(set(drawn)) == 10
    assert drawn != select_positions(100, sample=10, seed=8)
    assert select_positions(4, sample=10) == [1, 2, 3, 4]


# --- case files: the MedDiagnose reader and bad input -------------------------------------------


def test_meddiagnose_reader(tmp_path):
    fmt, cases, sha = read_case_file(meddiagnose_file(tmp_path))
    assert fmt.value == "meddiagnose" and len(cases) == 2
    first = cases[0]
    assert [len(t.attachments) for t in first.turns] == [1, 1]
    assert first.turns[0].patient_text == "这是我的胸片。\n\n最近一直咳嗽。"  # one side's run is a turn
    assert first.turns[1].reference_answer == "建议做胸部 CT。"
    assert cases[1].turns[0].patient_text == "" and cases[1].turns[0].attachments
    # other images, another data set: the fingerprint covers the images
    noise_png(tmp_path / "images" / "md-2" / "1.png", 99)
    assert read_case_file(tmp_path / "meddiagnose.json")[2] != sha
    # an images folder elsewhere
    other = tmp_path / "elsewhere"
    (tmp_path / "images").rename(other)
    assert len(read_case_file(tmp_path / "meddiagnose.json", images=other)[1]) == 2


BAD_FILES = {
    "broken_jsonl": ("cases.jsonl", '{"turns": [{"patient": "头痛。", "doctor": "多久了？"}]}\n'
                     '{"turns": [{"patient": "发热", \n', ["Line 2", "第 2 行", "JSON"]),
    "empty_turns": ("cases.jsonl", '{"id": "x", "turns": []}\n', ["Line 1", "第 1 行", "turns"]),
    "empty_dialogue": ("md.json", json.dumps([meddiagnose_records()[1], {"id": "e", "dialogue": []}]),
                       ["Record 2", "第 2 条记录", "dialogue"]),
    "missing_image": ("md.json", json.dumps([{"id": "m", "dialogue": [
        {"role": "patient", "text": "看图。", "images": ["md-9/gone.png"]}]}]),
        ["Record 1", "md-9/gone.png", "cannot be read", "无法读取"]),
    "doctor_first": ("md.json", json.dumps([{"dialogue": [{"role": "doctor", "text": "你好"}]}]),
                     ["Record 1", "start with the patient", "患者"]),
    "broken_cmtmedqa": ("c.json", json.dumps([{"instruction": "头痛", "output": "休息",
                                               "history": [["咳嗽", 3]]}], ensure_ascii=False),
                        ["Record 1", "history", "pair 1"]),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_case_files_name_the_record_and_store_nothing(db, tmp_path, capsys, name):
    file_name, content, expected = BAD_FILES[name]
    noise_png(tmp_path / "images" / "md-2" / "1.png", 4)
    path = tmp_path / file_name
    path.write_text(content, encoding="utf-8")
    variants(db, "http://127.0.0.1:9/v1")
    code = main(["eval", "run", "--cases", str(path), "--model", "tiny", "--opponent", "a1",
                 "--judge", "http://127.0.0.1:9/v1", "--judge-model", "judge",
                 "--database-url", str(db.engine.url), "--out", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    for words in expected:
        assert words in err, err
    assert "Nothing was stored" in err and "Traceback" not in err
    assert count_eval_runs(db) == 0 and count_cases(db) == (0, 0)


def test_refusals_before_anything_is_stored(db, tmp_path, capsys):
    variants(db, "http://127.0.0.1:9/v1")
    path = jsonl_file(tmp_path)  # case c2's last turn has no doctor's answer
    base = ["eval", "run", "--cases", str(path), "--judge", "http://127.0.0.1:9/v1",
            "--judge-model", "judge", "--database-url", str(db.engine.url)]  # fmt: skip
    assert main([*base, "--model", "nobody", "--opponent", "a1"]) == 1
    assert "no model variant named 'nobody'" in capsys.readouterr().err
    assert main([*base, "--model", "tiny", "--opponent", "reference"]) == 1
    err = capsys.readouterr().err
    assert "Case 2: turn 2 has no reference" in err and "第 2 个病例" in err
    assert main([*base, "--model", "tiny", "--opponent", "tiny"]) == 1
    assert "same variant" in capsys.readouterr().err
    with pytest.raises(CaseFileError) as caught:
        read_case_file(path, format="csv")
    assert "unknown format 'csv'" in caught.value.user_message
    with pytest.raises(SystemExit):  # the command line offers the known formats only
        main([*base, "--model", "tiny", "--opponent", "a1", "--format", "csv"])
    with pytest.raises(SystemExit, match="--resume takes them from the run"):
        main(["eval", "run", "--resume", "1", "--model", "tiny"])
    assert count_eval_runs(db) == 0 and count_cases(db) == (0, 0)


def test_a_run_whose_process_lives_is_not_resumed_and_only_admins_read(db, tmp_path):
    variants(db, "http://127.0.0.1:9/v1")
    admin = create_user(db, "root", "correct horse battery", "admin")
    doc = create_user(db, "doc", "correct horse battery", "clinician")
    case_file = read_case_file(cmtmedqa_file(tmp_path))
    spec = RunSpec("tiny", "reference", "http://127.0.0.1:9/v1", "judge", limit=2)
    run = start_run(db, spec, case_file, pid=os.getpid())
    assert [c.position for c in eval_cases(db, run.id)] == [1, 2]
    with pytest.raises(Conflict, match="is running"):
        resume_eval_run(db, run.id, os.getpid() + 1)
    with pytest.raises(PermissionDenied):
        eval_report(db, run.id, user_id=doc.id)
    markdown, png, rows = eval_report(db, run.id, user_id=admin.id, plot_path=tmp_path / "r.png")
    assert "Status: running" in markdown and png.is_file()
    # a second run on the same file reuses its case set
    again = start_run(db, RunSpec("tiny", "a1", "http://127.0.0.1:9/v1", "judge"), case_file)
    assert again.case_set_id == run.case_set_id and count_cases(db) == (1, 4)


# --- a judge that answers garbage (scripted server: a fake, for a fault vLLM cannot produce) ------


def test_judge_errors_are_counted_apart_and_retried_on_resume(db, tmp_path):
    from tests.test_judge import GOOD, ScriptedServer, ok

    state = {"judge_ok": False, "judge_calls": 0}

    def respond(n, body):
        if "structured_outputs" in body:  # the judge
            state["judge_calls"] += 1
            return ok(GOOD) if state["judge_ok"] else ok("I cannot decide.")
        return ok(f"{body['model']}：多休息，多喝水。")  # an answer, one per variant

    with ScriptedServer(respond) as server:
        variants(db, server.base_url)
        run = start_run(db, RunSpec("tiny", "a1", server.base_url, "judge"),
                        read_case_file(cmtmedqa_file(tmp_path, n=3)))  # fmt: skip
        result = EvalRunner(db, run.id, EvalConfig(concurrency=3, progress=False,
                                                   bootstrap=50)).run()  # fmt: skip
        assert result.failed == 3 and result.judged_now == 0
        stored = get_eval_run(db, run.id)
        assert stored.status.value == "failed" and "--resume" in stored.error
        assert stored.totals[ALL]["judge_errors"] == 3 and stored.totals[ALL]["overall"] == {
            "win": 0, "tie": 0, "loss": 0}  # never folded into losses
        markdown, _, _ = eval_report(db, run.id, plot_path=tmp_path / "x.png")
        assert "judge errors 3" in markdown
        requests_before = len(server.requests)
        state["judge_ok"] = True
        resume_eval_run(db, run.id, os.getpid())
        again = EvalRunner(db, run.id, EvalConfig(progress=False, bootstrap=50)).run()
    assert again.judged_now == 3 and again.answered_now == 0 and again.answer_requests == 0
    assert len(server.requests) - requests_before == 6  # 3 cases x 2 orders, no answer asked again
    assert get_eval_run(db, run.id).status.value == "succeeded"
    # GOOD with both orders: the model won proactiveness and language quality as A, lost them as
    # B: no dimension is agreed on, so every dimension is a tie
    assert get_eval_run(db, run.id).totals[ALL]["overall"] == {"win": 0, "tie": 3, "loss": 0}
    assert len(eval_verdicts(db, run.id)) == 6


# --- the real vLLM CPU server ---------------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.parametrize("kind, opponent", [("jsonl", "a1"), ("cmtmedqa", "reference"),
                                            ("meddiagnose", "a1")])  # fmt: skip
def test_each_format_against_the_real_server(vllm_server, db, tmp_path, kind, opponent):
    path = {"jsonl": jsonl_file, "cmtmedqa": cmtmedqa_file, "meddiagnose": meddiagnose_file}[kind](tmp_path)
    url = vllm_server.base_url
    variants(db, url)
    case_file = read_case_file(path)
    run = start_run(db, RunSpec("tiny", opponent, url, "tiny", language="zh-CN"), case_file)
    result = EvalRunner(db, run.id, EvalConfig(concurrency=4, progress=False, bootstrap=200)).run()
    cases = case_file[1]
    turns = sum(len(c.turns) for c in cases)
    assert result.failed == 0 and result.judged_now == result.cases == len(cases)
    assert result.answer_requests == turns * (1 if opponent == "reference" else 2)
    # every answer stored: both sides, every turn (the reference's too)
    responses = eval_responses(db, run.id)
    assert len(responses) == 2 * turns and all(r.error is None for _, r in responses)
    # both orders judged and stored, once each
    verdicts = eval_verdicts(db, run.id)
    assert len(verdicts) == 2 * len(cases)
    sides: dict[int, set[str]] = {}
    for v in verdicts:
        sides.setdefault(v.eval_case_id, set()).add(v.model_side.value)
    assert list(sides.values()) == [{"a", "b"}] * len(cases)
    assert all(v.winners is not None and v.calls + v.cached >= 1 for v in verdicts)
    markdown, png, rows = eval_report(db, run.id, plot_path=tmp_path / "plot.png", bootstrap=200)
    groups = {(r["group"], r["field"]): r for r in rows}
    categories = {c.cate1 for c in cases}
    assert {g for g, _ in groups} == {ALL, *categories}  # a row per category
    for r in groups.values():
        assert r["win"] + r["tie"] + r["loss"] == r["n"]
        for o in ("win", "tie", "loss"):
            assert r[f"{o}_lower"] <= r[f"{o}_rate"] <= r[f"{o}_upper"]
    for field in FIELDS:
        assert groups[(ALL, field)]["n"] == len(cases) == sum(
            groups[(c, field)]["n"] for c in categories)
    assert all(c in markdown for c in categories) and "| overall |" in markdown
    with Image.open(png) as image:
        assert image.width > 500 and image.height > 100
    stored = get_eval_run(db, run.id)
    assert stored.status.value == "succeeded" and stored.totals[ALL]["judged"] == len(cases)


def _judged(database_url: str) -> int:
    probe = Database(database_url)
    try:
        return sum(c.status.value == "judged" for c in eval_cases(probe, 1))
    except NotFound:  # the run's row is not there yet
        return 0
    finally:
        probe.dispose()


@pytest.mark.vllm
def test_kill_and_resume_gives_the_uninterrupted_totals(vllm_server, tmp_path, capsys):
    """`pulsemind eval run` in its own process, killed with SIGKILL after some cases are stored,
    then --resume; one request at a time, so both runs batch identically on the server."""
    path = cmtmedqa_file(tmp_path, n=8)
    url = vllm_server.base_url
    urls = {}
    for name in ("killed", "whole"):
        urls[name] = f"sqlite+pysqlite:///{tmp_path / f'{name}.db'}"
        db = Database(urls[name])
        db.upgrade()
        variants(db, url)
        db.dispose()
    argv = ["eval", "run", "--cases", str(path), "--model", "tiny", "--opponent", "a1",
            "--judge", url, "--judge-model", "tiny", "--concurrency", "1", "--bootstrap", "50",
            "--out", str(tmp_path / "out")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", *argv, "--database-url", urls["killed"]],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 240
    while _judged(urls["killed"]) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no case was judged in time"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    killed = Database(urls["killed"])
    before = _judged(urls["killed"])
    assert 2 <= before < 8 and get_eval_run(killed, 1).status.value == "running"

    assert main(["eval", "run", "--resume", "1", "--judge", url, "--bootstrap", "50",
                 "--concurrency", "1", "--out", str(tmp_path / "out"),
                 "--database-url", urls["killed"]]) == 0  # fmt: skip
    out = capsys.readouterr().out
    judged_now = int(re.search(r"judged now (\d+)", out).group(1))
    assert judged_now == 8 - before  # no case judged twice
    assert len(eval_verdicts(killed, 1)) == 16  # one verdict per case and order
    assert len(eval_responses(killed, 1)) == 8 * 2 * 2  # 8 cases, 2 turns, 2 sides

    assert main([*argv, "--database-url", urls["whole"]]) == 0
    capsys.readouterr()
    whole = Database(urls["whole"])
    assert get_eval_run(killed, 1).totals == get_eval_run(whole, 1).totals
    assert [c.outcomes for c in eval_cases(killed, 1)] == [c.outcomes for c in eval_cases(whole, 1)]
    for database in (killed, whole):
        database.dispose()
    assert (tmp_path / "out" / "run-1.md").is_file() and (tmp_path / "out" / "run-1.png").is_file()


# --- judge-clinician agreement ----------------------------------------------------------------------


def voted_db(db: Database, texts: list[tuple[str, str]], votes: list[dict]) -> None:
    ann = create_user(db, "ann", "correct horse battery", "annotator")
    create_user(db, "root", "correct horse battery", "admin")
    base = ensure_model_variant(db, "base", "http://127.0.0.1:9/v1", "tiny")
    other = ensure_model_variant(db, "other", "http://127.0.0.1:9/v1", "a1")
    for (a, b), vote in zip(texts, votes, strict=True):
        turn = create_comparison(db, ann.id, "ad_hoc", variant_a_id=base.id, variant_b_id=other.id,
                                 prompt_text="咳嗽一周了，怎么办？")  # fmt: skip
        for side, text in (("a", a), ("b", b)):
            record_response(db, turn.id, ann.id, side, text, sampling_params={}, finish_reason="stop")
        record_vote(db, turn.id, ann.id, idempotency_key=str(uuid.uuid4()), **vote)


class StubJudge:
    """Scripted verdicts (a stub): the relative verdict per answer A, scores per answer."""

    def __init__(self, verdicts: dict[str, Verdict], scores: dict[str, Scores]):
        self.verdicts, self.scores, self.items = verdicts, scores, []

    def judge_many(self, items):
        self.items += items
        return [self.verdicts[i.a] for i in items]

    def score_many(self, items):
        return [self.scores[i.answer] for i in items]


def _w(*values: str) -> Verdict:
    return Verdict(dict(zip(DIMENSIONS, values, strict=True)))


def _s(*values: int) -> Scores:
    return Scores(dict(zip(DIMENSIONS, values, strict=True)))


def test_agreement_with_scripted_verdicts_has_the_known_answer(db):
    human = {"proactiveness": "a", "accuracy": "b", "usefulness": "tie", "language_quality": "a"}
    texts = [(f"answer A{i}", f"answer B{i}") for i in range(4)]
    voted_db(db, texts, [{**human, "overall": "a"}] * 3 + [{**human, "overall": "both_bad"}])
    turns, skipped = voted_turns(db)
    assert len(turns) == 4 and skipped == 0 and turns[0].context[-1].text == "咳嗽一周了，怎么办？"
    with pytest.raises(PermissionDenied):
        voted_turns(db, user_id=1)  # the annotator
    stub = StubJudge(
        verdicts={"answer A0": _w("a", "b", "tie", "a"),    # agrees on all four, overall a (a)
                  "answer A1": _w("a", "a", "tie", "b"),    # 2 of 4; overall a (vote: a)
                  "answer A2": _w("b", "b", "b", "b"),      # 1 of 4; overall b (vote: a)
                  "answer A3": Verdict.failed("unusable verdict")},  # left out, counted
        scores={"answer A0": _s(4, 4, 4, 4), "answer B0": _s(4, 4, 4, 4),  # all tie: 1 of 4
                "answer A1": _s(5, 3, 4, 5), "answer B1": _s(3, 4, 4, 4),  # all agree, sum 17 > 15
                "answer A2": _s(4, 4, 4, 4), "answer B2": _s(4, 4, 4, 4),
                "answer A3": _s(2, 2, 2, 2), "answer B3": _s(3, 3, 3, 3)},  # overall b vs tie
    )  # fmt: skip
    result = measure_agreement(turns, stub, stub, bootstrap=200)
    rows = {r.field: r for r in result.rows}
    assert result.votes == 4 and result.turns == 4
    assert rows["proactiveness"].n == {"relative": 3, "absolute": 4}
    assert rows["proactiveness"].errors == {"relative": 1, "absolute": 0}
    # relative: proactiveness agreed on turns 0 and 1 -> 2/3; accuracy turns 0, 2 -> 2/3;
    # usefulness turns 0, 1 -> 2/3; language quality turn 0 -> 1/3; overall turns 0, 1 -> 2/3
    assert [rows[f].agreement["relative"] for f in FIELDS] == pytest.approx([2 / 3, 2 / 3, 2 / 3,
                                                                              1 / 3, 2 / 3])
    # absolute: ties everywhere on turns 0 and 2 (usefulness agrees), all four on turn 1,
    # turn 3: A lower on everything -> b (only accuracy agrees)
    assert [rows[f].agreement["absolute"] for f in FIELDS] == pytest.approx([1 / 4, 2 / 4, 3 / 4,
                                                                              1 / 4, 1 / 4])
    for r in result.rows:
        for m in ("relative", "absolute"):
            assert r.lower[m] <= r.agreement[m] <= r.upper[m]
    assert result.mean_scores["proactiveness"] == pytest.approx((4 + 4 + 5 + 3 + 4 + 4 + 2 + 3) / 8)
    # the judge read what the answers replied to
    assert all("咳嗽一周了" in item.context for item in stub.items)


def test_agreement_skips_unrated_dimensions():
    turn = VotedTurn(1, "en", (), "x", "y", None,
                     ((1, {"proactiveness": None, "accuracy": "a", "usefulness": None,
                           "language_quality": None}, "a"),))  # fmt: skip
    stub = StubJudge({"x": _w("a", "a", "a", "a")}, {"x": _s(5, 5, 5, 5), "y": _s(1, 1, 1, 1)})
    rows = {r.field: r for r in measure_agreement([turn], stub, stub, bootstrap=20).rows}
    assert rows["proactiveness"].n == {"relative": 0, "absolute": 0}
    assert rows["proactiveness"].agreement == {"relative": None, "absolute": None}
    assert rows["accuracy"].agreement == {"relative": 1.0, "absolute": 1.0}
    assert rows["overall"].n == {"relative": 1, "absolute": 1}


@pytest.mark.vllm
def test_agreement_command_against_the_real_judge(vllm_server, db, tmp_path, capsys):
    human = {"proactiveness": "a", "accuracy": "tie", "usefulness": "b", "language_quality": "a"}
    voted_db(db, [("请问发热几天了？", "多喝水。"), ("Do you have a fever?", "Rest.")],
             [{**human, "overall": "a"}, {**human, "overall": "tie"}])  # fmt: skip
    argv = ["eval", "agreement", "--database-url", str(db.engine.url), "--out", str(tmp_path),
            "--bootstrap", "50"]  # fmt: skip
    assert main(argv) == 1  # nothing measured yet
    assert "no measurement yet" in capsys.readouterr().err
    assert main([*argv, "--judge", vllm_server.base_url, "--judge-model", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "| overall |" in out and "Paper: relative 86.1%" in out
    run = get_eval_run(db, 1)
    assert run.kind.value == "agreement" and run.status.value == "succeeded"
    rows = {r["field"]: r for r in run.totals["rows"]}
    # structured output: every relative verdict and every 1-5 score parsed
    assert all(r["errors"] == {"relative": 0, "absolute": 0} for r in rows.values())
    assert rows["overall"]["n"] == {"relative": 2, "absolute": 2}
    assert all(1 <= v <= 5 for v in run.totals["mean_scores"].values())
    assert main(argv) == 0 and "judge tiny vs clinicians" in capsys.readouterr().out
    assert (tmp_path / "run-1.png").is_file() and (tmp_path / "run-1.csv").is_file()


def test_benchmark_tab_shows_a_stored_run_to_admins_only(db, tmp_path, monkeypatch):
    """The Benchmark tab's handlers: the runs listed newest first, the picked run's table,
    plot and CSV (offered to the admin who asked only); other roles are refused by storage."""
    from app.downloads import Downloads
    from app.eval_tab import EvalHandlers
    from storage import PermissionDenied, Uploads, create_user
    from tests.test_judge import GOOD, ScriptedServer, ok

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    root = create_user(db, "root", "correct horse battery", "admin")
    ann = create_user(db, "ann", "correct horse battery", "annotator")
    with ScriptedServer(lambda n, body: ok(GOOD) if "structured_outputs" in body
                        else ok(f"{body['model']}：多休息。")) as server:  # fmt: skip
        variants(db, server.base_url)
        run = start_run(db, RunSpec("tiny", "a1", server.base_url, "judge"),
                        read_case_file(cmtmedqa_file(tmp_path, n=2)))  # fmt: skip
        EvalRunner(db, run.id, EvalConfig(concurrency=2, progress=False, bootstrap=20)).run()
    uploads = Uploads()
    h = EvalHandlers(db, Downloads(uploads))
    picker, empty = h.runs(root)
    assert picker["value"] == run.id and empty == "" and "#1" in picker["choices"][0][0]
    markdown, plot, csv_file = h.show(root, run.id)
    assert "overall" in markdown.lower() and Path(plot).is_file() and Path(csv_file).is_file()
    assert uploads.allowed("root", csv_file) and not uploads.allowed("ann", csv_file)
    with pytest.raises(PermissionDenied):
        h.show(ann, run.id)
    with pytest.raises(PermissionDenied):
        h.runs(ann)
