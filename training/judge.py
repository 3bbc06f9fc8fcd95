"""The four-dimension judge: which of two answers to the same consultation is better, per
dimension, in ONE call to any OpenAI-compatible endpoint.

    pulsemind judge --a answer_a.txt --b "Take ibuprofen." --context history.txt \\
        --url http://127.0.0.1:8000/v1 --model judge [--both-orders] [--lang zh-CN]

    judge = Judge(JudgeConfig(base_url=URL, model="judge"), cache=db)
    verdict = judge.judge(JudgeItem(a=..., b=..., context=..., reference=...))
    verdict.winners  # {"proactiveness": "a", "accuracy": "tie", "usefulness": "b", ...} or None
    verdicts = judge.judge_many(items)   # all calls at once (bounded), one cache read and write

Why one call for all four dimensions: CRPO judges every (candidate, counterpart) pair of a
step, G x C of them; asking per dimension would be G x C x D calls for the same reading.
The dimensions are the paper's, as in the votes: proactiveness, accuracy, usefulness, language
quality; the reference doctor's reply, when there is one, is shown as a guide.

How a verdict stays usable:
- Fixed structure: the reply is a JSON object `{"proactiveness": "A"|"B"|"tie", ...}`. On vLLM
  it is constrained by structured output (`structured_outputs.regex` matching exactly that
  compact object: with a regex even a random model's reply parses); on hosted APIs by
  `response_format` `json_schema`. `structured="auto"` starts with vLLM's form and switches
  to `response_format` if the server refuses the request (HTTP 400).
- An unusable reply is asked again (`attempts`, at a non-zero temperature after the first),
  then recorded as an error: `Verdict.error`, never counted as a loss.
- HTTP 429 (a hosted judge's rate limit) is waited for, `Retry-After` when the server sends
  one, else exponential backoff, and the call is retried (`rate_limit_waits`); connection
  failures and 5xx are retried with backoff; other 4xx are errors at once.
- Position bias: `both_orders=True` asks (A, B) and (B, A) and keeps a win only when both
  orders agree; otherwise that dimension is a tie.
- The instructions (English and Chinese), the prompt of one comparison and the verdict format
  are in training/judge_prompts.py.
- Cache: each single-order verdict is kept in SQL (`storage.judge_cache`) under the content
  hash of the judge model, prompt language and version, both answers in order, the context,
  the reference and the temperature (`cache_key`); a both-orders verdict reuses single-order
  ones. Errors are not cached.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import random
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import openai
from loguru import logger

from model.openai_engine import api_detail, http_client
from training.judge_prompts import (
    DIMENSIONS,
    LANGUAGES,
    PROMPT_VERSION,
    VERDICT_REGEX,
    VERDICT_SCHEMA,
    WINNERS,
    Language,
    Winner,
    judge_messages,
    parse_verdict,
)

if TYPE_CHECKING:
    import argparse

    from storage import Database

Structured = Literal["auto", "vllm", "json_schema", "none"]

#: Temperature of the retries after an unusable reply when the configured one is 0: greedy
#: decoding would give the same reply again.
RETRY_TEMPERATURE = 0.7
#: Backoff of retried transport failures and of 429s that say nothing: 0.5, 1, 2, ... s, capped.
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
#: Longest single wait a server's Retry-After may ask for.
MAX_RETRY_AFTER_S = 120.0


# --- what is judged and what comes back -------------------------------------------------------


@dataclass(frozen=True)
class JudgeItem:
    """Two answers to the same consultation (`context`: the conversation before them, as text),
    with the reference doctor's reply when there is one."""

    a: str
    b: str
    context: str = ""
    reference: str | None = None


@dataclass(frozen=True)
class Verdict:
    """Per dimension which answer is better ("a": the first given, "b", "tie"), or an error.

    `calls` is the number of HTTP requests this verdict cost (0 when it came from the cache or
    from an identical pair judged in the same batch); `cached` says it was read back."""

    winners: Mapping[str, Winner] | None = None
    error: str | None = None
    calls: int = 0
    cached: bool = False

    def __post_init__(self) -> None:
        if (self.winners is None) == (self.error is None):
            raise ValueError("a Verdict has either winners or an error")
        if self.winners is not None and (
            set(self.winners) != set(DIMENSIONS) or not set(self.winners.values()) <= set(WINNERS)
        ):
            raise ValueError(f"winners must give a/b/tie for each of {DIMENSIONS}")

    @property
    def ok(self) -> bool:
        return self.winners is not None

    @classmethod
    def failed(cls, error: str, calls: int = 0) -> Verdict:
        return cls(error=error, calls=calls)

    def swapped(self) -> Verdict:
        """The same verdict with the two answers' roles exchanged ("a" <-> "b")."""
        if self.winners is None:
            return self
        flip: dict[str, Winner] = {"a": "b", "b": "a", "tie": "tie"}
        return Verdict({d: flip[w] for d, w in self.winners.items()}, None, self.calls, self.cached)


def combine_orders(first: Verdict, second_swapped: Verdict) -> Verdict:
    """Both-orders verdict: `first` judged (A, B); `second_swapped` judged (B, A) and already
    swapped back. A dimension is won only when both agree, else it is a tie."""
    calls = first.calls + second_swapped.calls
    if not first.ok or not second_swapped.ok:
        errors = [v.error for v in (first, second_swapped) if v.error]
        return Verdict.failed("; ".join(errors), calls)
    assert first.winners is not None and second_swapped.winners is not None
    winners: dict[str, Winner] = {
        d: first.winners[d] if first.winners[d] == second_swapped.winners[d] else "tie"
        for d in DIMENSIONS
    }
    return Verdict(winners, None, calls, first.cached and second_swapped.cached)


# --- the judge --------------------------------------------------------------------------------


def _default_api_key() -> str:
    return os.environ.get("PULSEMIND_JUDGE_API_KEY", "EMPTY")


@dataclass
class JudgeConfig:
    """Which endpoint judges, in which language, and how hard it tries."""

    base_url: str
    """OpenAI-compatible server root with /v1 (vLLM, or a hosted API)."""
    model: str
    """The judge model's served name."""
    api_key: str = field(default_factory=_default_api_key)
    """Hosted APIs need one ($PULSEMIND_JUDGE_API_KEY); vLLM accepts anything by default."""
    language: Language = "en"
    """Prompt language: en or zh-CN."""
    both_orders: bool = False
    """Judge (A, B) and (B, A) and keep only consistent wins (two calls per pair)."""
    structured: Structured = "auto"
    """How the reply is constrained: vllm (structured_outputs regex), json_schema
    (response_format), none (prompt only), auto (vllm, then json_schema if refused)."""
    temperature: float = 0.0
    max_tokens: int = 200
    """A verdict is ~20 tokens of JSON for a real tokenizer; the demo model's needs ~70."""
    seed: int | None = 0
    attempts: int = 3
    """Tries of a call whose reply is unusable or that failed in transport, before the error."""
    rate_limit_waits: int = 8
    """How many HTTP 429 answers one call waits out before it is recorded as an error."""
    max_rate_limit_wait_s: float = 600.0
    """Total time one call may spend waiting out 429s."""
    timeout_s: float = 120.0
    """One request's time limit (a busy judge serving a whole CRPO step takes a while)."""
    concurrency: int = 64
    """Calls in flight at once in `judge_many` (one CRPO step is G x C = 40 by default)."""

    def __post_init__(self) -> None:
        if self.language not in LANGUAGES:
            raise ValueError(f"language must be one of {LANGUAGES}, not {self.language!r}")
        if self.structured not in ("auto", "vllm", "json_schema", "none"):
            raise ValueError("structured must be auto, vllm, json_schema or none")
        if self.attempts < 1 or self.concurrency < 1 or self.max_tokens < 1:
            raise ValueError("attempts, concurrency and max_tokens must be at least 1")
        if self.rate_limit_waits < 0 or self.temperature < 0:
            raise ValueError("rate_limit_waits and temperature must not be negative")


def cache_key(config: JudgeConfig, a: str, b: str, context: str, reference: str | None) -> str:
    """The content hash a single-order verdict is cached under (everything that decides it).

    The endpoint's URL is not part of it: a judge model keeps its verdicts when it is served
    elsewhere (a local vLLM gets a new port each start); serve two different judges under
    two different names."""
    payload = {
        "version": PROMPT_VERSION,
        "model": config.model,
        "language": config.language,
        "temperature": config.temperature,
        "a": a,
        "b": b,
        "context": context,
        "reference": reference or "",
    }
    encoded = json.dumps(payload, ensure_ascii=False, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds a 429 asks to wait: `retry-after-ms`, `Retry-After` in seconds or as an HTTP
    date; None if it says nothing usable."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
    value = headers.get("retry-after")
    try:
        when = email.utils.parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None  # neither seconds nor a date
    return None if when is None else max(0.0, when.timestamp() - time.time())


def _backoff(n: int) -> float:
    """Exponential backoff with jitter (so many waiting calls do not return at once)."""
    return min(BACKOFF_START_S * 2**n, BACKOFF_MAX_S) * (0.75 + 0.5 * random.random())


@dataclass(frozen=True)
class _Call:
    """One single-order judge call to make (deduplicated by key within a batch)."""

    key: str
    item: JudgeItem


@dataclass(frozen=True)
class _Outcome:
    """What one single-order call gave: the verdict, and for the cache the reply and latency."""

    verdict: Verdict
    raw: str | None = None
    latency_ms: int | None = None


class Judge:
    """Judges pairs of answers through one OpenAI-compatible endpoint; thread-safe.

    `calls` counts the HTTP requests made so far (retries and 429s included), so a caller
    can tell how many a step cost and that a cached verdict cost none."""

    def __init__(self, config: JudgeConfig, *, cache: Database | None = None):
        self.config = config
        self.cache = cache
        # Retries are ours (429 waits, unusable replies), not the client's.
        self._client = openai.OpenAI(base_url=config.base_url, api_key=config.api_key,
                                     timeout=config.timeout_s, max_retries=0,
                                     http_client=http_client())  # fmt: skip
        self._lock = threading.Lock()
        self._calls = 0
        self._mode: Structured = "vllm" if config.structured == "auto" else config.structured

    @property
    def calls(self) -> int:
        with self._lock:
            return self._calls

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def judge(self, item: JudgeItem) -> Verdict:
        """One pair (two calls with `both_orders`)."""
        return self.judge_many([item])[0]

    def judge_many(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        """Every pair at once: cache read in one query, the missing calls concurrently (at most
        `concurrency` in flight), new verdicts cached in one transaction. Identical calls in
        the batch are made once. One Verdict per item, in order; errors are Verdicts too."""
        plans: list[list[str]] = []
        calls: dict[str, _Call] = {}
        for item in items:
            orders = [item, JudgeItem(item.b, item.a, item.context, item.reference)]
            keys = []
            for one in orders[: 2 if self.config.both_orders else 1]:
                key = cache_key(self.config, one.a, one.b, one.context, one.reference)
                calls.setdefault(key, _Call(key, one))
                keys.append(key)
            plans.append(keys)
        done = self._from_cache(list(calls))
        todo = [c for k, c in calls.items() if k not in done]
        t0 = time.perf_counter()
        if todo:
            workers = min(self.config.concurrency, len(todo))
            with ThreadPoolExecutor(workers, thread_name_prefix="judge") as pool:
                made = dict(zip((c.key for c in todo), pool.map(self._call, todo), strict=True))
            self._to_cache({k: o for k, o in made.items() if o.verdict.ok})
            done.update((k, o.verdict) for k, o in made.items())
        errors = sum(1 for c in todo if not done[c.key].ok)
        logger.info("judge {}: {} pairs, {} judged now, {} from the cache, {} errors, {:.2f}s",
                    self.config.model, len(items), len(todo), len(calls) - len(todo), errors,
                    time.perf_counter() - t0)  # fmt: skip
        charged: set[str] = set()
        out = []
        for keys in plans:
            parts = []
            for key in keys:
                verdict = done[key]
                if key in charged:  # an identical call in this batch: paid for once
                    verdict = Verdict(verdict.winners, verdict.error, 0, verdict.cached)
                charged.add(key)
                parts.append(verdict)
            out.append(parts[0] if len(parts) == 1 else combine_orders(parts[0], parts[1].swapped()))
        return out

    # --- cache ------------------------------------------------------------------------------

    def _from_cache(self, keys: list[str]) -> dict[str, Verdict]:
        if self.cache is None or not keys:
            return {}
        from storage.judge_cache import cached_verdicts

        found = cached_verdicts(self.cache, keys)
        return {k: Verdict(v.winners, None, 0, True) for k, v in found.items()}  # type: ignore[arg-type]

    def _to_cache(self, outcomes: Mapping[str, _Outcome]) -> None:
        if self.cache is None or not outcomes:
            return
        from storage.errors import StorageError
        from storage.judge_cache import NewVerdict, store_verdicts

        cfg = self.config
        entries = [NewVerdict(key, cfg.model, cfg.language, o.verdict.winners or {}, o.raw,
                              o.latency_ms) for key, o in outcomes.items()]  # fmt: skip
        try:
            store_verdicts(self.cache, entries)
        except StorageError as exc:
            # The verdicts in hand are valid; only their reuse is lost. Say so, and go on.
            logger.warning("judge cache: {} verdicts not stored: {}", len(entries), exc.detail)

    # --- one call ---------------------------------------------------------------------------

    def _count(self) -> None:
        with self._lock:
            self._calls += 1

    def _request(self, call: _Call, mode: Structured, attempt: int) -> dict[str, Any]:
        cfg = self.config
        temperature = cfg.temperature if attempt == 0 or cfg.temperature > 0 else RETRY_TEMPERATURE
        req: dict[str, Any] = {
            "model": cfg.model,
            "messages": judge_messages(call.item.a, call.item.b, call.item.context,
                                       call.item.reference, cfg.language),
            "temperature": temperature,
            "max_tokens": cfg.max_tokens,
        }
        if cfg.seed is not None:
            req["seed"] = cfg.seed + attempt
        if mode == "vllm":
            req["extra_body"] = {"structured_outputs": {"regex": VERDICT_REGEX}}
        elif mode == "json_schema":
            req["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "pulsemind_verdict", "schema": VERDICT_SCHEMA,
                                "strict": True},
            }  # fmt: skip
        return req

    def _fall_back(self, mode: Structured) -> Structured | None:
        """After an HTTP 400 with vLLM's structured-output field: response_format, once."""
        if self.config.structured != "auto" or mode != "vllm":
            return None
        with self._lock:
            if self._mode == "vllm":
                logger.warning("judge {}: the server refused structured_outputs; using "
                               "response_format json_schema", self.config.base_url)  # fmt: skip
                self._mode = "json_schema"
        return "json_schema"

    def _call(self, call: _Call) -> _Outcome:
        """One single-order call with its retries (a failure is an error Verdict, not raised)."""
        cfg = self.config
        mode = self._mode
        made = attempts = waits = 0
        waited = 0.0
        problem = "no reply"
        while True:
            made += 1
            self._count()
            t0 = time.perf_counter()
            transient = False
            try:
                resp = self._client.chat.completions.create(**self._request(call, mode, attempts))
            except openai.RateLimitError as exc:
                delay = retry_after_s(exc.response.headers)
                delay = min(delay, MAX_RETRY_AFTER_S) if delay is not None else _backoff(waits)
                if waits >= cfg.rate_limit_waits or waited + delay > cfg.max_rate_limit_wait_s:
                    return _Outcome(Verdict.failed(f"rate limited (HTTP 429) after {waits} "
                                                   f"waits ({waited:.0f}s)", made))  # fmt: skip
                logger.info("judge {}: HTTP 429, waiting {:.1f}s", cfg.base_url, delay)
                time.sleep(delay)
                waits, waited = waits + 1, waited + delay
                continue
            except openai.APIStatusError as exc:
                fallback = self._fall_back(mode) if exc.status_code == 400 else None
                if fallback is not None:
                    mode = fallback
                    continue
                problem = f"HTTP {exc.status_code}: {api_detail(exc, 200)}"
                if exc.status_code not in (408, 409) and exc.status_code < 500:
                    # The same request would be refused again: an error now, not a retry.
                    return _Outcome(Verdict.failed(problem, made))
                transient = True
            except openai.APIConnectionError as exc:  # timeouts too
                problem, transient = f"judge unreachable: {type(exc).__name__}", True
            except openai.OpenAIError as exc:  # a reply the client could not read
                problem = f"bad reply: {type(exc).__name__}"
            else:
                # A body that is not JSON comes back as a plain str, not a ChatCompletion.
                choices = getattr(resp, "choices", None)
                text = choices[0].message.content if choices else None
                winners = parse_verdict(text)
                if winners is not None:
                    latency_ms = round((time.perf_counter() - t0) * 1000)
                    return _Outcome(Verdict(winners, None, made), text, latency_ms)
                problem = "unusable verdict"
            attempts += 1
            if attempts >= cfg.attempts:
                logger.warning("judge {}: {} after {} attempts", cfg.base_url, problem, attempts)
                return _Outcome(Verdict.failed(f"{problem} ({attempts} attempts)", made))
            if transient:
                time.sleep(_backoff(attempts - 1))


# --- command line -----------------------------------------------------------------------------


def text_arg(value: str) -> str:
    """A command-line text: the file's content if `value` names a file, else `value` itself."""
    path = Path(value)
    try:
        if len(value) < 4096 and path.is_file():
            return path.read_text(encoding="utf-8")
    except OSError:
        pass  # not a usable path (too long, unreadable name): it is the text itself
    return value


def run_cli(args: argparse.Namespace) -> int:
    """`pulsemind judge ...` (see app/cli.py for the options); prints the verdict."""
    cache = None
    if not args.no_cache:
        from storage import Database
        from storage.db import resolve_database_url

        cache = Database(resolve_database_url(args.database_url))
        cache.upgrade()
    try:
        config = JudgeConfig(base_url=args.url, model=args.model, language=args.lang,
                             both_orders=args.both_orders, structured=args.structured,
                             max_tokens=args.max_tokens, temperature=args.temperature,
                             **({"api_key": os.environ[args.api_key_env]}
                                if args.api_key_env else {}))  # fmt: skip
    except KeyError as exc:
        raise SystemExit(f"pulsemind judge: ${args.api_key_env} is not set") from exc
    except ValueError as exc:
        raise SystemExit(f"pulsemind judge: {exc}") from exc
    item = JudgeItem(a=text_arg(args.a), b=text_arg(args.b),
                     context=text_arg(args.context) if args.context else "",
                     reference=text_arg(args.reference) if args.reference else None)  # fmt: skip
    with Judge(config, cache=cache) as judge:
        verdict = judge.judge(item)
    if cache is not None:
        cache.dispose()
    if args.json:
        print(json.dumps({"winners": dict(verdict.winners or {}) or None, "error": verdict.error,
                          "calls": verdict.calls, "cached": verdict.cached}))  # fmt: skip
    else:
        orders = "both orders" if config.both_orders else "one order"
        print(f"judge {config.model} at {config.base_url} ({config.language}, {orders}): "
              f"{verdict.calls} call(s){', from the cache' if verdict.cached else ''}")  # fmt: skip
        if verdict.winners is not None:
            shown = {"a": "A", "b": "B", "tie": "tie"}
            for d in DIMENSIONS:
                print(f"  {d:<18} {shown[verdict.winners[d]]}")
    if verdict.error is not None:
        print(f"pulsemind judge: no verdict: {verdict.error}", file=sys.stderr)
        return 1
    return 0
