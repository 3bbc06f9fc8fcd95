"""The embedded engine: a Qwen2.5-VL run in-process with transformers on the CPU.

Why: with no vLLM server configured, `python app.py` must still work offline. This engine
implements `model.chat.ChatEngine` on the bundled demo model (built from code by
`model.demo_model.ensure_demo_model`, random weights, so its answers are gibberish by design
and the UI labels it "demo model"), or on any local Qwen2.5-VL directory, optionally with a
PEFT LoRA adapter.

How: the model loads lazily on first use (thread-safe), float32, eval mode. Messages go
through the model's own chat template (images as <|vision_start|><|image_pad|><|vision_end|>)
and processor. `stream` runs `generate` in a background thread feeding a
`TextIteratorStreamer`; `complete` draws n samples one after another.

Concurrency: there is one model and two CPU cores, so generation is serialised with a lock:
concurrent requests queue and are answered one at a time. A stream holds the lock until it is
exhausted or closed (closing it stops generation at the next token), so callers must iterate
it to the end or call `.close()` on it.

Try it:
    python -c "from model.embedded import EmbeddedEngine; from model.chat import *; \
print(EmbeddedEngine().complete([ChatMessage('user', 'Hello')], SamplingParams(max_tokens=16)))"
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from model.chat import ChatMessage, Completion, Delta, SamplingParams
from model.demo_model import DEMO_MAX_PIXELS, ensure_demo_model, is_demo_model
from model.errors import ModelDiedMidAnswer, ModelError, ModelRejectedInput, ModelTimeout
from model.images import as_pixels

#: Longest answer the CPU engine will write: the demo model does ~100 tokens/s on one core, a
#: 7B model on CPU ~1-5, and the lock makes everyone else wait meanwhile.
MAX_NEW_TOKENS_CAP = 1024
#: Most samples one `complete` call may ask for (Compare needs 2, CRPO groups ~4-8).
MAX_SAMPLES_PER_REQUEST = 16
#: A single decoding step taking longer than this means generation is stuck.
STREAM_STEP_TIMEOUT_S = 120.0
#: Tokens the answer must never contain: vision placeholders are only valid in prompts.
_SUPPRESSED_TOKENS = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


@dataclass
class _Loaded:
    """What `_load` produces: the model with the pieces generation needs."""

    model: Any
    processor: Any
    eos_ids: list[int]
    pad_id: int
    suppress_ids: list[int]
    max_positions: int
    min_pixels: int


class _StopOnEvent:
    """A stopping criterion that ends generation once `event` is set (stream closed early)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


class _FirstTokenClock:
    """A generate() streamer that only notes when the first new token arrived."""

    def __init__(self, start: float):
        self.start = start
        self.calls = 0
        self.first_token_s: float | None = None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:  # the first put() is the prompt
            self.first_token_s = time.perf_counter() - self.start

    def end(self) -> None:
        pass


class EmbeddedEngine:
    """`ChatEngine` on a local Qwen2.5-VL (default: the demo model), in-process on the CPU.

    `model` arguments of `stream`/`complete` are ignored: this engine serves exactly one
    variant, the one it was built with (base model plus `adapter_dir`, if any).
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        adapter_dir: Path | None = None,
        label: str = "demo model",
        max_pixels: int = DEMO_MAX_PIXELS,
        threads: int | None = None,
    ):
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.adapter_dir = Path(adapter_dir) if adapter_dir is not None else None
        self.label = label
        self.max_pixels = max_pixels
        self.threads = threads
        self._loaded_state: _Loaded | None = None
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()

    # --- loading ------------------------------------------------------------------------

    def load(self) -> None:
        """Load now rather than on the first request (e.g. at app start-up)."""
        self._loaded()

    def _loaded(self) -> _Loaded:
        with self._load_lock:
            if self._loaded_state is None:
                self._loaded_state = self._load()
            return self._loaded_state

    def _load(self) -> _Loaded:
        import torch
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        if self.threads is not None:
            torch.set_num_threads(self.threads)  # process-wide: torch has no per-model setting
        try:
            model_dir = self.model_dir or ensure_demo_model()
            self.model_dir = model_dir
            started = time.perf_counter()
            processor = AutoProcessor.from_pretrained(model_dir)
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                model_dir, dtype=torch.float32
            )
            if self.adapter_dir is not None:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, self.adapter_dir)
            model.eval()
        except Exception as exc:  # any load failure (missing dir, corrupt weights) is reported
            raise ModelError(
                f"The local model could not be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        tokenizer = processor.tokenizer
        eos_ids = [tokenizer.convert_tokens_to_ids(t) for t in _STOP_TOKENS]
        text_config = model.config.get_text_config()
        logger.info(
            "embedded engine loaded {} (demo={}, adapter={}) in {:.1f}s",
            model_dir,
            is_demo_model(model_dir),
            self.adapter_dir,
            time.perf_counter() - started,
        )
        return _Loaded(
            model=model,
            processor=processor,
            eos_ids=[i for i in eos_ids if i is not None],
            pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[-1],
            suppress_ids=[tokenizer.convert_tokens_to_ids(t) for t in _SUPPRESSED_TOKENS],
            max_positions=int(text_config.max_position_embeddings),
            min_pixels=int(processor.image_processor.size.shortest_edge or 0),
        )

    # --- request preparation ------------------------------------------------------------

    def _prepare(self, loaded: _Loaded, messages: list[ChatMessage], max_new: int) -> dict:
        """Chat template + processor: token ids, pixel values and image grids for `messages`."""
        if not messages:
            raise ModelRejectedInput("No messages to answer.")
        conversation: list[dict] = []
        images = []
        for message in messages:
            if message.images:
                content: str | list[dict] = [{"type": "image"} for _ in message.images]
                if message.text:
                    content.append({"type": "text", "text": message.text})
                images.extend(as_pixels(im) for im in message.images)
            else:
                content = message.text
            conversation.append({"role": message.role, "content": content})
        processor = loaded.processor
        size = {
            "shortest_edge": min(loaded.min_pixels, self.max_pixels),
            "longest_edge": self.max_pixels,
        }
        try:
            prompt = processor.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True
            )
            inputs = processor(text=[prompt], images=images or None, return_tensors="pt", size=size)
        except (ValueError, TypeError, OSError) as exc:
            raise ModelRejectedInput(
                f"The input could not be prepared for the model: {exc}"
            ) from exc
        prompt_tokens = int(inputs["input_ids"].shape[1])
        if prompt_tokens + max_new > loaded.max_positions:
            raise ModelRejectedInput(
                f"The conversation is too long for this model ({prompt_tokens} prompt tokens + "
                f"{max_new} answer tokens > {loaded.max_positions}). Start a new consultation "
                "or attach fewer images."
            )
        return dict(inputs)

    @staticmethod
    def _max_new_tokens(sampling: SamplingParams) -> int:
        if sampling.max_tokens < 1:
            raise ModelRejectedInput("max_tokens must be at least 1.")
        return min(sampling.max_tokens, MAX_NEW_TOKENS_CAP)

    def _generation_config(self, loaded: _Loaded, sampling: SamplingParams, max_new: int):
        from transformers import GenerationConfig

        sample = sampling.temperature > 0
        # Explicit neutral values, not None: None would be filled in from the model's own
        # generation_config.json. top_k 0 = off, as in vLLM and the OpenAI API.
        return GenerationConfig(
            max_new_tokens=max_new,
            min_new_tokens=min(sampling.min_tokens, max_new) or None,
            do_sample=sample,
            temperature=sampling.temperature if sample else 1.0,
            top_p=sampling.top_p if sample else 1.0,
            top_k=0 if sample else None,
            eos_token_id=loaded.eos_ids,
            pad_token_id=loaded.pad_id,
            suppress_tokens=loaded.suppress_ids,
        )

    @staticmethod
    @contextlib.contextmanager
    def _seeded(seed: int | None) -> Iterator[None]:
        """Seed torch's CPU RNG for one request and restore it after; no-op without a seed.

        `generate` has no generator argument, so a seed has to go through the global RNG; the
        generation lock makes that safe, and fork_rng puts the caller's state back.
        """
        if seed is None:
            yield
            return
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield

    def _generate(self, loaded: _Loaded, inputs: dict, gen_config, **kwargs):
        import torch

        with torch.inference_mode():
            return loaded.model.generate(**inputs, generation_config=gen_config, **kwargs)

    def _finish(self, loaded: _Loaded, sequences, prompt_tokens: int) -> tuple[list[int], str]:
        """New token ids (up to and including the first stop token) and the finish reason."""
        new = sequences[0, prompt_tokens:].tolist()
        for i, token in enumerate(new):
            if token in loaded.eos_ids:
                return new[: i + 1], "stop"
        return new, "length"

    # --- ChatEngine ---------------------------------------------------------------------

    def stream(
        self, messages: list[ChatMessage], sampling: SamplingParams, *, model: str | None = None
    ) -> Iterator[Delta | Completion]:
        """Yield `Delta`s as text arrives, then one `Completion`. Raises `ModelError`s."""
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        loaded = self._loaded()
        max_new = self._max_new_tokens(sampling)
        inputs = self._prepare(loaded, messages, max_new)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        gen_config = self._generation_config(loaded, sampling, max_new)
        streamer = TextIteratorStreamer(
            loaded.processor.tokenizer,
            skip_prompt=True,
            skip_special_tokens=True,
            timeout=STREAM_STEP_TIMEOUT_S,
        )
        stop = threading.Event()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                with self._seeded(sampling.seed):
                    outcome["sequences"] = self._generate(
                        loaded,
                        inputs,
                        gen_config,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop)]),
                    )
            except Exception as exc:  # handed to the consumer thread, raised there
                outcome["error"] = exc
                streamer.end()  # wake the consumer, which then raises it as a ModelError

        pieces: list[str] = []
        with self._generate_lock:
            started = time.perf_counter()
            first_token_s: float | None = None
            worker = threading.Thread(target=work, name="embedded-generate", daemon=True)
            worker.start()
            try:
                for piece in streamer:
                    if not piece:
                        continue
                    if first_token_s is None:
                        first_token_s = time.perf_counter() - started
                    pieces.append(piece)
                    yield Delta(text=piece, index=0)
            except queue.Empty as exc:
                raise ModelTimeout(
                    f"The local model produced nothing for {STREAM_STEP_TIMEOUT_S:.0f} s."
                ) from exc
            finally:
                stop.set()  # no-op when generation already ended; stops it if we were closed
                worker.join(STREAM_STEP_TIMEOUT_S)
            latency_s = time.perf_counter() - started
        if "error" in outcome:
            exc = outcome["error"]
            detail = f"The local model failed while answering: {type(exc).__name__}: {exc}"
            if pieces:
                raise ModelDiedMidAnswer(detail, partial="".join(pieces)) from exc
            raise ModelError(detail) from exc
        tokens, finish_reason = self._finish(loaded, outcome["sequences"], prompt_tokens)
        logger.debug(
            "embedded stream: {} prompt + {} completion tokens, {:.2f}s, {}",
            prompt_tokens,
            len(tokens),
            latency_s,
            finish_reason,
        )
        yield Completion(
            text="".join(pieces),
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(tokens),
            latency_s=latency_s,
            first_token_s=first_token_s,
            index=0,
        )

    def complete(
        self,
        messages: list[ChatMessage],
        sampling: SamplingParams,
        *,
        n: int = 1,
        model: str | None = None,
    ) -> list[Completion]:
        """Return `n` independent samples, drawn one after another. Raises `ModelError`s.

        With a seed, the whole set of n samples is reproducible (the samples still differ
        from each other, as with vLLM's `n` and `seed`).
        """
        if not 1 <= n <= MAX_SAMPLES_PER_REQUEST:
            raise ModelRejectedInput(f"n must be between 1 and {MAX_SAMPLES_PER_REQUEST}.")
        loaded = self._loaded()
        max_new = self._max_new_tokens(sampling)
        inputs = self._prepare(loaded, messages, max_new)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        gen_config = self._generation_config(loaded, sampling, max_new)
        tokenizer = loaded.processor.tokenizer
        completions: list[Completion] = []
        with self._generate_lock, self._seeded(sampling.seed):
            for index in range(n):
                started = time.perf_counter()
                clock = _FirstTokenClock(started)
                try:
                    sequences = self._generate(loaded, inputs, gen_config, streamer=clock)
                except Exception as exc:  # any failure inside generate is a model failure
                    raise ModelError(
                        f"The local model failed while answering: {type(exc).__name__}: {exc}"
                    ) from exc
                tokens, finish_reason = self._finish(loaded, sequences, prompt_tokens)
                completions.append(
                    Completion(
                        text=tokenizer.decode(tokens, skip_special_tokens=True),
                        finish_reason=finish_reason,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=len(tokens),
                        latency_s=time.perf_counter() - started,
                        first_token_s=clock.first_token_s,
                        index=index,
                    )
                )
        logger.debug("embedded complete: n={} prompt={} tokens", n, prompt_tokens)
        return completions
