"""Compare benchmark: a compare turn's latency vs a single answer, and vote writes under load.

    pulsemind bench compare                                    # builds everything; ~2 minutes
    pulsemind bench compare --model-url URL --model NAME       # against a running vLLM server
    pulsemind bench compare --postgres-url URL --voters 50 --repeats 5 --json out.json

Why: a compare turn asks two variants at once, so the annotator should wait about as long as
for one answer (goal: compare turn <= 1.2x a single answer on the same server), and votes must
be written quickly and exactly once when many annotators vote together (goal: p95 <= 50 ms at
50 concurrent voters, zero lost, zero duplicated, on SQLite and on PostgreSQL).

How, part 1 (latency): the demo model on vLLM (built and started here unless --model-url),
two variants on that server with the same greedy sampling and a fixed answer length
(`min_tokens` = `max_tokens`), a temporary SQLite database. A single answer is one Consult turn
through the use-case layer (`Consultations.add_turn` + `answer`, streamed to its end and
recorded); a compare turn is `Comparisons.start` on the same question, both answers streamed
at once to their end and recorded. After one unmeasured warm-up of each, the two alternate for
`--repeats` rounds; the report gives medians and the ratio compare / single.

Part 2 (votes): per database, `--voters` annotators each with an answered comparison turn,
each sending its vote twice at once (a double click: the same idempotency key), in two
patterns: "burst", all of them at the same instant (a barrier: the worst case, 2 x voters
writes queued at once), and "spread", each voter at a random moment within one second (50
annotators voting within the same second is already far above any real rate). Every call is
timed; afterwards the votes table must hold exactly one row per voter, each the vote its voter
was told was saved. PostgreSQL is started
here (initdb/pg_ctl, as the tests do) unless --postgres-url; if none can be had, that row says
why and the rest still runs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from app.bench.consult import PROMPT, BenchError, start_model
from app.bench.postgres import PostgresUnavailable, fresh_database, postgres_server

#: The answer length of both paths: long enough that generation, not setup, dominates.
ANSWER_TOKENS = 64
#: The issue's figures.
VOTERS = 50
LATENCY_GOAL = 1.2
VOTE_P95_GOAL_MS = 50.0
PASSWORD = "bench compare password"
VOTE = dict(proactiveness="a", accuracy="tie", usefulness="a", language_quality="b", overall="a")


@dataclass
class BenchCompareConfig:
    model_url: str | None = None
    model: str | None = None
    vllm_python: str | None = None
    postgres_url: str | None = None
    repeats: int = 5
    voters: int = VOTERS
    max_tokens: int = ANSWER_TOKENS
    json_path: str | None = None


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --- part 1: a compare turn vs a single answer --------------------------------------------


def bench_latency(url: str, model: str, cfg: BenchCompareConfig, tmp: Path) -> dict:
    from app.compare import AdHoc, CompareConfig, Comparisons
    from app.workflow import Consultations
    from model.engines import EngineRegistry
    from storage import Database, Uploads, create_user, ensure_model_variant

    db = Database.sqlite(tmp / "latency.db")
    db.upgrade()
    sampling = {"max_tokens": cfg.max_tokens, "min_tokens": cfg.max_tokens, "temperature": 0.0,
                "seed": 0}  # fmt: skip
    for name in ("bench-a", "bench-b"):
        ensure_model_variant(db, name, url, model, sampling_defaults=sampling)
    clinician = create_user(db, "clinician", PASSWORD, "clinician")
    annotator = create_user(db, "annotator", PASSWORD, "annotator")
    engines, uploads = EngineRegistry(), Uploads()
    consult = Consultations(db, engines, uploads)
    compare = Comparisons(db, engines, uploads, config=CompareConfig(seed=0))

    def single() -> None:
        cid, _ = consult.add_turn(clinician, None, PROMPT)
        answer = consult.answer(clinician, cid, "bench-a")
        with closing(consult.streamed(clinician, answer)) as texts:
            for _ in texts:
                pass
        if answer.recorded is None or answer.recorded.finish_reason not in ("stop", "length"):
            raise BenchError(f"a single answer did not finish: {answer.outcome}")

    def pair() -> None:
        started = compare.start(annotator, AdHoc(PROMPT))
        with closing(iter(started)) as updates:
            for _ in updates:
                pass
        ends = {r.finish_reason for r in started.turn.responses}
        if len(started.turn.responses) != 2 or not ends <= {"stop", "length"}:
            raise BenchError(f"a compare turn did not finish: {sorted(ends)}")

    try:
        single(), pair()  # warm-up: connections, prefix cache, first-request costs
        times: dict[str, list[float]] = {"single": [], "compare": []}
        for _ in range(cfg.repeats):
            time.sleep(0.5)  # vLLM's CPU server answers right after another request late
            times["single"].append(_timed(single))
            time.sleep(0.5)
            times["compare"].append(_timed(pair))
    finally:
        compare.close()
        consult.close()
        db.dispose()
    single_s, compare_s = (statistics.median(times[k]) for k in ("single", "compare"))
    return {"single_s": single_s, "compare_s": compare_s, "ratio": compare_s / single_s,
            "repeats": cfg.repeats, "answer_tokens": cfg.max_tokens, "runs": times}  # fmt: skip


# --- part 2: votes under load ----------------------------------------------------------------


def bench_votes(url: str, voters: int, spread_s: float = 0.0, seed: int = 0) -> dict:
    """Every voter votes twice at once (a double click), all at the same instant (`spread_s`
    0) or each at a random moment within `spread_s`; timed, then checked in SQL."""
    from storage import (
        Database,
        create_comparison,
        create_user,
        ensure_model_variant,
        list_votes,
        record_response,
        record_vote,
    )

    db = Database(url)
    db.upgrade()
    try:
        a = ensure_model_variant(db, "bench-a", "http://127.0.0.1:9/v1", "tiny")
        b = ensure_model_variant(db, "bench-b", "http://127.0.0.1:9/v1", "tiny")
        people, turns = [], []
        for n in range(voters):
            person = create_user(db, f"voter{n}", PASSWORD, "annotator")
            turn = create_comparison(db, person.id, "ad_hoc", variant_a_id=a.id,
                                     variant_b_id=b.id, prompt_text=f"Question {n}")  # fmt: skip
            for side in ("a", "b"):
                record_response(db, turn.id, person.id, side, f"Answer {side} {n}",
                                sampling_params={}, finish_reason="stop")  # fmt: skip
            people.append(person)
            turns.append(turn)
        rng = random.Random(seed)
        delays = [rng.uniform(0, spread_s) for _ in people]
        calls = [(p, t, f"bench-vote-{p.id}", d)
                 for p, t, d in zip(people, turns, delays, strict=True)] * 2  # fmt: skip
        barrier = threading.Barrier(len(calls))
        results: list[tuple[int, float, object]] = []
        lock = threading.Lock()

        def cast(person, turn, key, delay) -> None:
            barrier.wait()
            time.sleep(delay)
            started = time.perf_counter()
            try:
                got: object = record_vote(db, turn.id, person.id, idempotency_key=key, **VOTE)
            except Exception as exc:  # noqa: BLE001 - counted and shown in the report
                got = exc
            with lock:
                results.append((person.id, time.perf_counter() - started, got))

        threads = [threading.Thread(target=cast, args=c) for c in calls]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stored = list_votes(db)
    finally:
        db.dispose()
    errors = [repr(g) for _, _, g in results if isinstance(g, Exception)]
    confirmed = {(pid, g.id) for pid, _, g in results if not isinstance(g, Exception)}
    in_sql = {(v.voter_id, v.id) for v in stored}
    latencies = [s * 1000 for _, s, _ in results]
    return {
        "calls": len(results), "voters": voters, "stored": len(stored),
        "lost": len(confirmed - in_sql), "duplicated": len(stored) - len({v.voter_id for v in stored}),
        "errors": errors[:5], "error_count": len(errors),
        "p50_ms": _percentile(latencies, 0.5), "p95_ms": _percentile(latencies, 0.95),
        "max_ms": max(latencies),
    }  # fmt: skip


# --- the run ---------------------------------------------------------------------------------


def run_bench(cfg: BenchCompareConfig) -> dict:
    result: dict = {"votes": {}}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="pulsemind-bench-compare-") as d:
        tmp = Path(d)
        url, model = start_model(cfg, stack, tmp)  # type: ignore[arg-type]
        result["latency"] = bench_latency(url, model or "tiny", cfg, tmp)
        for pattern, spread in (("burst", 0.0), ("spread", 1.0)):
            name = f"sqlite {pattern}"
            db_url = f"sqlite:///{tmp / f'votes-{pattern}.db'}"
            result["votes"][name] = bench_votes(db_url, cfg.voters, spread)
        try:
            server = cfg.postgres_url or stack.enter_context(postgres_server())
            for pattern, spread in (("burst", 0.0), ("spread", 1.0)):
                name = f"postgresql {pattern}"
                db_url = (fresh_database(server, f"bench_votes_{pattern}")
                          if not cfg.postgres_url else cfg.postgres_url)  # fmt: skip
                result["votes"][name] = bench_votes(db_url, cfg.voters, spread, seed=1)
                if cfg.postgres_url:
                    break  # a given database is used once: its votes table must start empty
        except PostgresUnavailable as exc:
            result["votes"]["postgresql"] = {"skipped": str(exc)}
    return result


def format_report(result: dict) -> str:
    lat = result["latency"]
    verdict = "met" if lat["ratio"] <= LATENCY_GOAL else "NOT met"
    lines = [
        f"compare turn vs single answer ({lat['answer_tokens']} tokens each, median of "
        f"{lat['repeats']}):",
        f"  single answer   {lat['single_s'] * 1000:8.1f} ms",
        f"  compare turn    {lat['compare_s'] * 1000:8.1f} ms   (both sides at once)",
        f"  ratio           {lat['ratio']:8.2f}x   goal <= {LATENCY_GOAL}x: {verdict}",
        "",
        f"{'votes':<18}{'voters':>7}{'calls':>7}{'stored':>8}{'lost':>6}{'dup':>5}{'errors':>8}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}  goal p95 <= {VOTE_P95_GOAL_MS:.0f} ms",
    ]
    for name, v in result["votes"].items():
        if "skipped" in v:
            lines.append(f"{name:<18}skipped: {v['skipped']}")
            continue
        ok = v["p95_ms"] <= VOTE_P95_GOAL_MS and not v["lost"] and not v["duplicated"]
        lines.append(
            f"{name:<18}{v['voters']:>7}{v['calls']:>7}{v['stored']:>8}{v['lost']:>6}"
            f"{v['duplicated']:>5}{v['error_count']:>8}{v['p50_ms']:>9.1f}{v['p95_ms']:>9.1f}"
            f"{v['max_ms']:>9.1f}  {'met' if ok else 'NOT met'}"
        )  # fmt: skip
        lines += [f"{'':<18}error: {e}" for e in v["errors"]]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pulsemind bench compare", description=__doc__.split("\n")[0])
    p.add_argument("--model-url", help="a running vLLM server's /v1 URL (default: start one)")
    p.add_argument("--model", help="its served model name (with --model-url)")
    p.add_argument("--vllm-python", help="python of the vLLM environment (default: bootstrap)")
    p.add_argument("--postgres-url", help="an empty PostgreSQL database (default: start one)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--voters", type=int, default=VOTERS)
    p.add_argument("--max-tokens", type=int, default=ANSWER_TOKENS)
    p.add_argument("--json", dest="json_path", help="also write the numbers here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.model_url and not args.model:
        print("--model-url needs --model (the served model name)", file=sys.stderr)
        return 2
    cfg = BenchCompareConfig(**vars(args))
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    try:
        result = run_bench(cfg)
    except BenchError as exc:
        print(f"bench compare failed: {exc}", file=sys.stderr)
        return 1
    print(format_report(result))
    if cfg.json_path:
        Path(cfg.json_path).write_text(json.dumps(result, indent=2, default=str))
    return 0
