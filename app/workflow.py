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

import io
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger
from PIL import Image

from app.engines import EngineRegistry
from model.chat import ChatMessage, SamplingParams
from model.errors import IntakeError
from model.intake import IntakeLimits, IntakeResult, intake_bytes
from model.turn import TurnOutcome, TurnStream
from storage import (
    Database,
    InvalidInput,
    MessageRecord,
    MessageRole,
    NewAttachment,
    NewImage,
    NotFound,
    PermissionDenied,
    UserRecord,
    VariantRecord,
    add_assistant_message,
    add_user_message,
    create_consultation,
    get_consultation,
    get_variant_by_name,
    history,
    list_active_variants,
    record_audit,
)

#: What the model is told it is. Kept short: the demo model has a small context.
SYSTEM_PROMPT = (
    "You are PulseMind, a clinical consultation assistant for clinicians. Ask for missing "
    "information that matters clinically, be medically accurate, useful and clear."
)
#: Title of a new consultation: the start of its first message.
TITLE_CHARS = 60
#: Longest a streamed answer's readers wait between updates: smooth to the eye (20 per second),
#: and it bounds the per-token cost of sending updates (Gradio's diff, postprocess and SSE) when
#: tokens come fast.
UPDATE_INTERVAL_S = 0.05


class UploadRejected(IntakeError):
    """One or more files of a turn could not be taken in; `errors` has one line per file."""

    user_message = "Some files could not be used."

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


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
            NewImage(im.label, im.image.width, im.image.height, png_bytes(im.image))
            for im in result.images
        ],
        deid_report=result.deid_report,
        burned_in_annotation=result.burned_in_annotation,
        text=result.text,
        page_count=result.page_count,
    )


def attachment_context(position: int, kind: str, page_count: int | None, text: str | None) -> str:
    """What the model reads about an attachment besides its pixels (no file names: they can hold names)."""
    parts = [f"[Attachment {position + 1}: {kind}"]
    if page_count:
        parts.append(f", {page_count} pages")
    parts.append("]")
    if text:
        parts.append(f"\n{text}")
    return "".join(parts)


def user_turn(text: str, attachments: Sequence[tuple[str, int | None, str | None]],
              images: list[Image.Image]) -> ChatMessage:  # fmt: skip
    """A clinician's turn as the model reads it: one context line per attachment (kind, pages,
    text), then the message; the attachments' images."""
    context = "\n".join(attachment_context(i, *a) for i, a in enumerate(attachments))
    return ChatMessage("user", f"{context}\n{text}".strip() if context else text, images)


def to_chat_messages(records: Sequence[MessageRecord]) -> list[ChatMessage]:
    """Stored history (with PNGs loaded) as the messages a model receives."""
    out = [ChatMessage("system", SYSTEM_PROMPT)]
    for m in records:
        if m.role is MessageRole.SYSTEM:
            continue
        if m.role is MessageRole.ASSISTANT:
            if m.text:  # a failed answer with no text is not part of the dialogue
                out.append(ChatMessage("assistant", m.text))
            continue
        images = [
            Image.open(io.BytesIO(img.png))
            for att in m.attachments
            for img in att.images
            if img.png
        ]
        atts = [(a.kind.value, a.page_count, a.text) for a in m.attachments]
        out.append(user_turn(m.text, atts, images))
    return out


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
    turn: Future | None = None
    """`ask`: the clinician's turn being stored while the model starts, -> (id, message)."""

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
        if self.consultation_id is None or not self.history or self.history[-1].id != msg.id:
            self.consultation_id = cid
            self.history.append(msg)

    @property
    def outcome(self) -> TurnOutcome | None:
        return self.stream.outcome


class Consultations:
    """Consultation use cases over one database and the engines of the model variants."""

    def __init__(self, db: Database, engines: EngineRegistry, limits: IntakeLimits | None = None):
        self.db = db
        self.engines = engines
        self.limits = limits or IntakeLimits()
        # `ask` stores turns here: one thread, as SQLite takes one writer at a time anyway.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pulsemind-turns")

    # --- uploads --------------------------------------------------------------------------

    def take_in(self, files: Sequence[tuple[str, str | Path]]) -> list[IntakeResult]:
        """Intake every (display name, path) pair; UploadRejected lists each failing file."""
        if len(files) > self.limits.max_files_per_turn:
            raise UploadRejected(
                [f"{len(files)} files in one message; at most {self.limits.max_files_per_turn}."]
            )
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
        results = self.take_in(files)  # before any write: a bad file changes nothing
        if consultation_id is not None:
            get_consultation(self.db, consultation_id, user.id)  # ownership check
        return self._store_turn(user, consultation_id, text, results)

    def ask(
        self,
        user: UserRecord,
        consultation_id: int | None,
        text: str,
        files: Sequence[tuple[str, str | Path]] = (),
        variant_name: str | None = None,
    ) -> Answer:
        """`add_turn` and `answer` in one, overlapped: the model request goes out while the turn
        is written, and the answer's first text is held back until the turn is stored.

        Writes to SQLite are one at a time; when many clinicians send at once, storing first
        would hand the model their questions one by one, each after the writes queued before
        it. Everything that can refuse the turn (files, consultation, variant) is checked
        before the request; if storing still fails, the model stream is closed and the error
        raised from the iteration.
        """
        text = _turn_text(text, files)
        results = self.take_in(files)
        records = []
        if consultation_id is not None:
            if get_consultation(self.db, consultation_id, user.id).owner_id != user.id:
                raise PermissionDenied("Only the clinician who owns a consultation can add to it.")
            records = self.chat_history(user, consultation_id, with_png=True)
        atts = [(r.kind, r.page_count, r.text) for r in results]
        images = [im.image for r in results for im in r.images]
        messages = [*to_chat_messages(records), user_turn(text, atts, images)]
        answer = self._answer_to(consultation_id, records, messages, variant_name)
        answer.turn = self._writer.submit(self._store_turn, user, consultation_id, text, results)
        return answer

    def _store_turn(
        self, user: UserRecord, consultation_id: int | None, text: str, results: list[IntakeResult]
    ) -> tuple[int, MessageRecord]:
        if consultation_id is None:
            title = text[:TITLE_CHARS] or f"{len(results)} file(s)"
            consultation_id = create_consultation(self.db, user.id, title).id
        msg = add_user_message(
            self.db, consultation_id, user.id, text, [to_new_attachment(r) for r in results]
        )
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
                raise NotFound(f"No active model variant named {name!r}.")
            return v
        active = list_active_variants(self.db)
        if not active:
            raise NotFound("No model variant is active.")
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
    ) -> Answer:
        """Start the model's answer to the consultation so far (lazy: nothing runs until iterated).

        With `regenerate`, the current last answer is replaced (kept in the database, superseded).
        """
        records = self.chat_history(user, consultation_id, with_png=True)
        replaces = None
        if records and records[-1].role is MessageRole.ASSISTANT:
            if not regenerate:
                raise InvalidInput("The last message already has an answer; regenerate it instead.")
            replaces = records[-1].id
            records = records[:-1]
        if not records or records[-1].role is not MessageRole.USER:
            raise InvalidInput("There is no question to answer yet.")
        return self._answer_to(consultation_id, records, to_chat_messages(records), variant_name,
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
        try:
            yield from texts
        finally:
            texts.close()
            self.record(user, answer)

    def record(self, user: UserRecord, answer: Answer) -> MessageRecord | None:
        """Store the answer however it ended (once) and audit it.

        An attempt that produced no text at all (server down, stopped before the first token)
        is audited but not stored as a message: it would only hide the previous answer.
        """
        if answer.recorded is not None:
            return answer.recorded
        try:
            answer.stored_turn()
        except Exception:  # noqa: BLE001 - raised (and shown) where the answer was iterated
            logger.warning("answer not recorded: its turn could not be stored")
            return None
        out = answer.outcome or TurnOutcome(text="", finish_reason="cancelled")
        log = logger.bind(consultation=answer.consultation_id, variant=answer.variant.name)
        detail = {"variant": answer.variant.name, "finish_reason": out.finish_reason}
        outcome = "ok" if out.ok or out.finish_reason == "cancelled" else "error"
        if not out.text:
            record_audit(self.db, "answer", user_id=user.id, target_type="consultation",
                         target_id=str(answer.consultation_id), outcome=outcome,
                         detail=detail)  # fmt: skip
            log.info("answer attempt not stored: {} with no text", out.finish_reason)
            return None
        msg = add_assistant_message(
            self.db,
            answer.consultation_id,
            out.text,
            model_variant_id=answer.variant.id,
            sampling_params=answer.sampling.to_dict(),
            latency_ms=_ms(out.latency_s),
            first_token_ms=_ms(out.first_token_s),
            prompt_tokens=out.prompt_tokens,
            completion_tokens=out.completion_tokens,
            finish_reason=out.finish_reason,
            error=out.error.user_message if out.error else None,
            replaces_id=answer.replaces_id,
        )
        answer.recorded = msg
        record_audit(self.db, "answer", user_id=user.id, target_type="message",
                     target_id=str(msg.id), outcome=outcome, detail=detail)  # fmt: skip
        log.info("answer recorded: {} ({} chars)", out.finish_reason, len(out.text))
        return msg


def _turn_text(text: str | None, files: Sequence) -> str:
    text = (text or "").strip()
    if not text and not files:
        raise InvalidInput("Type a message or attach a file.")
    return text


def throttled(texts: Iterable[str], interval_s: float = UPDATE_INTERVAL_S) -> Iterator[str]:
    """The texts, at most one per `interval_s` (the first at once); closing it closes `texts`.

    The last text may be skipped: callers show the recorded answer when the stream ends.
    """
    it = iter(texts)
    last = 0.0
    try:
        for text in it:
            now = time.monotonic()
            if now - last >= interval_s:
                last = now
                yield text
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()  # on Stop: ends the model stream and fixes the partial text first


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(round(seconds * 1000))
