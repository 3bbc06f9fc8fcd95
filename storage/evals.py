"""Evaluation runs as rows: the PulseMind Benchmark's runs, cases, answers and verdicts.

Why rows: a benchmark run answers every turn of hundreds of consultations with two models and
judges each case twice; it may be stopped (or die) half-way. Every answer and verdict is kept
as soon as it exists, so `--resume` continues without redoing finished cases, the totals can
be recomputed at any time, and the Admin tab reads the same rows as the command line.

    run = create_eval_run(db, "benchmark", judge_model="judge", judge_url=URL, language="zh-CN",
                          config={...}, case_set_id=s.id, case_ids=[3, 4, 5],
                          model_variant_id=v.id, opponent_variant_id=None, pid=os.getpid())
    for case in unfinished_cases(db, run.id): ...
    store_responses(db, case.id, [NewEvalResponse("model", 1, v.id, "...", "stop"), ...])
    store_judgement(db, case.id, [NewEvalVerdict("a", winners), ...], outcomes, None, calls=2)
    finish_eval_run(db, run.id, totals)
    resume_eval_run(db, run.id, os.getpid())   # after the process died: running again
    voted_turns(db)                            # compare turns with clinicians' votes (agreement)

A case's status: pending -> answered -> judged, or failed (an answer or the judge failed; the
error is kept and `--resume` tries again). A verdict is stored once per case and order
(`UNIQUE(eval_case_id, model_side)`): a failed verdict is replaced when it is retried, a
usable one never. Only admins start or read evaluations (`storage.access.may_evaluate`); the
command line acts without a user. Runs are never deleted.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from loguru import logger
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from storage.access import may_evaluate
from storage.checks import as_enum, bounded_text, json_object, optional_count
from storage.compare_context import resolve_context
from storage.db import Database
from storage.errors import Conflict, InvalidInput, NotFound
from storage.i18n import bilingual
from storage.models import (
    ERROR_LENGTH,
    LANGUAGE_LENGTH,
    PATH_LENGTH,
    URL_LENGTH,
    Case,
    CaseFormat,
    CaseSet,
    Comparison,
    ComparisonResponse,
    ComparisonTurn,
    EvalCase,
    EvalCaseStatus,
    EvalKind,
    EvalOutcome,
    EvalResponse,
    EvalRun,
    EvalSide,
    EvalVerdict,
    FinishReason,
    ModelVariant,
    Preference,
    RunStatus,
    Side,
    Vote,
    utcnow,
)
from storage.records import CaseSetRecord, ContextMessage, from_row
from storage.runs import process_alive
from storage.votes import DIMENSIONS

#: Everything a case is judged on: the four dimensions, then overall.
FIELDS = (*DIMENSIONS, "overall")
#: A run's settings and totals are a few hundred values (totals per category: a few thousand).
MAX_CONFIG_CHARS = 100_000
MAX_TOTALS_CHARS = 1_000_000
#: An answer is kept whole up to this (a model that never stops is cut by its max_tokens).
MAX_RESPONSE_CHARS = 200_000

MESSAGES = {
    "running": {
        "en": "Evaluation run {run} is still running (process {pid} on {host}).",
        "zh-CN": "评测运行 {run} 仍在进行中（{host} 上的进程 {pid}）。",
    },
    "finished": {
        "en": "Evaluation run {run} has finished already; nothing to resume.",
        "zh-CN": "评测运行 {run} 已经完成，无需继续。",
    },
    "not_found": {"en": "Evaluation run {run} does not exist.", "zh-CN": "评测运行 {run} 不存在。"},
    "not_benchmark": {
        "en": "Evaluation run {run} is not a benchmark run; only those can be resumed.",
        "zh-CN": "评测运行 {run} 不是基准评测运行，只有基准评测可以继续。",
    },
}


# --- records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalRunRecord:
    id: int
    kind: EvalKind
    status: RunStatus
    case_set_id: int | None
    model_variant_id: int | None
    opponent_variant_id: int | None
    """None in a benchmark run: the opponent is the reference doctor."""
    judge_model: str
    judge_url: str
    language: str
    config: dict[str, Any]
    totals: dict[str, Any] | None
    created_by_id: int | None
    created_at: datetime
    pid: int | None
    host: str | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class EvalResponseRecord:
    side: EvalSide
    turn: int
    variant_id: int | None
    text: str
    finish_reason: FinishReason
    error: str | None
    latency_ms: int | None
    completion_tokens: int | None


@dataclass(frozen=True)
class EvalCaseRecord:
    """A case of a run; `outcomes` (field -> "win"/"tie"/"loss") once judged; `cate1` from
    the case; `responses` only where asked for (the usable ones, by (side, turn))."""

    id: int
    run_id: int
    position: int
    case_id: int
    status: EvalCaseStatus
    outcomes: dict[str, str] | None
    error: str | None
    judge_calls: int
    cate1: str | None
    responses: dict[tuple[str, int], EvalResponseRecord] = field(default_factory=dict)


@dataclass(frozen=True)
class NewEvalResponse:
    """One side's answer to one turn (`variant_id` None: the reference doctor's)."""

    side: EvalSide | str
    turn: int
    variant_id: int | None
    text: str
    finish_reason: FinishReason | str
    error: str | None = None
    sampling_params: dict[str, Any] | None = None
    latency_ms: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class NewEvalVerdict:
    """The judge's verdict in one order: `model_side` "a" or "b" (where the model was shown),
    `winners` per dimension in the shown order, or `error`."""

    model_side: Side | str
    winners: Mapping[str, str] | None
    error: str | None = None
    calls: int = 0
    cached: bool = False


@dataclass(frozen=True)
class EvalVerdictRecord:
    eval_case_id: int
    model_side: Side
    winners: dict[str, str] | None
    error: str | None
    calls: int
    cached: bool


@dataclass(frozen=True)
class VotedTurn:
    """A compare turn with clinicians' votes: what both answers replied to (`context`, the
    question last), both answers, the case's reference answer, and each vote's choices
    (dimension -> "a"/"b"/"tie", None where not rated) and overall."""

    turn_id: int
    language: str
    context: tuple[ContextMessage, ...]
    text_a: str
    text_b: str
    reference: str | None
    votes: tuple[tuple[int, dict[str, str | None], str], ...]


def _run_record(run: EvalRun) -> EvalRunRecord:
    return from_row(EvalRunRecord, run)


def _outcomes(row: EvalCase) -> dict[str, str] | None:
    values = {f: getattr(row, f) for f in FIELDS}
    if any(v is None for v in values.values()):
        return None
    return {f: v.value for f, v in values.items()}


def _case_record(row: EvalCase, cate1: str | None, responses=None) -> EvalCaseRecord:
    return EvalCaseRecord(row.id, row.run_id, row.position, row.case_id, row.status,
                          _outcomes(row), row.error, row.judge_calls, cate1,
                          responses or {})  # fmt: skip


def _error_text(error: str | None) -> str | None:
    return None if error is None else (str(error).strip() or "failed")[:ERROR_LENGTH]


def _check_reader(session: Session, user_id: int | None) -> None:
    if user_id is not None:
        may_evaluate(session, user_id)


def _run(session: Session, run_id: int, *, lock: bool = False) -> EvalRun:
    query = select(EvalRun).where(EvalRun.id == run_id)
    run = session.scalar(query.with_for_update() if lock else query)
    if run is None:
        raise NotFound(f"eval run {run_id} does not exist",
                       user_message=bilingual(MESSAGES["not_found"], run=run_id))  # fmt: skip
    return run


# --- runs -------------------------------------------------------------------------------------


def find_case_set(db: Database, file_sha256: str, format: CaseFormat | str) -> CaseSetRecord | None:
    """The case set imported from exactly this content (sha256) in this format, if any (the
    oldest): an evaluation of a file already loaded reuses its cases."""
    case_format = as_enum(CaseFormat, format, "case format")
    with db.transaction(write=False) as session:
        found = session.scalar(select(CaseSet).where(CaseSet.file_sha256 == file_sha256,
                                                     CaseSet.format == case_format)
                               .order_by(CaseSet.id).limit(1))  # fmt: skip
        return from_row(CaseSetRecord, found) if found is not None else None


def create_eval_run(
    db: Database,
    kind: EvalKind | str,
    *,
    judge_model: str,
    judge_url: str,
    language: str,
    config: Mapping[str, Any],
    case_set_id: int | None = None,
    case_ids: Sequence[int] = (),
    model_variant_id: int | None = None,
    opponent_variant_id: int | None = None,
    created_by: int | None = None,
    pid: int | None = None,
) -> EvalRunRecord:
    """A new running evaluation and its cases (pending, in the order given), in one
    transaction. `created_by` (None from the command line) must be an active admin."""
    kind = as_enum(EvalKind, kind, "kind")
    config = json_object(dict(config), "config", MAX_CONFIG_CHARS) or {}
    judge_model = bounded_text(judge_model, "judge model", PATH_LENGTH)
    judge_url = bounded_text(judge_url, "judge URL", URL_LENGTH)
    language = bounded_text(language, "language", LANGUAGE_LENGTH)
    if kind is EvalKind.BENCHMARK and (case_set_id is None or not case_ids or model_variant_id is None):
        raise InvalidInput("a benchmark run needs a case set, cases and a model variant")
    if len(set(case_ids)) != len(case_ids):
        raise InvalidInput("a case appears twice in the run")
    with db.transaction() as session:
        if created_by is not None:
            may_evaluate(session, created_by)
        for variant_id in (model_variant_id, opponent_variant_id):
            if variant_id is not None and session.get(ModelVariant, variant_id) is None:
                raise NotFound(f"model variant {variant_id} does not exist")
        if case_ids:
            in_set = set(session.scalars(select(Case.id).where(Case.case_set_id == case_set_id,
                                                               Case.id.in_(case_ids))))  # fmt: skip
            if in_set != set(case_ids):
                raise InvalidInput(f"cases {sorted(set(case_ids) - in_set)} are not in case set "
                                   f"{case_set_id}")  # fmt: skip
        run = EvalRun(kind=kind, status=RunStatus.RUNNING, case_set_id=case_set_id,
                      model_variant_id=model_variant_id, opponent_variant_id=opponent_variant_id,
                      judge_model=judge_model, judge_url=judge_url, language=language,
                      config=config, created_by_id=created_by, pid=pid,
                      host=socket.gethostname() if pid else None, started_at=utcnow())  # fmt: skip
        session.add(run)
        session.flush()
        session.add_all(EvalCase(run_id=run.id, position=n, case_id=case_id,
                                 status=EvalCaseStatus.PENDING, judge_calls=0)
                        for n, case_id in enumerate(case_ids, start=1))  # fmt: skip
        logger.info("eval run id={} ({}) started: {} cases, by user id={}", run.id, kind.value,
                    len(case_ids), created_by)  # fmt: skip
        return _run_record(run)


def resume_eval_run(
    db: Database,
    run_id: int,
    pid: int,
    *,
    judge_url: str | None = None,
    alive: Callable[[int, datetime | None], bool] = process_alive,
) -> EvalRunRecord:
    """Take over an unfinished benchmark run in process `pid` (optionally judged at a new
    `judge_url`). Conflict if it finished, or if its process on this machine still runs."""
    with db.transaction() as session:
        run = _run(session, run_id, lock=True)
        if run.kind is not EvalKind.BENCHMARK:
            raise Conflict(f"eval run {run_id} is {run.kind.value}",
                           user_message=bilingual(MESSAGES["not_benchmark"], run=run_id))  # fmt: skip
        if run.status is RunStatus.SUCCEEDED:
            raise Conflict(f"eval run {run_id} succeeded",
                           user_message=bilingual(MESSAGES["finished"], run=run_id))  # fmt: skip
        if (run.status is RunStatus.RUNNING and run.pid is not None
                and run.host == socket.gethostname() and alive(run.pid, run.started_at)):  # fmt: skip
            raise Conflict(f"eval run {run_id} is running in pid {run.pid}",
                           user_message=bilingual(MESSAGES["running"], run=run_id, pid=run.pid,
                                                  host=run.host))  # fmt: skip
        logger.info("eval run id={} resumed ({} -> running) by pid {}", run.id, run.status.value, pid)
        run.status, run.pid, run.host = RunStatus.RUNNING, pid, socket.gethostname()
        run.started_at, run.finished_at, run.error = utcnow(), None, None
        if judge_url:
            run.judge_url = bounded_text(judge_url, "judge URL", URL_LENGTH)
        return _run_record(run)


def finish_eval_run(
    db: Database, run_id: int, totals: Mapping[str, Any], *, error: str | None = None
) -> EvalRunRecord:
    """The run is done: succeeded, or failed with `error` (cases whose answers or verdicts
    failed; `--resume` retries them). `totals` are its counts."""
    totals = json_object(dict(totals), "totals", MAX_TOTALS_CHARS)
    with db.transaction() as session:
        run = _run(session, run_id, lock=True)
        run.status = RunStatus.FAILED if error else RunStatus.SUCCEEDED
        run.totals, run.error, run.finished_at = totals, _error_text(error), utcnow()
        logger.info("eval run id={} {}", run.id, run.status.value)
        return _run_record(run)


def interrupt_eval_run(db: Database, run_id: int) -> EvalRunRecord:
    """The run was stopped (Ctrl-C) before it finished; `--resume` continues it."""
    with db.transaction() as session:
        run = _run(session, run_id, lock=True)
        if run.status is RunStatus.RUNNING:
            run.status, run.finished_at = RunStatus.INTERRUPTED, utcnow()
        return _run_record(run)


def get_eval_run(db: Database, run_id: int, *, user_id: int | None = None) -> EvalRunRecord:
    """One run (admins only with `user_id`; trusted callers without)."""
    with db.transaction(write=False) as session:
        _check_reader(session, user_id)
        return _run_record(_run(session, run_id))


def list_eval_runs(
    db: Database, *, user_id: int | None = None, kind: EvalKind | str | None = None,
    limit: int = 100,
) -> list[EvalRunRecord]:  # fmt: skip
    """Runs, newest first, optionally of one kind (admins only with `user_id`)."""
    query = select(EvalRun).order_by(EvalRun.created_at.desc(), EvalRun.id.desc())
    if kind is not None:
        query = query.where(EvalRun.kind == as_enum(EvalKind, kind, "kind"))
    with db.transaction(write=False) as session:
        _check_reader(session, user_id)
        return [_run_record(r) for r in session.scalars(query.limit(max(1, limit)))]


# --- cases, answers, verdicts -------------------------------------------------------------------


def eval_cases(
    db: Database, run_id: int, *, user_id: int | None = None, unfinished: bool = False
) -> list[EvalCaseRecord]:
    """The run's cases in order (only those not judged yet if `unfinished`, each with its
    usable stored answers, so a resumed run asks only for what is missing)."""
    query = (select(EvalCase, Case.cate1).join(Case, Case.id == EvalCase.case_id)
             .where(EvalCase.run_id == run_id).order_by(EvalCase.position))  # fmt: skip
    if unfinished:
        query = query.where(EvalCase.status != EvalCaseStatus.JUDGED)
    with db.transaction(write=False) as session:
        _check_reader(session, user_id)
        _run(session, run_id)
        rows = session.execute(query).all()
        answers: dict[int, dict[tuple[str, int], EvalResponseRecord]] = {}
        if unfinished and rows:
            for r in session.scalars(select(EvalResponse).where(
                    EvalResponse.eval_case_id.in_([c.id for c, _ in rows]),
                    EvalResponse.error.is_(None))):  # fmt: skip
                answers.setdefault(r.eval_case_id, {})[(r.side.value, r.turn)] = from_row(
                    EvalResponseRecord, r)
        return [_case_record(c, cate1, answers.get(c.id)) for c, cate1 in rows]


def _response_row(eval_case_id: int, new: NewEvalResponse) -> EvalResponse:
    if isinstance(new.turn, bool) or not isinstance(new.turn, int) or new.turn < 1:
        raise InvalidInput("turn must be a positive integer")
    text = bounded_text(new.text, "answer", MAX_RESPONSE_CHARS, allow_empty=True)
    return EvalResponse(
        eval_case_id=eval_case_id, side=as_enum(EvalSide, new.side, "side"), turn=new.turn,
        variant_id=new.variant_id, text=text,
        finish_reason=as_enum(FinishReason, new.finish_reason, "finish reason"),
        error=_error_text(new.error),
        sampling_params=json_object(new.sampling_params, "sampling", MAX_CONFIG_CHARS),
        latency_ms=optional_count(new.latency_ms, "latency"),
        prompt_tokens=optional_count(new.prompt_tokens, "prompt tokens"),
        completion_tokens=optional_count(new.completion_tokens, "completion tokens"),
    )  # fmt: skip


def store_responses(
    db: Database, eval_case_id: int, responses: Iterable[NewEvalResponse], *,
    error: str | None = None,
) -> None:  # fmt: skip
    """Keep these answers of a case (replacing earlier tries of the same side and turn) in one
    transaction; the case is then answered, or failed with `error` (an answer failed)."""
    with db.transaction() as session:
        case = session.get(EvalCase, eval_case_id)
        if case is None:
            raise NotFound(f"eval case {eval_case_id} does not exist")
        rows = [_response_row(eval_case_id, r) for r in responses]
        for row in rows:
            session.execute(delete(EvalResponse).where(EvalResponse.eval_case_id == eval_case_id,
                                                       EvalResponse.side == row.side,
                                                       EvalResponse.turn == row.turn))  # fmt: skip
        session.add_all(rows)
        case.status = EvalCaseStatus.FAILED if error else EvalCaseStatus.ANSWERED
        case.error = _error_text(error)
        if error:
            case.finished_at = utcnow()


def store_judgement(
    db: Database,
    eval_case_id: int,
    verdicts: Sequence[NewEvalVerdict],
    outcomes: Mapping[str, str] | None,
    *,
    error: str | None = None,
    calls: int = 0,
) -> None:
    """Keep a case's verdicts (one per order: a failed one is replaced, a usable one kept, and
    a different usable one for the same order refused, Conflict) and its outcome per field, or
    the judge's `error`."""
    if (outcomes is None) == (error is None):
        raise InvalidInput("a judgement has either outcomes or an error")
    values = {f: as_enum(EvalOutcome, outcomes[f], f) for f in FIELDS} if outcomes else {}
    with db.transaction() as session:
        case = session.scalar(select(EvalCase).where(EvalCase.id == eval_case_id).with_for_update())
        if case is None:
            raise NotFound(f"eval case {eval_case_id} does not exist")
        if case.status is EvalCaseStatus.JUDGED:
            raise Conflict(f"eval case {eval_case_id} was judged already")
        for new in verdicts:
            side = as_enum(Side, new.model_side, "model side")
            old = session.scalar(select(EvalVerdict).where(EvalVerdict.eval_case_id == eval_case_id,
                                                           EvalVerdict.model_side == side))  # fmt: skip
            winners = {d: as_enum(Preference, new.winners[d], d) for d in DIMENSIONS} if new.winners else {}
            if old is not None and old.error is None:
                # Judged in this order before (the other order failed): it stays. The same
                # verdict again (the judge's cache gives it back) or a failed retry changes
                # nothing; a different verdict would judge the case twice, and is refused.
                if winners and {d: getattr(old, d) for d in DIMENSIONS} != winners:
                    raise Conflict(f"eval case {eval_case_id} order {side.value} judged already")
                continue
            if old is not None:
                session.delete(old)
                session.flush()
            session.add(EvalVerdict(eval_case_id=eval_case_id, model_side=side, **winners,
                                    error=_error_text(new.error) if not new.winners else None,
                                    calls=new.calls, cached=new.cached))  # fmt: skip
        for f in FIELDS:
            setattr(case, f, values.get(f))
        case.status = EvalCaseStatus.JUDGED if outcomes else EvalCaseStatus.FAILED
        case.error, case.judge_calls = _error_text(error), case.judge_calls + calls
        case.finished_at = utcnow()


def eval_responses(db: Database, run_id: int) -> list[tuple[int, EvalResponseRecord]]:
    """Every stored answer of a run as (case position, answer), in order (for exports, tests)."""
    query = (select(EvalCase.position, EvalResponse).join(EvalCase, EvalCase.id == EvalResponse.eval_case_id)
             .where(EvalCase.run_id == run_id)
             .order_by(EvalCase.position, EvalResponse.side, EvalResponse.turn))  # fmt: skip
    with db.transaction(write=False) as session:
        return [(p, from_row(EvalResponseRecord, r)) for p, r in session.execute(query).all()]


def eval_verdicts(db: Database, run_id: int) -> list[EvalVerdictRecord]:
    """Every stored verdict of a run, by case and order."""
    query = (select(EvalVerdict).join(EvalCase, EvalCase.id == EvalVerdict.eval_case_id)
             .where(EvalCase.run_id == run_id).order_by(EvalCase.position, EvalVerdict.model_side))  # fmt: skip
    with db.transaction(write=False) as session:
        return [EvalVerdictRecord(v.eval_case_id, v.model_side,
                                  None if v.error else {d: getattr(v, d).value for d in DIMENSIONS},
                                  v.error, v.calls, v.cached)
                for v in session.scalars(query)]  # fmt: skip


def count_eval_runs(db: Database) -> int:
    """Runs stored (a check that a run that could not start stored nothing)."""
    with db.transaction(write=False) as session:
        return session.scalar(select(func.count()).select_from(EvalRun)) or 0


# --- the clinicians' votes, for judge agreement --------------------------------------------------


def voted_turns(db: Database, *, user_id: int | None = None) -> tuple[list[VotedTurn], int]:
    """Compare turns with votes and both answers, with what the answers replied to (images
    loaded), oldest first; and how many voted turns were left out because something they
    showed changed since (their snapshot no longer resolves). Admins only with `user_id`."""
    with db.transaction(write=False) as session:
        _check_reader(session, user_id)
        turn_ids = list(session.scalars(select(Vote.turn_id).distinct().order_by(Vote.turn_id)))
        out, skipped = [], 0
        for turn_id in turn_ids:
            turn = session.get(ComparisonTurn, turn_id)
            answers = {r.side: r.text for r in session.scalars(
                select(ComparisonResponse).where(ComparisonResponse.turn_id == turn_id))}  # fmt: skip
            if set(answers) != {Side.A, Side.B}:
                skipped += 1
                continue
            try:
                context = resolve_context(session, turn, with_png=True)
            except Conflict:
                skipped += 1
                continue
            comparison = session.get(Comparison, turn.comparison_id)
            votes = tuple((v.id, {d: getattr(getattr(v, d), "value", None) for d in DIMENSIONS},
                           v.overall.value)
                          for v in session.scalars(select(Vote).where(Vote.turn_id == turn_id)
                                                   .order_by(Vote.id)))  # fmt: skip
            out.append(VotedTurn(turn.id, comparison.language, tuple(context), answers[Side.A],
                                 answers[Side.B], turn.reference_answer, votes))  # fmt: skip
        if skipped:
            logger.warning("agreement: {} voted turns left out (an answer missing or the context "
                           "changed)", skipped)  # fmt: skip
        return out, skipped
