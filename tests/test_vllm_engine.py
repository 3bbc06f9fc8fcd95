"""The OpenAI-compatible engine against the real vLLM CPU server (tiny Qwen2.5-VL, LoRA)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from model.chat import ChatMessage, Completion, Delta, SamplingParams
from model.errors import ModelRejectedInput, ModelUnreachable
from model.openai_engine import OpenAIEngine, OpenAIEngineConfig, to_openai_messages
from model.serve import VLLMServer, free_port

pytestmark = pytest.mark.vllm

GREEDY = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=24, seed=0)


def _img(seed: int, size=(320, 240)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8))


def consultation() -> list[ChatMessage]:
    """Three user turns, two with images (three images in all), two assistant turns between."""
    return [
        ChatMessage("system", "You are a careful clinical assistant."),
        ChatMessage("user", "Chest pain since yesterday. Here are my ECG and X-ray.",
                    [_img(1), _img(2)]),
        ChatMessage("assistant", "Is the pain worse on exertion?"),
        ChatMessage("user", "Yes, and here is the lab report.", [_img(3, (200, 400))]),
        ChatMessage("assistant", "Troponin is needed."),
        ChatMessage("user", "What should I do next?"),
    ]  # fmt: skip


def engine(server: VLLMServer, **kw) -> OpenAIEngine:
    return OpenAIEngine(OpenAIEngineConfig(base_url=server.base_url, model="tiny", **kw))


def collect(events) -> tuple[list[Delta], Completion]:
    deltas, final = [], None
    for ev in events:
        if isinstance(ev, Delta):
            deltas.append(ev)
        else:
            final = ev
    assert final is not None
    return deltas, final


def test_multi_turn_multi_image_stream(vllm_server):
    deltas, final = collect(engine(vllm_server).stream(consultation(), GREEDY))
    assert len(deltas) >= 2, "answer should arrive in several streamed pieces"
    assert "".join(d.text for d in deltas) == final.text
    assert final.completion_tokens and 0 < final.completion_tokens <= GREEDY.max_tokens
    # three images at 64+ tokens each must be in the prompt, not dropped
    assert final.prompt_tokens and final.prompt_tokens > 3 * 64
    assert final.first_token_s is not None and final.first_token_s <= final.latency_s
    assert final.finish_reason in ("stop", "length")


def test_images_scaled_before_sending():
    big = _img(4, (6000, 4000))  # 24 MP
    msgs = to_openai_messages([ChatMessage("user", "x", [big])], max_pixels=200_000)
    url = msgs[0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    import base64
    import io

    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.width * sent.height <= 200_000
    assert abs(sent.width / sent.height - 1.5) < 0.02  # aspect ratio kept


def test_n_samples(vllm_server):
    sampling = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=16, seed=1)
    outs = engine(vllm_server).complete(consultation(), sampling, n=4)
    assert [c.index for c in outs] == [0, 1, 2, 3]
    assert len({c.text for c in outs}) > 1, "4 samples at T=1 should not all be equal"


def test_lora_adapter_changes_answer(vllm_server, adapter_dir):
    eng = engine(vllm_server)
    base = eng.complete(consultation(), GREEDY)[0].text
    lora = eng.complete(consultation(), GREEDY, model="a1")[0].text
    assert base != lora
    # runtime loading of another adapter (same weights, new name) gives the adapter's answer
    vllm_server.load_lora_adapter("a1-runtime", str(adapter_dir))
    assert "a1-runtime" in eng.list_models()
    assert eng.complete(consultation(), GREEDY, model="a1-runtime")[0].text == lora


def test_unknown_model_is_rejected(vllm_server):
    with pytest.raises(ModelRejectedInput):
        engine(vllm_server).complete(consultation(), GREEDY, model="no-such-adapter")


def test_server_down_is_unreachable_fast():
    eng = OpenAIEngine(
        OpenAIEngineConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", model="tiny")
    )
    t0 = time.monotonic()
    with pytest.raises(ModelUnreachable):
        list(eng.stream(consultation(), GREEDY))
    assert time.monotonic() - t0 < 30


def test_closing_the_stream_stops_generation(vllm_server):
    """A clinician's stop button closes the generator; the server must not keep generating."""
    eng = engine(vllm_server)
    long = SamplingParams(temperature=1.0, max_tokens=2000, seed=3)
    gen = eng.stream(consultation(), long)
    got = [next(gen) for _ in range(3)]
    gen.close()
    assert all(isinstance(d, Delta) for d in got)
    # the server still answers promptly afterwards
    t = threading.Thread(target=lambda: eng.complete(consultation(), GREEDY))
    t.start()
    t.join(60)
    assert not t.is_alive()


def test_embedded_engine_answers_the_same_consultation(demo_model_dir):
    """The offline default (in-process transformers) takes the very same multi-image messages."""
    from model.embedded import EmbeddedEngine

    deltas, final = collect(EmbeddedEngine(demo_model_dir).stream(consultation(), GREEDY))
    assert deltas and "".join(d.text for d in deltas) == final.text
    assert final.prompt_tokens and final.prompt_tokens > 3 * 64
    assert 0 < final.completion_tokens <= GREEDY.max_tokens


def test_serve_flags_match_what_the_app_needs(tmp_path):
    """`pulsemind serve` passes the paper's inference limits (the fixture server runs with them)."""
    from model.serve import ServeConfig

    argv = ServeConfig(model=str(tmp_path), python="py").argv(8000)
    joined = " ".join(argv)
    assert '--limit-mm-per-prompt {"image": 30}' in joined
    assert "--enable-lora --max-lora-rank 64" in joined
    assert argv[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    with pytest.raises(ValueError, match="adapter_config.json"):
        ServeConfig(model="m", lora_modules={"x": str(tmp_path)})


def test_engine_core_runs_beside_its_worker(vllm_server):
    """vLLM's CPU build binds its worker to some cores; `colocate_engine_core` puts the engine
    core (which busy-waits on the worker) on the same ones, leaving the rest to the API server."""
    import os

    from model.serve import _descendants

    procs = _descendants(vllm_server.proc.pid)
    engine = [p for p, cmd in procs.items() if cmd.startswith("VLLM::EngineCore")]
    worker = [p for p, cmd in procs.items() if cmd.startswith("VLLM::Worker")]
    assert engine and worker, procs
    worker_cpus = os.sched_getaffinity(worker[0])
    if worker_cpus == os.sched_getaffinity(0):
        pytest.skip("vLLM did not bind its worker here (nothing to colocate)")
    tasks = [int(t) for t in os.listdir(f"/proc/{engine[0]}/task")]
    assert {frozenset(os.sched_getaffinity(t)) for t in tasks} == {frozenset(worker_cpus)}


def test_clients_share_one_tls_context_that_still_verifies():
    """Model and judge clients reuse one TLS context (building one per client read the CA
    bundle each time, ~0.1 s of CPU per eval run and judge under load); HTTPS stays verified."""
    import ssl

    from training.judge import Judge, JudgeConfig

    def context_of(openai_client):
        return openai_client._client._transport._pool._ssl_context

    engines = [OpenAIEngine(OpenAIEngineConfig(base_url=f"https://models{i}.example/v1",
                                               model="m")) for i in range(2)]  # fmt: skip
    with Judge(JudgeConfig(base_url="https://judge.example/v1", model="j")) as judge:
        contexts = {id(context_of(e._client)) for e in engines} | {id(context_of(judge._client))}
        ctx = context_of(judge._client)
    assert len(contexts) == 1
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname


def test_stream_events_are_read_as_servers_send_them():
    """The answer's chunks are read as plain JSON, not the SDK's typed objects: comments, an
    event's `data:` split over lines, usage and `[DONE]` are read right; an error event after
    some text is a broken answer that keeps the text; garbage is a model error, not a crash.
    (No vLLM needed: a scripted server.)"""
    import json

    from test_judge import ScriptedServer

    from model.errors import ModelDiedMidAnswer, ModelError

    def data(obj) -> str:
        return f"data: {json.dumps(obj)}\n\n"

    def delta(text: str) -> dict:
        return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}

    streams = [
        ": a comment the server sends to keep the connection\n\n" + data(delta("Chest "))
        + 'data: {"choices": [{"index": 0, "delta": {"content": "pain."},\n'
        + 'data: "finish_reason": "stop"}]}\n\n'
        + data({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
        + "data: [DONE]\n\n",
        data(delta("Chest ")) + data({"error": {"message": "engine died"}}),
        "data: not json\n\n",
    ]  # fmt: skip

    def respond(n: int, body: dict):
        assert body["stream"] is True
        return 200, {"Content-Type": "text/event-stream"}, streams[n].encode()

    with ScriptedServer(respond) as server:
        eng = OpenAIEngine(OpenAIEngineConfig(base_url=server.base_url, model="tiny"))
        deltas, final = collect(eng.stream(consultation()[-1:], GREEDY))
        assert [d.text for d in deltas] == ["Chest ", "pain."]
        assert (final.text, final.finish_reason) == ("Chest pain.", "stop")
        assert (final.prompt_tokens, final.completion_tokens) == (5, 2)
        with pytest.raises(ModelDiedMidAnswer) as died:
            collect(eng.stream(consultation()[-1:], GREEDY))
        assert died.value.partial == "Chest " and "engine died" in died.value.detail
        with pytest.raises(ModelError) as garbage:
            collect(eng.stream(consultation()[-1:], GREEDY))
        assert not isinstance(garbage.value, ModelDiedMidAnswer)
