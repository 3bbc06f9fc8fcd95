"""`ChatEngine` over any OpenAI-compatible server (vLLM in production and in tests).

Streaming, `n` samples, multi-image messages as content parts (images scaled to the model's
pixel budget before they leave this process), timeouts and retries chosen for an interactive
UI, and typed errors (`model.errors`) instead of transport exceptions:

- connection refused / DNS / reset before any answer  -> ModelUnreachable (retried once)
- no first byte within `first_token_timeout_s`         -> ModelTimeout
- a stream that breaks after text arrived             -> ModelDiedMidAnswer(partial=...)
- HTTP 429 (rate limited: a hosted API)               -> waited for (`Retry-After`) and retried
                                                         by the client, then ModelUnreachable
                                                         (retryable: it is not the input's fault)
- other HTTP 4xx (bad image, context too long, unknown model) -> ModelRejectedInput

`complete(n=...)` gives each sample its own token count (vLLM's `return_token_ids`).
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
from loguru import logger

from model.chat import ChatMessage, Completion, Delta, SamplingParams
from model.errors import (
    ModelDiedMidAnswer,
    ModelError,
    ModelRejectedInput,
    ModelTimeout,
    ModelUnreachable,
)
from model.images import DEFAULT_MAX_PIXELS, to_data_url


@dataclass
class OpenAIEngineConfig:
    """How to reach one OpenAI-compatible server."""

    base_url: str
    """Server root with /v1, e.g. http://127.0.0.1:8000/v1."""
    model: str
    """Served model name (the base model, or a LoRA adapter's name)."""
    api_key: str = "EMPTY"
    """vLLM accepts anything unless started with --api-key."""
    label: str | None = None
    """What the UI calls this model; defaults to `model`."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Images are scaled to this many pixels before sending (the model's own budget)."""
    connect_timeout_s: float = 3.0
    """A server that does not accept a connection in 3 s is down for an interactive user."""
    first_token_timeout_s: float = 120.0
    """Longest silence on the socket: covers prefill of a long multi-image prompt on a busy server."""
    retries: int = 1
    """Retries of a request that never reached the model (connection errors, 502/503/504)."""
    sample_token_counts: bool = True
    """Ask vLLM for each sample's token ids when n > 1 (`return_token_ids`), so every sample
    carries its own completion token count; off for servers that refuse vLLM's fields."""
    stream_interval: int | None = None
    """vLLM: send streamed text every this many tokens (the first and last at once); None or 0
    leaves it to the server (every token). Fewer, larger chunks cost less to send and parse."""


def _content(msg: ChatMessage, max_pixels: int) -> str | list[dict]:
    if not msg.images:
        return msg.text
    parts: list[dict] = [
        {"type": "image_url", "image_url": {"url": to_data_url(img, max_pixels)}}
        for img in msg.images
    ]
    if msg.text:
        parts.append({"type": "text", "text": msg.text})
    return parts


def to_openai_messages(
    messages: list[ChatMessage], max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[dict]:
    """ChatMessages as OpenAI chat messages (images as base64 data URL content parts)."""
    return [{"role": m.role, "content": _content(m, max_pixels)} for m in messages]


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One certificate-verifying TLS context for every model and judge client of the process
    (the system's trust store; SSL_CERT_FILE / SSL_CERT_DIR honoured). Left to itself the
    OpenAI client builds one per client, reading the CA bundle each time: 15 ms of CPU on an
    idle core, ~0.1 s on a busy one, and an eval run or a judge makes its clients as it starts
    (py-spy: ~0.2 s of each 3 s `pulsemind bench eval` run at concurrency 16)."""
    return ssl.create_default_context()


def http_client() -> openai.DefaultHttpxClient:
    """An HTTP client for `openai.OpenAI(http_client=...)`: the library's defaults (pool
    limits, redirects), the process's shared TLS context."""
    return openai.DefaultHttpxClient(verify=_tls_context())


class OpenAIEngine:
    """A model behind an OpenAI-compatible HTTP API."""

    def __init__(self, config: OpenAIEngineConfig):
        self.config = config
        self.label = config.label or config.model
        timeout = httpx.Timeout(
            connect=config.connect_timeout_s,
            read=config.first_token_timeout_s,
            write=30.0,
            pool=config.connect_timeout_s,
        )
        self._client = openai.OpenAI(
            base_url=config.base_url,
            api_key=config.api_key,
            timeout=timeout,
            max_retries=config.retries,
            http_client=http_client(),
        )

    def _request(
        self, messages: list[ChatMessage], sampling: SamplingParams, model: str | None
    ) -> dict:
        req: dict = {
            "model": model or self.config.model,
            "messages": to_openai_messages(messages, self.config.max_pixels),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.seed is not None:
            req["seed"] = sampling.seed
        extra = {}  # vLLM's own request fields
        if self.config.stream_interval:
            extra["stream_interval"] = self.config.stream_interval
        if sampling.min_tokens:
            extra["min_tokens"] = sampling.min_tokens
        if extra:
            req["extra_body"] = extra
        return req

    def _translate(self, exc: Exception, partial: str = "") -> ModelError:
        """Map a transport/API exception to our typed error (the one place that knows them)."""
        if partial:
            return ModelDiedMidAnswer(f"stream broke after {len(partial)} chars: {exc}", partial)
        if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
            return ModelTimeout(str(exc))
        if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
            return ModelUnreachable(f"{self.config.base_url}: {exc}")
        if isinstance(exc, openai.APIStatusError):
            if exc.status_code == 429:  # busy, not wrong: the client already waited and retried
                return ModelUnreachable(f"HTTP 429 (rate limited) from {self.config.base_url}")
            if 400 <= exc.status_code < 500:
                return ModelRejectedInput(f"HTTP {exc.status_code}: {api_detail(exc)}")
            return ModelUnreachable(f"HTTP {exc.status_code} from the model server")
        return ModelError(f"{type(exc).__name__}: {exc}")

    def stream(
        self, messages: list[ChatMessage], sampling: SamplingParams, *, model: str | None = None
    ) -> Iterator[Delta | Completion]:
        """Stream one answer. Closing the generator early closes the HTTP stream (vLLM aborts)."""
        req = self._request(messages, sampling, model)
        t0 = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        usage = None
        finish = None
        try:
            # The SDK's stream, its chunks left as parsed JSON: typed chunk objects cost ~0.14 ms
            # each (40x the JSON parse), for every few tokens of every answer the app streams.
            stream = self._client.chat.completions.with_raw_response.create(
                **req, stream=True, stream_options={"include_usage": True}
            ).parse(to=openai.Stream[object])
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            raise self._translate(exc) from exc
        try:
            for chunk in stream:
                if not isinstance(chunk, dict):
                    raise ValueError(f"a stream event that is not an object: {chunk!r:.100}")
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content") or ""
                    if text:
                        if first is None:
                            first = time.perf_counter() - t0
                        parts.append(text)
                        yield Delta(text=text, index=choice.get("index", 0))
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        except (openai.OpenAIError, httpx.HTTPError, ValueError) as exc:
            raise self._translate(exc, "".join(parts)) from exc
        finally:
            stream.close()  # early (Stop): vLLM sees the connection close and aborts
        if finish is None:
            # The server closed the stream cleanly but never said it was done: a cut-off.
            raise ModelDiedMidAnswer("stream ended without a finish reason", "".join(parts))
        yield Completion(
            text="".join(parts),
            finish_reason="length" if finish == "length" else "stop",
            prompt_tokens=(usage or {}).get("prompt_tokens"),
            completion_tokens=(usage or {}).get("completion_tokens"),
            latency_s=time.perf_counter() - t0,
            first_token_s=first,
        )

    def complete(
        self,
        messages: list[ChatMessage],
        sampling: SamplingParams,
        *,
        n: int = 1,
        model: str | None = None,
    ) -> list[Completion]:
        """`n` samples in one request (vLLM shares the prompt's prefill across them), each with
        its own completion token count (None where the server does not say)."""
        req = self._request(messages, sampling, model)
        if n > 1 and self.config.sample_token_counts:
            req["extra_body"] = {**req.get("extra_body", {}), "return_token_ids": True}
        t0 = time.perf_counter()
        try:
            resp = self._client.chat.completions.create(**req, n=n)
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            raise self._translate(exc) from exc
        latency = time.perf_counter() - t0
        usage = resp.usage
        out = [
            Completion(
                text=c.message.content or "",
                finish_reason="length" if c.finish_reason == "length" else "stop",
                prompt_tokens=getattr(usage, "prompt_tokens", None),
                completion_tokens=_sample_tokens(c, usage, n),
                latency_s=latency,
                index=c.index,
            )
            for c in sorted(resp.choices, key=lambda c: c.index)
        ]
        logger.debug("model={} n={} latency={:.2f}s", req["model"], n, latency)
        return out

    def list_models(self) -> list[str]:
        """Names the server serves (base model and loaded adapters)."""
        try:
            return [m.id for m in self._client.models.list()]
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            raise self._translate(exc) from exc


def _sample_tokens(choice, usage, n: int) -> int | None:
    """One sample's completion tokens: the usage total when it is the only sample, else the
    length of its token ids (vLLM's `return_token_ids`); None if the server gave neither."""
    if n == 1:
        return getattr(usage, "completion_tokens", None)
    token_ids = (getattr(choice, "model_extra", None) or {}).get("token_ids")
    return len(token_ids) if isinstance(token_ids, list) else None


def api_detail(exc: openai.APIStatusError, limit: int = 300) -> str:
    """The server's own message in an API error (its JSON body), cut to `limit` characters."""
    body = exc.body
    if isinstance(body, dict):
        msg = body.get("message") or body.get("error", {})
        if isinstance(msg, dict):
            msg = msg.get("message")
        if msg:
            return str(msg)[:limit]
    return str(exc)[:limit]
