"""The embedded engine on the demo model built from code: streaming, n samples, max_tokens,
seeds, multi-turn multi-image prompts, errors, and the generation lock.

Uses the session fixtures `demo_model_dir` and `adapter_dir` from tests/conftest.py.
"""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from model.chat import ChatMessage, Completion, Delta, SamplingParams
from model.embedded import MAX_NEW_TOKENS_CAP, MAX_SAMPLES_PER_REQUEST, EmbeddedEngine
from model.errors import ModelDiedMidAnswer, ModelError, ModelRejectedInput

SAMPLED = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=16, seed=7)


def image(seed: int, size: tuple[int, int] = (224, 224)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def consultation(with_images: bool = True) -> list[ChatMessage]:
    """Three turns (user, assistant, user); the first carries two images."""
    images = [image(1), image(2)] if with_images else []
    return [
        ChatMessage("system", "You are a careful clinical assistant."),
        ChatMessage("user", "Cough for three weeks. Here are my X-ray and blood count.", images),
        ChatMessage("assistant", "Do you smoke, and have you had a fever?"),
        ChatMessage("user", "No fever. I stopped smoking ten years ago."),
    ]


def collect(events) -> tuple[list[Delta], Completion]:
    events = list(events)
    assert isinstance(events[-1], Completion)
    assert all(isinstance(e, Delta) for e in events[:-1])
    return events[:-1], events[-1]


@pytest.fixture(scope="module")
def engine(demo_model_dir) -> EmbeddedEngine:
    return EmbeddedEngine(demo_model_dir)


def test_stream_yields_deltas_that_add_up_to_the_completion(engine):
    assert engine.label == "demo model"
    deltas, final = collect(engine.stream(consultation(), SAMPLED))
    assert len(deltas) >= 1
    assert "".join(d.text for d in deltas) == final.text
    assert final.text.strip()
    assert final.finish_reason in ("stop", "length")
    assert 1 <= final.completion_tokens <= SAMPLED.max_tokens
    assert final.latency_s >= final.first_token_s > 0


def test_images_reach_the_prompt(engine):
    _, with_images = collect(engine.stream(consultation(), SAMPLED))
    _, text_only = collect(engine.stream(consultation(with_images=False), SAMPLED))
    # 224x224 -> 16x16 patches -> 64 tokens after the 2x2 merge, plus vision start/end, x2
    assert with_images.prompt_tokens - text_only.prompt_tokens == 2 * (64 + 2)


def test_several_images_in_several_turns(engine):
    messages = consultation() + [
        ChatMessage("assistant", "Please send the ECG too."),
        ChatMessage("user", "Here it is, and an old one.", [image(3, (300, 120)), image(4)]),
    ]
    _, final = collect(engine.stream(messages, SAMPLED))
    assert final.prompt_tokens > 4 * 30
    assert final.completion_tokens >= 1


def test_n_samples(engine):
    completions = engine.complete(consultation(), SAMPLED, n=3)
    assert [c.index for c in completions] == [0, 1, 2]
    for c in completions:
        assert 1 <= c.completion_tokens <= SAMPLED.max_tokens
        assert c.prompt_tokens == completions[0].prompt_tokens
        assert c.latency_s > 0 and c.first_token_s is not None
    assert len({c.text for c in completions}) > 1, "independent samples should differ"


def test_max_tokens_is_respected(engine):
    params = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=3, seed=11)
    completions = engine.complete(consultation(), params, n=4)
    assert all(c.completion_tokens <= 3 for c in completions)
    cut = [c for c in completions if c.finish_reason == "length"]
    assert cut, "a random model rarely stops within 3 tokens"
    assert all(c.completion_tokens == 3 for c in cut)
    _, final = collect(engine.stream(consultation(), params))
    assert final.completion_tokens <= 3
    assert final.finish_reason == "length" or final.completion_tokens < 3
    assert EmbeddedEngine._max_new_tokens(SamplingParams(max_tokens=10**9)) == MAX_NEW_TOKENS_CAP


def test_seed_makes_answers_reproducible(engine):
    first = engine.complete(consultation(), SAMPLED, n=2)
    second = engine.complete(consultation(), SAMPLED, n=2)
    assert [c.text for c in first] == [c.text for c in second]
    other = engine.complete(consultation(), SamplingParams(**{**SAMPLED.to_dict(), "seed": 8}))
    assert other[0].text != first[0].text
    # streaming with the same seed draws the same tokens as the first complete() sample
    _, streamed = collect(engine.stream(consultation(), SAMPLED))
    _, streamed_again = collect(engine.stream(consultation(), SAMPLED))
    assert streamed.text == streamed_again.text == first[0].text


def test_greedy_ignores_seed(engine):
    greedy = SamplingParams(temperature=0.0, max_tokens=8)
    a = engine.complete(consultation(), greedy)[0].text
    b = engine.complete(consultation(), SamplingParams(temperature=0.0, max_tokens=8, seed=3))[0]
    assert a == b.text


def test_closing_a_stream_releases_the_model(engine):
    stream = engine.stream(consultation(), SamplingParams(max_tokens=500, seed=1))
    assert isinstance(next(stream), Delta)
    stream.close()
    assert not engine._generate_lock.locked()
    assert engine.complete(consultation(), SAMPLED)[0].completion_tokens >= 1


def test_concurrent_requests_are_serialised_not_lost(engine):
    results: list[list[Completion]] = []

    def ask(seed: int) -> None:
        params = SamplingParams(temperature=1.0, max_tokens=8, seed=seed)
        results.append(engine.complete(consultation(), params))

    threads = [threading.Thread(target=ask, args=(s,)) for s in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 3 and all(r[0].completion_tokens >= 1 for r in results)


def test_adapter_changes_answers(demo_model_dir, adapter_dir, engine):
    adapted = EmbeddedEngine(demo_model_dir, adapter_dir=adapter_dir, label="demo + a1")
    greedy = SamplingParams(temperature=0.0, max_tokens=12)
    assert adapted.complete(consultation(), greedy)[0].text != (
        engine.complete(consultation(), greedy)[0].text
    )


def test_bad_requests_are_rejected_clearly(engine):
    with pytest.raises(ModelRejectedInput):
        list(engine.stream([], SAMPLED))
    with pytest.raises(ModelRejectedInput, match="n must be"):
        engine.complete(consultation(), SAMPLED, n=MAX_SAMPLES_PER_REQUEST + 1)
    with pytest.raises(ModelRejectedInput, match="too long"):
        engine.complete([ChatMessage("user", "cough " * 40_000)], SAMPLED)
    # Qwen's resizer refuses aspect ratios over 200:1
    with pytest.raises(ModelRejectedInput, match="prepared"):
        engine.complete([ChatMessage("user", "strip", [image(5, (6000, 20))])], SAMPLED)


def test_corrupt_model_dir_raises_model_error(demo_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(demo_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match="could not be loaded"):
        EmbeddedEngine(broken).complete(consultation(), SAMPLED)


class _FailAfter:
    """Fault injection (a crash inside generate cannot be produced for real on demand):
    a logits processor that raises once `steps` tokens have been generated."""

    def __init__(self, steps: int):
        self.steps = steps
        self.calls = 0

    def __call__(self, input_ids, scores):
        self.calls += 1
        if self.calls > self.steps:
            raise RuntimeError("injected failure")
        return scores


def test_failure_mid_stream_keeps_the_partial_answer(demo_model_dir, monkeypatch):
    from transformers import LogitsProcessorList

    engine = EmbeddedEngine(demo_model_dir)
    engine.load()
    model = engine._loaded().model
    real_generate = model.generate

    def failing_generate(**kwargs):
        return real_generate(**kwargs, logits_processor=LogitsProcessorList([_FailAfter(10)]))

    monkeypatch.setattr(model, "generate", failing_generate)
    seen: list[str] = []
    with pytest.raises(ModelDiedMidAnswer, match="injected failure") as info:
        for event in engine.stream(consultation(), SamplingParams(max_tokens=40, seed=2)):
            seen.append(event.text)
    assert seen and info.value.partial == "".join(seen)
    with pytest.raises(ModelError, match="injected failure"):
        engine.complete(consultation(), SAMPLED)
    assert not engine._generate_lock.locked()
