"""The one chat interface every model backend implements, and the data it passes around.

A `ChatEngine` turns a list of `ChatMessage` (text and images, OpenAI's content-part shape)
into streamed `Delta`s and a final `Completion`. Two implementations:
`model.openai_engine.OpenAIEngine` (vLLM or any OpenAI-compatible server) and
`model.embedded.EmbeddedEngine` (in-process transformers on the demo model).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from model.images import ModelImage

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cut_off", "cancelled", "error"]


@dataclass
class ChatMessage:
    """One turn: text plus images (already de-identified and scaled by intake).

    An image is pixels (`PIL.Image`) or an `EncodedImage` (the upload's own bytes, sent as
    they are while they fit the model's pixel budget): see `model.images`."""

    role: Role
    text: str
    images: list[ModelImage] = field(default_factory=list)


@dataclass
class SamplingParams:
    """Sampling settings sent with each request (stored with every answer)."""

    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 512
    seed: int | None = None
    min_tokens: int = 0
    """The end-of-answer token is held back until this many tokens (vLLM's `min_tokens`):
    benchmarks and tests that need an answer of a known least length."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Delta:
    """A piece of streamed text for sample `index`."""

    text: str
    index: int = 0


@dataclass
class Completion:
    """A finished sample."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    first_token_s: float | None = None
    index: int = 0


class ChatEngine(Protocol):
    """What the app needs of a model backend."""

    #: Label shown to users (e.g. "demo model" for the embedded engine).
    label: str

    def stream(
        self, messages: list[ChatMessage], sampling: SamplingParams, *, model: str | None = None
    ) -> Iterator[Delta | Completion]:
        """Yield `Delta`s as text arrives, then one `Completion`. Raises `ModelError`s."""
        ...

    def complete(
        self,
        messages: list[ChatMessage],
        sampling: SamplingParams,
        *,
        n: int = 1,
        model: str | None = None,
    ) -> list[Completion]:
        """Return `n` independent samples. Raises `ModelError`s."""
        ...
