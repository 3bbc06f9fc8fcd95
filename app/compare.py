"""The compare workflow, free of UI code: two variants answer one question side by side, blind.

An annotator (or admin) compares on an imported case or a typed patient turn; a clinician
compares inside their own consultation (clinician compare mode), where the answer they pick
becomes the consultation's answer. The Compare tab, the clinician mode in Consult, and the
tests drive it through `Comparisons`:

    flow = Comparisons(db, engines, uploads)
    pair = flow.start(annotator, FromCase(case_id))       # draws two variants, sides at random
    for text_a, text_b in pair: ...                       # both answers stream at once
    revealed = flow.vote(annotator, pair.turn.id, {"proactiveness": "a", "accuracy": "tie",
                         "usefulness": "a", "language_quality": "b", "overall": "a"}, key)
    revealed.names                                        # {"a": "tiny", "b": "a1"}
    pair = flow.continue_(annotator, pair.turn.id, "Still hurts after two days.")
    turn = flow.review(annotator2)                        # a second opinion: a turn another
    flow.vote(annotator2, turn.id, {...}, key2)           # annotator voted on, answers as stored

Both answers are recorded however they end (complete, cut off, failed, stopped), each by the
thread that streamed it, so nothing shown is lost when the reader goes away. What the models
are sent is built by `model.prompt.to_chat_messages` from the turn's stored snapshot
(`storage.turn_context`), so a vote is traceable to exactly what was shown.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from loguru import logger

from app.workflow import Consultations, to_new_attachment
from model.chat import SamplingParams
from model.engines import EngineRegistry
from model.intake import IntakeLimits
from model.prompt import DEFAULT_LANGUAGE, to_chat_messages
from model.turn import TurnOutcome, TurnStream
from storage import (
    CompareSource,
    CompareTurnRecord,
    Database,
    InvalidInput,
    Overall,
    Side,
    Uploads,
    UserRecord,
    VariantRecord,
    VoteRecord,
    add_compare_turn,
    add_user_message,
    assign_review,
    create_comparison,
    get_compare_turn,
    get_comparison,
    get_variant,
    get_vote,
    keep_response,
    list_active_variants,
    record_audit,
    record_response,
    record_vote,
    reveal,
    turn_context,
)
from storage.i18n import bilingual

#: How much likelier an adapter is drawn against its parent than against any other variant:
#: the comparison that says whether training helped.
DEFAULT_PARENT_BOOST = 4.0

MESSAGES = {
    "two_variants": {
        "en": "Compare needs two active model variants; ask an administrator to add one.",
        "zh-CN": "比较需要两个已启用的模型版本，请联系管理员添加。",
    },
    "empty_turn": {"en": "Type a message or attach a file.", "zh-CN": "请输入消息或添加文件。"},
    "choose_kept": {
        "en": "Both answers were rated the same; choose the one the conversation continues "
        "with.",
        "zh-CN": "两个回答评价相同，请选择对话要继续使用的回答。",
    },
    "not_voted": {"en": "Vote first, then continue.", "zh-CN": "请先投票再继续。"},
    "bad_vote": {
        "en": "The vote must give proactiveness, accuracy, usefulness, language quality and "
        "overall (and may give the safety flags and a comment).",
        "zh-CN": "投票须包含主动性、准确性、实用性、语言质量和总体评价（可附安全标记和评论）。",
    },
}


def _say(key: str, **fields_: object) -> str:
    return bilingual(MESSAGES[key], **fields_)


# --- where a comparison starts ------------------------------------------------------------


@dataclass(frozen=True)
class FromCase:
    """An imported case: its turn `turn` (1, 2, ...; default the last) is the question."""

    case_id: int
    turn: int | None = None


@dataclass(frozen=True)
class FromConsultation:
    """The caller's own consultation (clinician compare mode): its last message is the question."""

    consultation_id: int


@dataclass(frozen=True)
class FromLog:
    """A clinician's logged consultation up to its message `message_id` (a question), for
    annotators and admins (`storage.logged_questions` lists them). The consultation is only
    read: the answers go into the comparison, never into the consultation."""

    consultation_id: int
    message_id: int


@dataclass(frozen=True)
class AdHoc:
    """A patient turn typed in Compare, with files the caller uploaded: (name, path) pairs."""

    text: str
    files: Sequence[tuple[str, str | Path]] = ()


Source = FromCase | FromConsultation | FromLog | AdHoc


@dataclass
class CompareConfig:
    """How pairs are drawn and prompted."""

    weights: dict[str, float] = field(default_factory=dict)
    """Variant name -> weight in the draw (default 1; 0 never drawn). A pair's weight is the
    product of its two weights, times `parent_boost` for an adapter and its parent."""
    parent_boost: float = DEFAULT_PARENT_BOOST
    """How much likelier an adapter meets its parent than any other variant."""
    language: str = DEFAULT_LANGUAGE
    """System prompt language of new comparisons ("en", "zh-CN")."""
    seed: int | None = None
    """Seed of the draw and the side assignment (tests); None: unpredictable."""

    def __post_init__(self) -> None:
        if any(w < 0 for w in self.weights.values()) or self.parent_boost <= 0:
            raise ValueError("variant weights must be >= 0 and parent_boost > 0")


@dataclass(frozen=True)
class VoteChoice:
    """A vote as the UI sends it: "a"/"b"/"tie" per dimension, overall also "both_bad"."""

    proactiveness: str
    accuracy: str
    usefulness: str
    language_quality: str
    overall: str
    safety_flag_a: bool = False
    safety_flag_b: bool = False
    comment: str | None = None

    @classmethod
    def of(cls, votes: VoteChoice | Mapping[str, object]) -> VoteChoice:
        if isinstance(votes, VoteChoice):
            return votes
        names = {f.name for f in fields(cls)}
        if not isinstance(votes, Mapping) or not set(votes) <= names:
            raise InvalidInput("malformed vote", user_message=_say("bad_vote"))
        try:
            return cls(**votes)  # type: ignore[arg-type]  # values checked by storage
        except TypeError:
            raise InvalidInput("vote lacks a field", user_message=_say("bad_vote")) from None


@dataclass(frozen=True)
class Revealed:
    """After a vote: the stored vote, which variant answered on each side, and (clinician
    mode, a clear winner) the turn with the winner stored in the consultation."""

    vote: VoteRecord
    names: dict[str, str]
    turn: CompareTurnRecord
    continues: bool = True
    """False for a second opinion: the voter did not make the comparison and continues nothing."""


def draw_pair(
    variants: Sequence[VariantRecord], config: CompareConfig, rng: random.Random
) -> tuple[VariantRecord, VariantRecord]:
    """Two different variants, by pair weight, on random sides: (side A, side B)."""
    pairs, weights = [], []
    for i, x in enumerate(variants):
        for y in variants[i + 1 :]:
            w = config.weights.get(x.name, 1.0) * config.weights.get(y.name, 1.0)
            if x.id == y.parent_id or y.id == x.parent_id:
                w *= config.parent_boost
            if w > 0:
                pairs.append((x, y))
                weights.append(w)
    if not pairs:
        raise InvalidInput("fewer than two drawable variants", user_message=_say("two_variants"))
    a, b = rng.choices(pairs, weights)[0]
    return (a, b) if rng.random() < 0.5 else (b, a)


# --- two answers at once ------------------------------------------------------------------


_DONE = object()


class PairAnswer:
    """Both answers of a compare turn, each streamed by its own thread and recorded when it
    ends. Iterate for (text of A, text of B) as they grow; closing the iteration stops both
    (they are recorded as cancelled). `turn` is the stored turn, updated as answers land."""

    def __init__(self, flow: Comparisons, user: UserRecord, turn: CompareTurnRecord,
                 streams: dict[Side, TurnStream], variants: dict[Side, VariantRecord]):  # fmt: skip
        self.turn = turn
        self._flow, self._user, self._streams, self._variants = flow, user, streams, variants
        self._updates: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def outcome(self, side: Side | str) -> TurnOutcome | None:
        return self._streams[Side(side)].outcome

    def start(self) -> PairAnswer:
        """Start both answers (iterating starts them too)."""
        with self._lock:
            if not self._threads:
                self._threads = [threading.Thread(target=self._run, args=(side,), daemon=True,
                                                  name=f"compare-{self.turn.id}-{side.value}")
                                 for side in Side]  # fmt: skip
                for t in self._threads:
                    t.start()
        return self

    def __iter__(self) -> Iterator[tuple[str, str]]:
        self.start()
        texts = {Side.A: "", Side.B: ""}
        running = 2
        try:
            while running:
                side, text = self._updates.get()
                while True:  # take every update already waiting: one yield for all of them
                    if text is _DONE:
                        running -= 1
                    else:
                        texts[side] = text
                    try:
                        side, text = self._updates.get_nowait()
                    except queue.Empty:
                        break
                yield texts[Side.A], texts[Side.B]
        finally:
            self._stop.set()
            self.wait()

    def wait(self) -> CompareTurnRecord:
        """Wait until both answers are recorded; re-raises what failed in a worker."""
        self.start()
        for t in self._threads:
            t.join()
        if self._errors:
            raise self._errors[0]
        return self.turn

    def stop(self) -> None:
        """Stop both answers (as the Stop button does); they are recorded as they are."""
        self._stop.set()

    def _run(self, side: Side) -> None:
        stream = self._streams[side]
        texts = iter(stream)
        try:
            for text in texts:
                self._updates.put((side, text))
                if self._stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - a bug in a worker: raised to the reader
            self._errors.append(exc)
        finally:
            texts.close()  # ends the HTTP stream: the server stops generating
            try:
                self._record(side, stream.outcome or TurnOutcome("", "cancelled"))
            except BaseException as exc:  # noqa: BLE001 - handed to the reader, who raises it
                self._errors.append(exc)
            self._updates.put((side, _DONE))

    def _record(self, side: Side, out: TurnOutcome) -> None:
        turn = record_response(
            self._flow.db, self.turn.id, self._user.id, side, out.text,
            sampling_params=self._streams[side].sampling.to_dict(),
            finish_reason=out.finish_reason,
            error=out.error.user_message if out.error else None,
            latency_ms=_ms(out.latency_s), first_token_ms=_ms(out.first_token_s),
            prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens,
        )  # fmt: skip
        with self._lock:
            if len(turn.responses) >= len(self.turn.responses):
                self.turn = turn
        logger.bind(turn=self.turn.id, side=side.value).info(
            "compare answer recorded: {} ({} chars)", out.finish_reason, len(out.text))


# --- the use cases ------------------------------------------------------------------------


class Comparisons:
    """Compare use cases over one database and the engines of the model variants."""

    def __init__(
        self,
        db: Database,
        engines: EngineRegistry,
        uploads: Uploads | None = None,
        limits: IntakeLimits | None = None,
        config: CompareConfig | None = None,
    ):
        self.db = db
        self.engines = engines
        self.config = config or CompareConfig()
        self.rng = random.Random(self.config.seed)
        # intake of typed turns' files: the same checks as Consult (the caller's own uploads)
        self._consult = Consultations(db, engines, uploads, limits)

    def close(self) -> None:
        self._consult.close()

    def __enter__(self) -> Comparisons:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_patient_turn(
        self, user: UserRecord, consultation_id: int, text: str, files: Sequence = ()
    ) -> None:
        """Clinician mode: add the next patient turn to the caller's own consultation (the
        Consult rules: owner only, the caller's own uploads, intake first), then `start`."""
        self._consult.add_turn(user, consultation_id, text, files)

    def draw(self) -> tuple[VariantRecord, VariantRecord]:
        """Two different active variants (side A, side B) as `CompareConfig` weighs them."""
        return draw_pair(list_active_variants(self.db), self.config, self.rng)

    def start(self, user: UserRecord, source: Source, *, language: str | None = None) -> PairAnswer:
        """Start a comparison on `source` and both answers to its first question (lazy:
        iterate or `start()` the result). Refusals (role, someone else's consultation, a bad
        file) come before anything is written."""
        a, b = self.draw()
        common = dict(variant_a_id=a.id, variant_b_id=b.id,
                      language=language or self.config.language)  # fmt: skip
        if isinstance(source, FromCase):
            turn = create_comparison(self.db, user.id, CompareSource.CASE, case_id=source.case_id,
                                     case_turn=source.turn, **common)  # fmt: skip
        elif isinstance(source, FromConsultation):
            turn = create_comparison(self.db, user.id, CompareSource.CONSULTATION,
                                     consultation_id=source.consultation_id, **common)  # fmt: skip
        elif isinstance(source, FromLog):
            turn = create_comparison(self.db, user.id, CompareSource.LOG,
                                     consultation_id=source.consultation_id,
                                     message_id=source.message_id, **common)  # fmt: skip
        elif isinstance(source, AdHoc):
            text = _turn_text(source.text, source.files)
            attachments = [to_new_attachment(r) for r in self._consult.take_in(user, source.files)]
            turn = create_comparison(self.db, user.id, CompareSource.AD_HOC, prompt_text=text,
                                     prompt_attachments=attachments, **common)  # fmt: skip
        else:
            raise TypeError(f"unknown comparison source {source!r}")
        record_audit(self.db, "compare.start", user_id=user.id, target_type="comparison",
                     target_id=turn.comparison_id, detail={"turn": turn.id})  # fmt: skip
        return self._answers(user, turn, {Side.A: a, Side.B: b})

    def _answers(self, user: UserRecord, turn: CompareTurnRecord,
                 variants: dict[Side, VariantRecord]) -> PairAnswer:  # fmt: skip
        """Both variants' answers to the turn, prompted from its stored snapshot."""
        language = get_comparison(self.db, turn.comparison_id, user_id=user.id).language
        records = turn_context(self.db, turn.id, user_id=user.id, with_png=True)
        messages = to_chat_messages(records, language=language)
        streams = {}
        for side, variant in variants.items():
            engine, model = self.engines.for_variant(variant)
            sampling = SamplingParams(**(variant.sampling_defaults or {}))
            streams[side] = TurnStream(engine, messages, sampling, model=model, context={
                "comparison": turn.comparison_id, "turn": turn.id, "side": side.value})  # fmt: skip
        return PairAnswer(self, user, turn, streams, variants)

    def vote(
        self,
        user: UserRecord,
        turn_id: int,
        votes: VoteChoice | Mapping[str, object],
        idempotency_key: str,
    ) -> Revealed:
        """Store the vote (a replay with the same key is the same vote) and reveal the variants.

        Clinician mode: a clear winner (overall A or B) is stored as the consultation's answer.
        """
        choice = VoteChoice.of(votes)
        vote = record_vote(self.db, turn_id, user.id, idempotency_key=idempotency_key,
                           **{f.name: getattr(choice, f.name) for f in fields(VoteChoice)})  # fmt: skip
        record_audit(self.db, "compare.vote", user_id=user.id, target_type="compare_turn",
                     target_id=turn_id, detail={"vote": vote.id})  # fmt: skip
        turn = get_compare_turn(self.db, turn_id, user_id=user.id)
        comparison = get_comparison(self.db, turn.comparison_id, user_id=user.id)
        if comparison.source is CompareSource.CONSULTATION and vote.overall in (Overall.A, Overall.B):
            turn = keep_response(self.db, turn_id, user.id, Side(vote.overall.value))
        names = {side.value: v.name for side, v in reveal(self.db, turn_id, user.id).items()}
        return Revealed(vote, names, turn, continues=comparison.creator_id == user.id)

    def review(self, user: UserRecord) -> CompareTurnRecord | None:
        """A turn someone else compared and voted on, for the caller's second opinion (their
        pending one first; `storage.reviews.assign_review`), with its stored answers, to be
        judged blind with `vote`; None when nothing is left to review."""
        turn = assign_review(self.db, user.id)
        if turn is not None:
            record_audit(self.db, "compare.review", user_id=user.id, target_type="compare_turn",
                         target_id=turn.id)  # fmt: skip
        return turn

    def keep(self, user: UserRecord, turn_id: int, side: Side | str) -> CompareTurnRecord:
        """Continue with side `side`'s answer (after the vote; in clinician mode it is stored as
        the consultation's answer)."""
        return keep_response(self.db, turn_id, user.id, side)

    def continue_(
        self,
        user: UserRecord,
        turn_id: int,
        next_patient_text: str,
        files: Sequence[tuple[str, str | Path]] = (),
        *,
        keep: Side | str | None = None,
    ) -> PairAnswer:
        """The preferred answer (the overall winner, or `keep`) becomes shared history and both
        variants answer the next question (sides drawn again).

        Clinician mode: the question is added to the consultation first, as in Consult.
        """
        text = _turn_text(next_patient_text, files)
        vote = get_vote(self.db, turn_id, user.id)
        if vote is None:
            raise InvalidInput(f"turn {turn_id} not voted", user_message=_say("not_voted"))
        if keep is None:
            if vote.overall not in (Overall.A, Overall.B):
                raise InvalidInput("tie: no preferred answer", user_message=_say("choose_kept"))
            keep = vote.overall.value
        results = self._consult.take_in(user, files)  # before any write: a bad file changes nothing
        attachments = [to_new_attachment(r) for r in results]
        previous = keep_response(self.db, turn_id, user.id, keep)
        comparison = get_comparison(self.db, previous.comparison_id, user_id=user.id)
        pair = [get_variant(self.db, previous.variant_a_id), get_variant(self.db, previous.variant_b_id)]
        self.rng.shuffle(pair)
        ids = dict(variant_a_id=pair[0].id, variant_b_id=pair[1].id)
        if comparison.source is CompareSource.CONSULTATION:
            add_user_message(self.db, comparison.consultation_id, user.id, text, attachments)
            turn = add_compare_turn(self.db, turn_id, user.id, **ids)
        else:
            turn = add_compare_turn(self.db, turn_id, user.id, prompt_text=text,
                                    prompt_attachments=attachments, **ids)  # fmt: skip
        return self._answers(user, turn, {Side.A: pair[0], Side.B: pair[1]})


def _turn_text(text: str | None, files: Sequence) -> str:
    text = (text or "").strip() if isinstance(text, str | None) else None
    if text is None or (not text and not files):
        raise InvalidInput("empty turn", user_message=_say("empty_turn"))
    return text


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(round(seconds * 1000))
