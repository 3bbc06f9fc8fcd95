"""One answer of a consultation, streamed, with an outcome that is always recordable.

`TurnStream` wraps `ChatEngine.stream` for callers that must record whatever happened — the
Consult tab and the tests: iterate it for the text so far; afterwards (or after closing it early)
`outcome` says how the answer ended: complete, cut off by a dying server (partial text kept),
cancelled by the user, or failed before any text (with the typed error to show).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from loguru import logger

from model.chat import ChatEngine, ChatMessage, Completion, Delta, FinishReason, SamplingParams
from model.errors import ModelDiedMidAnswer, ModelError


@dataclass
class TurnOutcome:
    """How an answer ended; `error` is set unless it finished normally."""

    text: str
    finish_reason: FinishReason
    error: ModelError | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    first_token_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.finish_reason in ("stop", "length")


class TurnStream:
    """Iterate for the accumulated answer text; read `outcome` when done or closed."""

    def __init__(
        self,
        engine: ChatEngine,
        messages: list[ChatMessage],
        sampling: SamplingParams,
        *,
        model: str | None = None,
        context: dict | None = None,
    ):
        self.engine, self.messages, self.sampling, self.model = engine, messages, sampling, model
        self.context = context or {}
        self.outcome: TurnOutcome | None = None
        self._text = ""
        self._t0 = 0.0
        self._first: float | None = None

    def __iter__(self) -> Iterator[str]:
        self._t0 = time.perf_counter()
        log = logger.bind(**self.context)
        events = self.engine.stream(self.messages, self.sampling, model=self.model)
        try:
            for ev in events:
                if isinstance(ev, Delta):
                    if ev.index == 0:
                        if self._first is None:
                            self._first = time.perf_counter() - self._t0
                        self._text += ev.text
                        yield self._text
                elif isinstance(ev, Completion):
                    self.outcome = TurnOutcome(
                        text=ev.text,
                        finish_reason=ev.finish_reason,
                        prompt_tokens=ev.prompt_tokens,
                        completion_tokens=ev.completion_tokens,
                        latency_s=ev.latency_s,
                        first_token_s=ev.first_token_s,
                    )
        except ModelDiedMidAnswer as exc:
            log.warning("answer cut off after {} chars: {}", len(exc.partial), exc.detail)
            self._end(exc.partial or self._text, "cut_off", exc)
        except ModelError as exc:
            log.warning("model error {}: {}", type(exc).__name__, exc.detail)
            self._end(self._text, "cut_off" if self._text else "error", exc)
        finally:
            if hasattr(events, "close"):  # closing early closes the HTTP stream: the server stops
                events.close()
            if self.outcome is None:  # closed early by the caller (stop button, client gone)
                self._end(self._text, "cancelled", None)

    def _end(self, text: str, reason: FinishReason, error: ModelError | None) -> None:
        self.outcome = TurnOutcome(
            text=text,
            finish_reason=reason,
            error=error,
            latency_s=time.perf_counter() - self._t0,
            first_token_s=self._first,
        )

    def run(self) -> TurnOutcome:
        """Consume the whole stream and return the outcome."""
        for _ in self:
            pass
        assert self.outcome is not None
        return self.outcome
