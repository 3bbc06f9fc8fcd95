"""The PulseMind Benchmark: a model variant against an opponent on multi-turn consultations,
judged per case on the four dimensions and overall, in both orders.

    pulsemind eval run --cases cmtmedqa-test.json --model pulsemind --opponent reference \\
        --judge http://judge:8000/v1 --judge-model judge [--limit 50 | --sample 100 --seed 1] \\
        [--concurrency 16] [--lang zh-CN] [--out eval-runs]
    pulsemind eval run --resume 7 [--judge URL]          # after an interruption: the rest only

    run = start_run(db, spec, case_file, EvalConfig(...))     # the case set and the run's rows
    result = EvalRunner(db, run.id, config).run()             # answers, verdicts, totals
    markdown, png, rows = eval_report(db, run.id, user_id=admin.id)   # what the Admin tab shows

How a case is evaluated (as in the paper): at every turn t the model reads the reference
dialogue before it (patient turns with the reference doctor's answers, through
`model.prompt.to_chat_messages`, the one prompt builder) and answers patient turn t; so does
the opponent (or, for `--opponent reference`, the reference doctor's answer stands). Turns do
not depend on each other's answers, only on the reference. The judge then reads the case once:
the patient's turns as context, the reference doctor's answers as its guide (left out when the
reference is the opponent), and each side's answers to every turn as one transcript; it is
asked twice, model shown as A and as B. A dimension is won (or lost) only when both orders
agree, else it is a tie; overall is the majority of the four dimensions in each order, with the
same agreement rule. Verdicts come from training/judge.py (retries, HTTP 429 waits, the SQL
verdict cache).

Kept in SQL as it happens (storage/evals.py): the run, its cases, every answer and every
verdict. `--resume` reads them back and does only what is missing; an answer or verdict that
failed is retried then, and counted apart until it succeeds (never as a loss). Requests go out
`--concurrency` cases at a time (each case asks its turns one after another, then the judge).
Reports: training/eval_stats.py (rates, 95% bootstrap intervals, per `cate1`, markdown, plot).
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from storage.evals import FIELDS
from training.eval_stats import JUDGE_ERROR_PREFIX

if TYPE_CHECKING:
    import argparse

    from storage import Database, NewCase, VariantRecord
    from storage.evals import EvalCaseRecord, EvalRunRecord, NewEvalResponse
    from storage.records import CaseRecord
    from training.judge import Judge, Verdict
    from training.judge_prompts import Language

#: `--opponent` value that pits the model against the reference doctor's answers.
REFERENCE = "reference"
#: Bootstrap resamples for the reported intervals.
DEFAULT_BOOTSTRAP = 1000
#: Shown around turns in what the judge reads (prompt languages of training/judge_prompts.py).
LABELS = {
    "en": {"turn": "Turn {n}", "patient": "Patient"},
    "zh-CN": {"turn": "第 {n} 轮", "patient": "患者"},
}


def _default_api_key() -> str:
    return os.environ.get("PULSEMIND_JUDGE_API_KEY", "EMPTY")


@dataclass
class EvalConfig:
    """How a run is carried out (what it evaluates is in its row: `RunSpec`)."""

    concurrency: int = 16
    """Cases in flight at once (each asks its turns in order, then the judge, twice)."""
    bootstrap: int = DEFAULT_BOOTSTRAP
    """Resamples of the cases for the 95% intervals (0: none)."""
    judge_api_key: str = field(default_factory=_default_api_key)
    """A hosted judge's key ($PULSEMIND_JUDGE_API_KEY); vLLM takes anything."""
    judge_max_tokens: int = 200
    judge_structured: str = "auto"
    """vllm, json_schema, none or auto (see training/judge.py)."""
    model_timeout_s: float | None = None
    """Longest silence of a model server (default: the engine's own)."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("--concurrency must be at least 1")
        if self.bootstrap < 0:
            raise ValueError("--bootstrap must be 0 or more")


@dataclass(frozen=True)
class RunSpec:
    """What a new run evaluates: variant names (opponent `REFERENCE` for the doctor), the judge,
    the prompt language, which cases (`limit` first ones, or `sample` drawn with `seed`)."""

    model: str
    opponent: str
    judge_url: str
    judge_model: str
    language: str = "zh-CN"
    limit: int | None = None
    sample: int | None = None
    seed: int = 0
    case_file: str = ""
    created_by: int | None = None


@dataclass(frozen=True)
class RunResult:
    """What one process did for a run (a resumed run counts only its own work)."""

    run_id: int
    cases: int
    answered_now: int
    judged_now: int
    judge_calls: int
    answer_requests: int
    wall_s: float
    failed: int


class EvalError(Exception):
    """A run that cannot start or continue, said in words (bilingual)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.user_message = message


# --- choosing the cases -------------------------------------------------------------------------


def select_positions(total: int, *, limit: int | None = None, sample: int | None = None,
                     seed: int = 0) -> list[int]:  # fmt: skip
    """Positions (1-based, in file order) of the cases to run: all, the first `limit`, or
    `sample` drawn without replacement with `seed` (the same seed, the same cases).

    >>> select_positions(10, limit=3)
    [1, 2, 3]
    """
    positions = list(range(1, total + 1))
    if sample is not None:
        positions = sorted(random.Random(seed).sample(positions, min(sample, total)))
    if limit is not None:
        positions = positions[:limit]
    return positions


def _say(en: str, zh: str) -> str:
    return f"{en} / {zh}"


def check_reference(cases: Sequence[NewCase], positions: Sequence[int]) -> None:
    """`--opponent reference` needs the doctor's answer on every turn of every chosen case."""
    for p in positions:
        for t, turn in enumerate(cases[p - 1].turns, start=1):
            if turn.reference_answer is None:
                raise EvalError(_say(
                    f"Case {p}: turn {t} has no reference doctor's answer to compare with; "
                    "choose a variant as --opponent, or give every turn a doctor's answer.",
                    f"第 {p} 个病例：第 {t} 轮没有参考医生的回答可供比较；请选择一个模型作为 "
                    "--opponent，或为每一轮提供医生回答。"))  # fmt: skip


# --- starting a run -------------------------------------------------------------------------------


def _variant(db: Database, name: str) -> VariantRecord:
    from storage import get_variant_by_name

    variant = get_variant_by_name(db, name)
    if variant is None:
        raise EvalError(_say(f"There is no model variant named {name!r} (pulsemind variant list).",
                             f"没有名为 {name!r} 的模型变体（见 pulsemind variant list）。"))  # fmt: skip
    return variant


def start_run(
    db: Database, spec: RunSpec, case_file: tuple[Any, Sequence[NewCase], str],
    *, pid: int | None = None,
) -> EvalRunRecord:  # fmt: skip
    """Store the case file's cases (reusing a set imported from the same content) and a new
    run over the chosen ones. Everything is checked first: EvalError (or a storage error)
    means nothing of the run was stored."""
    from storage import import_case_set, list_cases
    from storage.evals import create_eval_run, find_case_set

    case_format, cases, sha256 = case_file
    model = _variant(db, spec.model)
    opponent = None if spec.opponent == REFERENCE else _variant(db, spec.opponent)
    if opponent is not None and opponent.id == model.id:
        raise EvalError(_say("The model and its opponent are the same variant.",
                             "模型与其对手是同一个变体。"))  # fmt: skip
    positions = select_positions(len(cases), limit=spec.limit, sample=spec.sample, seed=spec.seed)
    if not positions:
        raise EvalError(_say("No cases were chosen (--limit or --sample 0).",
                             "没有选中任何病例（--limit 或 --sample 为 0）。"))  # fmt: skip
    if opponent is None:
        check_reference(cases, positions)
    case_set = find_case_set(db, sha256, case_format)
    if case_set is None:
        stem = Path(spec.case_file).stem[:60] if spec.case_file else "cases"
        case_set = import_case_set(db, f"eval-{stem}-{sha256[:12]}", case_format, sha256, cases,
                                   user_id=spec.created_by)  # fmt: skip
    ids = {c.position: c.id for c in list_cases(db, case_set.id)}
    config = {"case_file": spec.case_file, "case_set": case_set.name, "limit": spec.limit,
              "sample": spec.sample, "seed": spec.seed, "model": model.name,
              "opponent": opponent.name if opponent else REFERENCE}  # fmt: skip
    return create_eval_run(db, "benchmark", judge_model=spec.judge_model, judge_url=spec.judge_url,
                           language=spec.language, config=config, case_set_id=case_set.id,
                           case_ids=[ids[p] for p in positions], model_variant_id=model.id,
                           opponent_variant_id=opponent.id if opponent else None,
                           created_by=spec.created_by, pid=pid)  # fmt: skip


# --- what the judge reads -------------------------------------------------------------------------


def _turn_label(language: str, n: int) -> str:
    return LABELS[language]["turn"].format(n=n)


def case_context(case: CaseRecord, language: str) -> str:
    """The patient's turns, numbered, each as the model read it (attachment lines, text)."""
    from model.prompt import user_turn

    parts = []
    for turn in case.turns:
        atts = [(str(a.kind), a.page_count, a.text) for a in turn.attachments]
        text = user_turn(turn.patient_text, atts, []).text
        parts.append(f"{_turn_label(language, turn.position)}\n{LABELS[language]['patient']}: {text}")
    return "\n\n".join(parts)


def transcript(answers: Sequence[str], language: str) -> str:
    """One side's answers to every turn, numbered as the context is."""
    return "\n\n".join(f"[{_turn_label(language, n)}] {a.strip()}" for n, a in enumerate(answers, 1))


def _outcome_of(winner: str) -> str:
    return {"a": "win", "b": "loss", "tie": "tie"}[winner]


def _overall(winners: dict[str, str]) -> str:
    """The majority of the four dimensions in one order, for the model (shown as "a")."""
    wins = sum(w == "a" for w in winners.values())
    losses = sum(w == "b" for w in winners.values())
    return "a" if wins > losses else "b" if losses > wins else "tie"


def case_outcomes(model_first: Verdict, model_second: Verdict) -> dict[str, str]:
    """The model's win / tie / loss per field from both orders: `model_first` judged with the
    model as A, `model_second` with it as B. Only what both orders say counts."""
    first = dict(model_first.winners or {})
    second = dict(model_second.swapped().winners or {})  # back to the model as "a"
    out = {d: _outcome_of(first[d] if first[d] == second[d] else "tie") for d in first}
    o1, o2 = _overall(first), _overall(second)
    out["overall"] = _outcome_of(o1 if o1 == o2 else "tie")
    return {f: out[f] for f in FIELDS}


# --- running -------------------------------------------------------------------------------------


class EvalRunner:
    """Answers and judges a run's unfinished cases, `concurrency` at a time, storing each answer
    set and judgement as soon as it exists; then stores the totals."""

    def __init__(self, db: Database, run_id: int, config: EvalConfig | None = None):
        from model.engines import EngineRegistry
        from storage import get_variant
        from storage.evals import get_eval_run

        self.db, self.config = db, config or EvalConfig()
        self.run_record = get_eval_run(db, run_id)
        run = self.run_record
        self.language: Language = run.language  # type: ignore[assignment]
        self.model = get_variant(db, run.model_variant_id)
        self.opponent = get_variant(db, run.opponent_variant_id) if run.opponent_variant_id else None
        self.registry = EngineRegistry(timeout_s=self.config.model_timeout_s)
        self._requests = 0

    def _judge(self) -> Judge:
        from training.judge import Judge, JudgeConfig

        cfg = self.config
        run = self.run_record
        return Judge(JudgeConfig(base_url=run.judge_url, model=run.judge_model,
                                 api_key=cfg.judge_api_key, language=self.language,
                                 structured=cfg.judge_structured,  # type: ignore[arg-type]
                                 max_tokens=cfg.judge_max_tokens, concurrency=cfg.concurrency),
                     cache=self.db)  # fmt: skip

    # --- answers ---

    def _answer(self, side: str, variant: VariantRecord, case: CaseRecord, t: int) -> NewEvalResponse:
        """`variant`'s answer to turn `t` (1-based) after the reference dialogue before it."""
        from model.chat import SamplingParams
        from model.errors import ModelError
        from model.prompt import to_chat_messages
        from storage import MessageRole
        from storage.evals import NewEvalResponse
        from storage.records import ContextMessage

        records = []
        for turn in case.turns[: t - 1]:
            records += [ContextMessage(MessageRole.USER, turn.patient_text, turn.attachments),
                        ContextMessage(MessageRole.ASSISTANT, turn.reference_answer or "")]  # fmt: skip
        now = case.turns[t - 1]
        records.append(ContextMessage(MessageRole.USER, now.patient_text, now.attachments))
        sampling = SamplingParams(**(variant.sampling_defaults or {}))
        engine, model = self.registry.for_variant(variant)
        self._requests += 1
        t0 = time.perf_counter()
        try:
            done = engine.complete(to_chat_messages(records, language=self.language), sampling,
                                   model=model)[0]  # fmt: skip
        except ModelError as exc:
            logger.warning("eval case id={} {} turn {}: {}", case.id, side, t, exc.detail)
            return NewEvalResponse(side, t, variant.id, "", "error", error=exc.detail[:400],
                                   sampling_params=sampling.to_dict())  # fmt: skip
        return NewEvalResponse(side, t, variant.id, done.text, done.finish_reason,
                               sampling_params=sampling.to_dict(),
                               latency_ms=round((time.perf_counter() - t0) * 1000),
                               prompt_tokens=done.prompt_tokens,
                               completion_tokens=done.completion_tokens)  # fmt: skip

    def _answers(self, ec: EvalCaseRecord, case: CaseRecord) -> tuple[dict[str, list[str]], bool, str | None]:
        """Both sides' answers to every turn (stored ones reused, missing ones asked for and
        stored); whether any was asked for now; the first failure."""
        from storage.evals import NewEvalResponse, store_responses

        texts: dict[str, list[str]] = {"model": [], "opponent": []}
        new: list[NewEvalResponse] = []
        for side, variant in (("model", self.model), ("opponent", self.opponent)):
            for turn in case.turns:
                stored = ec.responses.get((side, turn.position))
                if stored is not None:
                    answer = stored.text
                elif variant is None:  # the reference doctor's answer is the opponent's
                    answer = turn.reference_answer or ""
                    new.append(NewEvalResponse(side, turn.position, None, answer, "stop"))
                else:
                    response = self._answer(side, variant, case, turn.position)
                    new.append(response)
                    answer = response.text
                texts[side].append(answer)
        failed = next((f"{r.side} answer, turn {r.turn}: {r.error}" for r in new if r.error), None)
        if new:
            store_responses(self.db, ec.id, new, error=failed)
        return texts, bool(new), failed

    # --- one case ---

    def _case(self, ec: EvalCaseRecord, judge: Judge) -> tuple[bool, bool, bool]:
        """(answered now, judged now, failed) for one case."""
        from storage import get_case
        from storage.evals import NewEvalVerdict, store_judgement
        from training.judge import JudgeItem

        case = get_case(self.db, ec.case_id, with_png=True)
        texts, answered, failed = self._answers(ec, case)
        if failed:
            return answered, False, True
        context = case_context(case, self.language)
        reference = None
        if self.opponent is not None:
            reference = transcript([t.reference_answer or "" for t in case.turns], self.language)
        a, b = transcript(texts["model"], self.language), transcript(texts["opponent"], self.language)
        first, second = judge.judge_many([JudgeItem(a, b, context, reference),
                                          JudgeItem(b, a, context, reference)])  # fmt: skip
        verdicts = [NewEvalVerdict("a", first.winners, first.error, first.calls, first.cached),
                    NewEvalVerdict("b", second.winners, second.error, second.calls, second.cached)]  # fmt: skip
        calls = first.calls + second.calls
        if first.ok and second.ok:
            store_judgement(self.db, ec.id, verdicts, case_outcomes(first, second), calls=calls)
            return answered, True, False
        error = "; ".join(v.error for v in (first, second) if v.error)
        store_judgement(self.db, ec.id, verdicts, None, error=f"{JUDGE_ERROR_PREFIX}: {error}",
                        calls=calls)  # fmt: skip
        return answered, False, True

    def run(self) -> RunResult:
        """Every unfinished case, then the totals on the run (failed if any case failed)."""
        from tqdm import tqdm

        from storage.evals import eval_cases, finish_eval_run, interrupt_eval_run

        run_id = self.run_record.id
        todo = eval_cases(self.db, run_id, unfinished=True)
        total = len(eval_cases(self.db, run_id))
        t0 = time.perf_counter()
        answered = judged = failed = 0
        bar = tqdm(total=total, initial=total - len(todo), desc=f"eval run {run_id}", unit="case",
                   file=sys.stderr, disable=not self.config.progress)  # fmt: skip
        judge = self._judge()
        pool = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="eval")
        try:
            pending: set[Future] = {pool.submit(self._case, ec, judge) for ec in todo}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    a, j, f = future.result()
                    answered, judged, failed = answered + a, judged + j, failed + f
                    bar.update(1)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            interrupt_eval_run(self.db, run_id)
            raise
        finally:
            bar.close()
            judge.close()
        pool.shutdown()
        groups = self.summary()
        from training.eval_stats import totals

        g = groups[0]
        error = None
        if g.judge_errors or g.model_errors:
            error = (f"{g.judge_errors} case(s) without a verdict, {g.model_errors} without all "
                     "answers; pulsemind eval run --resume retries them")  # fmt: skip
        finish_eval_run(self.db, run_id, totals(groups), error=error)
        return RunResult(run_id, total, answered, judged, judge.calls, self._requests,
                         time.perf_counter() - t0, g.judge_errors + g.model_errors)  # fmt: skip

    def summary(self, bootstrap: int | None = None):
        return summarize_run(self.db, self.run_record.id,
                             bootstrap=self.config.bootstrap if bootstrap is None else bootstrap)  # fmt: skip


# --- reports ---------------------------------------------------------------------------------------


def summarize_run(db: Database, run_id: int, *, user_id: int | None = None,
                  bootstrap: int = DEFAULT_BOOTSTRAP):  # fmt: skip
    """The run's groups (training.eval_stats.summarize) from its stored cases."""
    from storage.evals import eval_cases
    from training.eval_stats import CaseOutcome, summarize

    cases = eval_cases(db, run_id, user_id=user_id)
    return summarize([CaseOutcome(c.position, c.cate1, c.outcomes, c.error) for c in cases],
                     bootstrap=bootstrap)  # fmt: skip


def run_title(db: Database, run: EvalRunRecord) -> str:
    """"model vs opponent on case set (judge)" for headings and plots."""
    from storage import get_variant
    from storage.cases import list_case_sets

    model = get_variant(db, run.model_variant_id).name if run.model_variant_id else "?"
    opponent = get_variant(db, run.opponent_variant_id).name if run.opponent_variant_id else REFERENCE
    sets = {s.id: s.name for s in list_case_sets(db)}
    return (f"Run {run.id}: {model} vs {opponent} on {sets.get(run.case_set_id, '?')} "
            f"(judge {run.judge_model}, {run.language})")  # fmt: skip


def eval_report(
    db: Database, run_id: int, *, user_id: int | None = None, plot_path: str | Path | None = None,
    bootstrap: int = DEFAULT_BOOTSTRAP,
) -> tuple[str, Path, list[dict]]:  # fmt: skip
    """(markdown, PNG path, CSV rows) of a stored run, benchmark or agreement; admins only
    with `user_id` (PermissionDenied otherwise). The PNG goes to `plot_path`, default a file
    in the system's temp folder."""
    import tempfile

    from storage.evals import get_eval_run
    from storage.models import EvalKind
    from training.eval_stats import csv_rows, format_markdown, plot_groups

    run = get_eval_run(db, run_id, user_id=user_id)
    path = Path(plot_path) if plot_path else Path(tempfile.gettempdir()) / "pulsemind-eval" / f"run-{run_id}.png"
    if run.kind is EvalKind.AGREEMENT:
        from training.eval_agreement import agreement_report

        return agreement_report(run, path)
    groups = summarize_run(db, run_id, bootstrap=bootstrap)
    title = run_title(db, run)
    markdown = format_markdown(groups, title)
    if run.status.value != "succeeded":
        markdown += f"\nStatus: {run.status.value}{f' ({run.error})' if run.error else ''}.\n"
    return markdown, plot_groups(groups, path, title), csv_rows(groups)


def list_runs(db: Database, *, user_id: int | None = None) -> list:
    """Every evaluation run, newest first (admins only with `user_id`)."""
    from storage.evals import list_eval_runs

    return list_eval_runs(db, user_id=user_id)


# --- command line ---------------------------------------------------------------------------------


def write_outputs(out: Path, run_id: int, markdown: str, png: Path, rows: list[dict]) -> list[Path]:
    """run-N.md, run-N.csv (the PNG is drawn there already) in `out`."""
    import csv

    out.mkdir(parents=True, exist_ok=True)
    md = out / f"run-{run_id}.md"
    md.write_text(markdown, encoding="utf-8")
    table = out / f"run-{run_id}.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return [md, table, png]


def cli_main(args: argparse.Namespace, database: Callable[[], Database],
             read_cases: Callable[..., tuple]) -> int:  # fmt: skip
    """`pulsemind eval run` (see app/cli.py): `read_cases(path, format=, images=, progress=)`
    reads a case file (app.cases.read_case_file), raising its own error for a bad file."""
    from model.errors import PulseMindError
    from storage import StorageError
    from storage.evals import get_eval_run, resume_eval_run

    try:
        config = EvalConfig(concurrency=args.concurrency, bootstrap=args.bootstrap,
                            judge_max_tokens=args.judge_max_tokens)  # fmt: skip
    except ValueError as exc:
        raise SystemExit(f"pulsemind eval run: {exc}") from exc
    db = database()
    try:
        if args.resume is not None:
            run = get_eval_run(db, args.resume)
            if run.status.value == "succeeded":
                print(f"run {run.id} has finished already; its report:")
            else:
                run = resume_eval_run(db, args.resume, os.getpid(), judge_url=args.judge)
        else:
            spec = RunSpec(model=args.model, opponent=args.opponent, judge_url=args.judge,
                           judge_model=args.judge_model, language=args.lang, limit=args.limit,
                           sample=args.sample, seed=args.seed, case_file=str(args.cases))  # fmt: skip
            _variant(db, spec.model)  # a typo is reported before the file is read
            if spec.opponent != REFERENCE:
                _variant(db, spec.opponent)
            case_file = read_cases(args.cases, format=None if args.format == "auto" else args.format,
                                   images=args.images, progress=True)  # fmt: skip
            run = start_run(db, spec, case_file, pid=os.getpid())
            print(f"run {run.id}: {len(case_file[1])} cases read, evaluating "
                  f"{len(select_positions(len(case_file[1]), limit=spec.limit, sample=spec.sample, seed=spec.seed))}")  # fmt: skip
        if run.status.value != "succeeded":
            result = EvalRunner(db, run.id, config).run()
            print(f"run {result.run_id}: {result.cases} cases; answered now {result.answered_now}, "
                  f"judged now {result.judged_now} ({result.judge_calls} judge calls, "
                  f"{result.answer_requests} answer requests) in {result.wall_s:.1f}s; "
                  f"failed {result.failed}")  # fmt: skip
        markdown, png, rows = eval_report(db, run.id, plot_path=Path(args.out) / f"run-{run.id}.png",
                                          bootstrap=config.bootstrap)  # fmt: skip
        print(markdown)
        written = write_outputs(Path(args.out), run.id, markdown, png, rows)
        print("wrote " + ", ".join(str(p) for p in written))
        return 1 if get_eval_run(db, run.id).status.value == "failed" else 0
    except EvalError as exc:
        print(f"pulsemind eval run: {exc.user_message}", file=sys.stderr)
        return 1
    except (StorageError, PulseMindError) as exc:
        print(f"pulsemind eval run: {getattr(exc, 'user_message', None) or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pulsemind eval run: interrupted; continue with --resume", file=sys.stderr)
        return 130
    finally:
        db.dispose()
