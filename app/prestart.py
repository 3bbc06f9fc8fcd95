"""Answers that start with the turn that asks for them, before the page asks to see them.

The browser's Enter is two events: `/send` stores the turn, then `/answer` streams the answer.
Between them lie a round trip to the page and Gradio's queue (~50 ms with one clinician,
~200 ms and more with sixteen on 2 cores); starting the model only in `/answer` adds all of it
to the clinician's wait for the first words. So when `/send` knows the model variant it
asks for the answer at once, as `/consult` does (`Consultations.ask`: the model request goes
out while the turn is stored), on a thread that reads it and stores it as
`Consultations.streamed` does (checkpoints while it streams, the answer however it ends);
`/answer` then follows its text from where it is (`Prestarts.take`). An answer nobody follows (the tab
was closed) is still stored, and is there when the consultation is reopened.

`/answer` asking for another variant than the one started stops the started one (stored as
stopped if it had text) and answers anew, as a new version of the answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from app.workflow import Answer, Consultations
from storage import UserRecord

#: How long an ended answer nobody followed waits for its `/answer` before it is forgotten (it
#: is stored either way; `/answer` after that says the question has an answer).
KEEP_S = 120.0
#: Longest a stop waits for an answer to end by itself (and be stored): the Stop button, before
#: the page's event is cancelled outright (a model that sends nothing more); `take`, for a
#: started answer of another variant, before answering anew.
STOP_WAIT_S = 5.0


@dataclass
class Running:
    """An answer streaming to a page: Stop asks it to end, and waits until it has (stored)."""

    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class Prestarted:
    """One answer read on its own thread: its text so far, for whoever follows it."""

    def __init__(self, flow: Consultations, user: UserRecord, answer: Answer):
        self.answer, self.run = answer, Running()
        self._flow, self._user = flow, user
        self._changed = threading.Condition()
        self._text: str | None = None
        self._version = 0
        self._ended_at: float | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._read, name="pulsemind-prestart", daemon=True).start()

    def _read(self) -> None:
        try:
            with closing(self._flow.streamed(self._user, self.answer)) as texts:
                for text in texts:
                    with self._changed:
                        self._text, self._version = text, self._version + 1
                        self._changed.notify_all()
                    if self.run.stop.is_set():
                        break  # closing the stream ends the model request; the text is stored
        except Exception as exc:  # noqa: BLE001 - raised to whoever follows the answer
            logger.warning("prestarted answer (consultation {}) failed: {}: {}",
                           self.answer.consultation_id, type(exc).__name__,
                           getattr(exc, "detail", exc))  # fmt: skip
            self._error = exc
        finally:
            with self._changed:
                self._ended_at = time.monotonic()
                self._changed.notify_all()
            self.run.done.set()

    def texts(self) -> Iterator[str]:
        """The text as it grows, from the latest (each once), until the answer is stored;
        raises what reading it raised."""
        seen = 0
        while True:
            with self._changed:
                while self._version == seen and self._ended_at is None:
                    self._changed.wait()
                if self._version != seen:
                    text, seen = self._text, self._version
                elif self._error is not None:
                    raise self._error
                else:
                    return
            yield text  # type: ignore[misc]

    def expired(self, now: float) -> bool:
        return self._ended_at is not None and now - self._ended_at > KEEP_S


class Prestarts:
    """The answers `/send` started, per (user, consultation), until `/answer` takes them."""

    def __init__(self, flow: Consultations):
        self.flow = flow
        self._lock = threading.Lock()
        self._started: dict[tuple[int, int], Prestarted] = {}

    def ask(self, user: UserRecord, consultation_id: int | None, text: str,
            files: Sequence[tuple[str, str | Path]], variant_name: str,
            *, language: str) -> Prestarted:  # fmt: skip
        """`Consultations.ask`, read at once on its own thread: the model request goes out while
        the turn is stored. Returns once the turn is stored (`answer.consultation_id`, and
        `answer.history` ends with the turn); refuses (and stores nothing) as `ask` does:
        files, consultation, variant."""
        answer = self.flow.ask(user, consultation_id, text, files, variant_name, language=language)
        started = Prestarted(self.flow, user, answer)
        answer.stored_turn()  # what storing raised, raised here (the model stream then ends)
        cid = answer.consultation_id
        assert cid is not None  # set by stored_turn
        now = time.monotonic()
        with self._lock:
            for key in [k for k, p in self._started.items() if p.expired(now)]:
                del self._started[key]
            # an older one for this consultation is for an earlier turn: it goes on (and is
            # stored) unfollowed
            self._started[(user.id, cid)] = started
        return started

    def running(self, user: UserRecord, consultation_id: int | None) -> Running | None:
        """Stop's handle on a started answer that no page follows yet."""
        with self._lock:
            started = self._started.get((user.id, consultation_id or 0))
        return started.run if started is not None else None

    def take(self, user: UserRecord, consultation_id: int,
             variant_name: str | None) -> tuple[Prestarted | None, bool]:  # fmt: skip
        """The answer `/send` started here for `user` if it is of `variant_name` (None: any),
        to follow; and whether one of another variant was stopped instead (stored if it had
        text: the caller's new answer then replaces it)."""
        with self._lock:
            started = self._started.pop((user.id, consultation_id), None)
        if started is None:
            return None, False
        if not variant_name or started.answer.variant.name == variant_name:
            return started, False
        started.run.stop.set()
        if not started.run.done.wait(STOP_WAIT_S):
            logger.warning("consultation {}: the prestarted answer of {} did not stop in {:.0f}s",
                           consultation_id, started.answer.variant.name, STOP_WAIT_S)  # fmt: skip
        return None, True
