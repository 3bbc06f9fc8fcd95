"""The consultation workflow, free of UI code: uploads in, answer streamed, everything recorded.

The Consult tab, the benchmark and the tests drive consultations through `Consultations`:

    flow = Consultations(db, engines)
    cid, msg = flow.add_turn(user, None, "Chest pain since yesterday", [("ecg.png", "/tmp/ecg.png")])
    turn = flow.answer(user, cid, variant_name="demo")
    for text_so_far in turn: ...            # streamed
    flow.record(user, turn)                 # -> the stored assistant message (also on failure)

    turn = flow.ask(user, cid, "And the troponin?")   # both in one: the model starts while the
    ...                                               # turn is stored (what /consult uses)

Intake runs before anything is written: one bad file refuses the whole turn with a message per
file, and the database is left as it was. Answers that fail are stored with their finish reason
(`cut_off`, `error`, `cancelled`) and partial text, so nothing the clinician saw is lost.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from app.config import CHECKPOINT_INTERVAL_S
from model.chat import ChatMessage, SamplingParams
from model.engines import EngineRegistry
from model.errors import IntakeError
from model.images import for_model, stored_image
from model.intake import IntakeLimits, IntakeResult, intake_bytes
from model.intake.pixels import to_npz
from model.prompt import DEFAULT_LANGUAGE, to_chat_messages, user_turn
from model.turn import TurnOutcome, TurnStream
from storage import (
    Database,
    InvalidInput,
    MessageRecord,
    MessageRole,
    NewAttachment,
    NewImage,
    NotFound,
    Uploads,
    UserRecord,
    VariantRecord,
    add_assistant_message,
    add_user_message,
    check_user_message,
    check_writable,
    get_variant_by_name,
    history,
    list_active_variants,
    record_audit,
    start_consultation,
    update_assistant_message,
)

#: Title of a new consultation: the start of its first message as plain text, at most this
#: many characters (one line of the consultation list).
TITLE_CHARS = 60
#: Longest a streamed answer's readers wait between updates: smooth to the eye (20 per second),
#: and it bounds the per-token cost of sending updates (Gradio's diff, postprocess and SSE) when
#: tokens come fast.
UPDATE_INTERVAL_S = 0.05
#: Answers streaming at once that each get updates every `UPDATE_INTERVAL_S`; with more, every
#: one's interval grows in proportion, so the server sends about as many updates per second in
#: all (16 answers at 20 updates per second each took a third of the app's CPU on 2 cores, CPU
#: that new turns waited for; at 10 per second the app used 4.5 -> 3.2 CPU-s per batch).
FULL_RATE_STREAMS = 8


class UploadRejected(IntakeError):
    """One or more files of a turn could not be taken in; `errors` has one line per file."""

    user_message = "Some files could not be used."

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def to_new_attachment(result: IntakeResult) -> NewAttachment:
    """An intake result as storage keeps it: derived, de-identified images and text only."""
    return NewAttachment(
        sha256=result.sha256,
        kind=result.kind,
        mime=result.mime,
        size_bytes=result.size_bytes,
        deidentified=result.deidentified,
        original_name=result.filename,
        images=[
            NewImage(im.label, im.image.width, im.image.height, *stored_image(im))
            for im in result.images
        ],
        deid_report=result.deid_report,
        burned_in_annotation=result.burned_in_annotation,
        text=result.text,
        page_count=result.page_count,
        pixels=to_npz(result.pixels) if result.pixels is not None else None,  # for the viewer
    )


@dataclass
class Answer:
    """An answer in progress: iterate for text so far, then `Consultations.record` it."""

    consultation_id: int | None
    """None until a new consultation's first turn is stored (see `Consultations.ask`)."""
    variant: VariantRecord
    sampling: SamplingParams
    stream: TurnStream
    history: list[MessageRecord] = field(default_factory=list)
    """The stored messages the answer is to (what the model was sent)."""
    replaces_id: int | None = None
    recorded: MessageRecord | None = field(default=None)
    checkpoint_id: int | None = None
    """The answer's row once its text so far was stored while streaming (`Consultations`)."""
    turn: Future | None = None
    """`ask`: the clinician's turn being stored while the model starts, -> (id, message)."""
    _turn_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __iter__(self) -> Iterator[str]:
        texts = iter(self.stream)
        try:
            if self.turn is not None:
                first = next(texts, None)  # sends the request; the turn is stored meanwhile
                self.stored_turn()  # no answer text is shown before its question is stored
                if first is not None:
                    yield first
            yield from texts
        finally:
            texts.close()  # on Stop or a failed store: ends the model stream (vLLM aborts)

    def stored_turn(self) -> None:
        """Wait for the turn `ask` is storing; raises what storing raised."""
        if self.turn is None:
            return
        cid, msg = self.turn.result()
        with self._turn_lock:  # the page's request and the thread reading the answer (prestart)
            if self.consultation_id is None or not self.history or self.history[-1].id != msg.id:
                self.consultation_id = cid
                self.history.append(msg)

    @property
    def outcome(self) -> TurnOutcome | None:
        return self.stream.outcome


class Consultations:
    """Consultation use cases over one database and the engines of the model variants."""

    def __init__(
        self,
        db: Database,
        engines: EngineRegistry,
        uploads: Uploads | None = None,
        limits: IntakeLimits | None = None,
        *,
        checkpoint_s: float = CHECKPOINT_INTERVAL_S,
    ):
        self.db = db
        self.engines = engines
        self.uploads = uploads if uploads is not None else Uploads()
        """Who uploaded which file (`storage.access.Uploads`): a turn may attach only the
        caller's own uploads."""
        self.limits = limits or IntakeLimits()
        self.checkpoint_s = checkpoint_s
        # `ask` stores turns here: one thread, as SQLite takes one writer at a time anyway.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pulsemind-turns")

    def close(self) -> None:
        """Wait for turns being stored, then end the writer thread."""
        self._writer.shutdown(wait=True)

    def __enter__(self) -> Consultations:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- uploads --------------------------------------------------------------------------

    def take_in(
        self, user: UserRecord, files: Sequence[tuple[str, str | Path]]
    ) -> list[IntakeResult]:
        """Intake every (display name, path) pair; UploadRejected lists each failing file.

        Every path must be one of `user`'s uploads (checked before any file is opened): a
        request cannot make the server read a file its caller did not upload.
        """
        if len(files) > self.limits.max_files_per_turn:
            raise UploadRejected(
                [f"{len(files)} files in one message; at most {self.limits.max_files_per_turn}."]
            )
        for _, path in files:
            self.uploads.require(user.username, path)
        results, errors = [], []
        for name, path in files:
            try:
                data = Path(path).read_bytes()
                results.append(intake_bytes(data, name, limits=self.limits))
            except IntakeError as exc:
                errors.append(f"{name}: {exc.detail}")
            except OSError as exc:
                errors.append(f"{name}: could not be read ({exc.strerror}).")
        if errors:
            raise UploadRejected(errors)
        return results

    # --- turns ----------------------------------------------------------------------------

    def add_turn(
        self,
        user: UserRecord,
        consultation_id: int | None,
        text: str,
        files: Sequence[tuple[str, str | Path]] = (),
    ) -> tuple[int, MessageRecord]:
        """Store the clinician's message (and its uploads); create the consultation if needed."""
        text = _turn_text(text, files)
        if consultation_id is not None:
            check_writable(self.db, consultation_id, user.id)
        results = self.take_in(user, files)  # before any write: a bad file changes nothing
        return self._store_turn(user, consultation_id, text, results)

    def ask(
        self,
        user: UserRecord,
        consultation_id: int | None,
        text: str,
        files: Sequence[tuple[str, str | Path]] = (),
        variant_name: str | None = None,
        *,
        language: str = DEFAULT_LANGUAGE,
    ) -> Answer:
        """`add_turn` and `answer` in one, overlapped: the model request goes out while the turn
        is written, and the answer's first text is held back until the turn is stored.
        `language` picks the system prompt (`model.prompt.SYSTEM_PROMPTS`).

        Writes to SQLite are one at a time; when many clinicians send at once, storing first
        would hand the model their questions one by one, each after the writes queued before
        it. Everything that can refuse the turn (files, consultation, variant) is checked
        before the request; if storing still fails, the model stream is closed and the error
        raised from the iteration.
        """
        text = _turn_text(text, files)
        if consultation_id is not None:
            check_writable(self.db, consultation_id, user.id)
        results = self.take_in(user, files)
        records = []
        if consultation_id is not None:
            records = self.chat_history(user, consultation_id, with_png=True)
        atts = [(r.kind, r.page_count, r.text) for r in results]
        images = [for_model(im) for r in results for im in r.images]
        messages = [*to_chat_messages(records, language=language), user_turn(text, atts, images)]
        answer = self._answer_to(consultation_id, records, messages, variant_name)
        answer.turn = self._writer.submit(self._store_turn, user, consultation_id, text, results)
        return answer

    def _store_turn(
        self, user: UserRecord, consultation_id: int | None, text: str, results: list[IntakeResult]
    ) -> tuple[int, MessageRecord]:
        attachments = [to_new_attachment(r) for r in results]
        if consultation_id is None:  # a consultation starts with its first message (one write)
            title = title_from(text) or (f"{len(results)} file(s)" if results else None)
            started, msg = start_consultation(self.db, user.id, title, text, attachments)
            consultation_id = started.id
        else:
            msg = add_user_message(self.db, consultation_id, user.id, text, attachments)
        if results:
            record_audit(
                self.db,
                "upload",
                user_id=user.id,
                target_type="consultation",
                target_id=str(consultation_id),
                detail={"kinds": [r.kind for r in results], "sha256": [r.sha256 for r in results]},
            )
        return consultation_id, msg

    def variant(self, name: str | None) -> VariantRecord:
        if name:
            v = get_variant_by_name(self.db, name)
            if v is None or not v.active:
                raise NotFound(f"variant {name!r} unknown or inactive",
                               user_message=f"No active model variant named {name!r}.")
            return v
        active = list_active_variants(self.db)
        if not active:
            raise NotFound("no active variant", user_message="No model variant is active.")
        return active[0]

    def chat_history(
        self, user: UserRecord, consultation_id: int, *, with_png: bool = False
    ) -> list[MessageRecord]:
        """The consultation as the user may read it; image bytes only `with_png` (prompts)."""
        return history(self.db, consultation_id, user_id=user.id, with_png=with_png)

    def answer(
        self,
        user: UserRecord,
        consultation_id: int,
        variant_name: str | None = None,
        sampling: SamplingParams | None = None,
        *,
        regenerate: bool = False,
        language: str = DEFAULT_LANGUAGE,
    ) -> Answer:
        """Start the model's answer to the consultation so far (lazy: nothing runs until iterated).
        `language` picks the system prompt (`model.prompt.SYSTEM_PROMPTS`).

        With `regenerate`, the current last answer is replaced (kept in the database, superseded).
        Only the consultation's owner may ask (an admin reads, never answers, there).
        """
        check_writable(self.db, consultation_id, user.id)
        records = self.chat_history(user, consultation_id, with_png=True)
        replaces = None
        if records and records[-1].role is MessageRole.ASSISTANT:
            if not regenerate:
                raise InvalidInput("last message answered", user_message="The last message already "
                                   "has an answer; regenerate it instead.")
            replaces = records[-1].id
            records = records[:-1]
        if not records or records[-1].role is not MessageRole.USER:
            raise InvalidInput("no question", user_message="There is no question to answer yet.")
        return self._answer_to(consultation_id, records,
                               to_chat_messages(records, language=language), variant_name,
                               sampling, replaces_id=replaces)  # fmt: skip

    def _answer_to(
        self,
        consultation_id: int | None,
        records: list[MessageRecord],
        messages: list[ChatMessage],
        variant_name: str | None,
        sampling: SamplingParams | None = None,
        *,
        replaces_id: int | None = None,
    ) -> Answer:
        """The variant's (lazy) answer to `messages`, with its sampling unless given."""
        variant = self.variant(variant_name)
        sampling = sampling or SamplingParams(**(variant.sampling_defaults or {}))
        engine, model = self.engines.for_variant(variant)
        stream = TurnStream(engine, messages, sampling, model=model,
                            context={"consultation": consultation_id, "variant": variant.name})  # fmt: skip
        return Answer(consultation_id, variant, sampling, stream, records, replaces_id=replaces_id)

    def streamed(self, user: UserRecord, answer: Answer) -> Iterator[str]:
        """The answer's text as it grows (throttled), recorded when it ends however it ends.

        Close it when done reading (`contextlib.closing`): on Stop that ends the model stream
        and fixes the partial text before it is stored.
        """
        texts = throttled(answer)
        saved_at = time.monotonic()
        try:
            for text in texts:
                yield text
                if text and time.monotonic() - saved_at >= self.checkpoint_s:
                    self._checkpoint(user, answer, text)
                    saved_at = time.monotonic()
        finally:
            texts.close()
            self.record(user, answer)

    def _checkpoint(self, user: UserRecord, answer: Answer, text: str) -> None:
        """Store the text shown so far as a `cut_off` answer (then update it): if the app dies
        mid-answer, what the clinician read is kept, marked cut off. `record` finishes it."""
        if answer.checkpoint_id is None:
            msg = add_assistant_message(
                self.db, answer.consultation_id, text, user_id=user.id,
                model_variant_id=answer.variant.id, sampling_params=answer.sampling.to_dict(),
                latency_ms=None, first_token_ms=None, prompt_tokens=None,
                completion_tokens=None, finish_reason="cut_off", replaces_id=answer.replaces_id,
            )  # fmt: skip
            answer.checkpoint_id = msg.id
        else:
            update_assistant_message(self.db, answer.checkpoint_id, text, user_id=user.id,
                                     finish_reason="cut_off")  # fmt: skip

    def record(self, user: UserRecord, answer: Answer) -> MessageRecord | None:
        """Store the answer however it ended (once) and audit it.

        An attempt that produced no text at all (server down, stopped before the first token)
        is audited but not stored as a message: it would only hide the previous answer.
        """
        if answer.recorded is not None:
            return answer.recorded
        try:
            answer.stored_turn()
        except Exception as exc:  # noqa: BLE001 - raised (and shown) where the answer was iterated
            logger.warning("answer not recorded: its turn could not be stored ({}: {})",
                           type(exc).__name__, getattr(exc, "detail", exc))  # fmt: skip
            return None
        out = answer.outcome or TurnOutcome(text="", finish_reason="cancelled")
        log = logger.bind(consultation=answer.consultation_id, variant=answer.variant.name)
        detail = {"variant": answer.variant.name, "finish_reason": out.finish_reason}
        outcome = "ok" if out.ok or out.finish_reason == "cancelled" else "error"
        if not out.text and answer.checkpoint_id is None:
            record_audit(self.db, "answer", user_id=user.id, target_type="consultation",
                         target_id=str(answer.consultation_id), outcome=outcome,
                         detail=detail)  # fmt: skip
            log.info("answer attempt not stored: {} with no text", out.finish_reason)
            return None
        outcome_fields = dict(
            user_id=user.id,
            latency_ms=_ms(out.latency_s),
            first_token_ms=_ms(out.first_token_s),
            prompt_tokens=out.prompt_tokens,
            completion_tokens=out.completion_tokens,
            finish_reason=out.finish_reason,
            error=out.error.user_message if out.error else None,
        )
        if answer.checkpoint_id is not None:  # stored while streaming: finish that row
            msg = update_assistant_message(
                self.db, answer.checkpoint_id, out.text, **outcome_fields
            )
        else:
            msg = add_assistant_message(
                self.db, answer.consultation_id, out.text, model_variant_id=answer.variant.id,
                sampling_params=answer.sampling.to_dict(), replaces_id=answer.replaces_id,
                **outcome_fields,
            )  # fmt: skip
        answer.recorded = msg
        record_audit(self.db, "answer", user_id=user.id, target_type="message",
                     target_id=str(msg.id), outcome=outcome, detail=detail)  # fmt: skip
        log.info("answer recorded: {} ({} chars)", out.finish_reason, len(out.text))
        return msg


#: Markdown taken out of a title, in order: (pattern, replacement).
_MARKDOWN = [
    (re.compile(r"^\s*(```|~~~).*$", re.M), ""),  # code fences
    (re.compile(r"^\s*([-*_]\s*){3,}$", re.M), ""),  # horizontal rules
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images: their alt text
    (re.compile(r"\[([^\]]*)\](\([^)]*\)|\[[^\]]*\])"), r"\1"),  # links: their text
    (re.compile(r"<(https?://[^>\s]+)>"), r"\1"),  # autolinks
    (re.compile(r"</?[A-Za-z][^>]*>"), ""),  # HTML tags
    (re.compile(r"^\s{0,3}(>\s?)+", re.M), ""),  # block quotes
    (re.compile(r"^\s{0,3}#{1,6}\s+|\s+#+\s*$", re.M), ""),  # headings
    (re.compile(r"^\s*([-*+]|\d{1,9}[.)])\s+(\[[ xX]\]\s+)?", re.M), ""),  # list markers
    (re.compile(r"(\*\*|__|~~)(?=\S)(.+?)(?<=\S)\1"), r"\2"),  # bold, strikethrough
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),  # *italic*
    (re.compile(r"(?<!\w)_(?=\S)(.+?)(?<=\S)_(?!\w)"), r"\1"),  # _italic_ (not snake_case)
    (re.compile(r"`+"), ""),  # inline code marks
]
#: A backslash-escaped markdown character stands for itself: hidden from `_MARKDOWN` meanwhile
#: as a private-use character (U+E000 + its code).
_ESCAPED = re.compile(r"\\([\\`*_{}\[\]()#+\-.!>~|])")
_HIDDEN = re.compile("[\ue000-\ue07f]")


def title_from(text: str, limit: int = TITLE_CHARS) -> str:
    """A consultation's title from its first question: markdown taken out, one line of plain
    text, at most `limit` characters, cut at a word boundary (with "…") when longer.

    >>> title_from("## **Chest pain** since [yesterday](http://x), see `ECG`")
    'Chest pain since yesterday, see ECG'
    """
    plain = _ESCAPED.sub(lambda m: chr(0xE000 + ord(m.group(1))), text or "")
    for pattern, replacement in _MARKDOWN:
        plain = pattern.sub(replacement, plain)
    plain = _HIDDEN.sub(lambda m: chr(ord(m.group()) - 0xE000), " ".join(plain.split()))
    if len(plain) <= limit:
        return plain
    cut = plain[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:  # a word boundary not too far back (text without spaces: none)
        cut = cut[:space]
    return cut.rstrip(" ,;:.-–—") + "…"


def _turn_text(text: str | None, files: Sequence) -> str:
    """The turn's text, refused before anything is stored or asked (a new consultation is
    created only for a turn it can hold)."""
    text = (text or "").strip()
    if not text and not files:
        raise InvalidInput("empty turn", user_message="Type a message or attach a file.")
    check_user_message(text, len(files))
    return text


class _Pace:
    """How many answers stream right now, and so how often each may update."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.active += n

    def interval(self, base_s: float) -> float:
        return base_s * max(1.0, self.active / FULL_RATE_STREAMS)


_PACE = _Pace()


def throttled(texts: Iterable[str], interval_s: float = UPDATE_INTERVAL_S, *,
              clock: Callable[[], float] = time.monotonic) -> Iterator[str]:  # fmt: skip
    """The texts, at most one per `interval_s` (the first at once; longer apart while more than
    `FULL_RATE_STREAMS` answers stream at once); closing it closes `texts`.

    The last text may be skipped: callers show the recorded answer when the stream ends.
    """
    it = iter(texts)
    last = 0.0
    _PACE.add(1)
    try:
        for text in it:
            now = clock()
            if now - last >= _PACE.interval(interval_s):
                last = now
                yield text
    finally:
        _PACE.add(-1)
        close = getattr(it, "close", None)
        if close is not None:
            close()  # on Stop: ends the model stream and fixes the partial text first


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(round(seconds * 1000))
