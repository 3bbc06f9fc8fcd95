"""The four-dimension judge against the real vLLM CPU server (structured output), and against a
scripted HTTP server for the faults vLLM cannot be made to produce; the serving side CRPO needs.

Run: OMP_NUM_THREADS=1 python -m pytest tests/test_judge.py -q   (~1 min with the server start)

- Real server: every verdict of the tiny (random) model parses, because the reply is
  constrained by structured output; both orders cost two calls and keep only consistent wins;
  a cached verdict costs no call; `pulsemind judge` prints a verdict; one CRPO step's judge
  calls are G x C, all in flight at once.
- Scripted server (`ScriptedServer`, a fake named as such: a judge that answers garbage, a
  body that is not JSON, HTTP 429, a server without vLLM's structured output): the result is
  a recorded error, never a loss; a 429 is waited for (Retry-After) and retried.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from model.chat import ChatMessage, SamplingParams
from model.errors import ModelUnreachable
from model.openai_engine import OpenAIEngine, OpenAIEngineConfig
from model.serve import MAX_LORAS, ServeConfig, free_port
from training.judge import (
    DIMENSIONS,
    VERDICT_REGEX,
    WINNERS,
    Judge,
    JudgeConfig,
    JudgeItem,
    cache_key,
    combine_orders,
    retry_after_s,
)
from training.reward import make_reward_fn

GOOD = ('{"proactiveness":"A","accuracy":"tie","usefulness":"B","language_quality":"A"}')
CONTEXT = "Patient: Chest pain for two hours, sweating.\nDoctor: Any shortness of breath?"
ITEMS = [
    JudgeItem("Do you have a fever? How long has the cough lasted?", "Take antibiotics.",
              "Patient: I have a cough.", "How long have you had the cough? Any fever?"),
    JudgeItem("Call an ambulance now; chew 300 mg aspirin if not allergic.",
              "It is probably muscle strain.", CONTEXT),
    JudgeItem("请问发热几天了？最高体温多少？", "多喝水。", "患者：我发烧了。"),
]  # fmt: skip


# --- a scripted OpenAI-compatible server (a fake, for faults vLLM does not produce) ---------------


def chat_reply(content: str) -> dict:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "judge",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }  # fmt: skip


Reply = tuple[int, dict[str, str], bytes]


class ScriptedServer:
    """Answers POST /v1/chat/completions with `respond(request_number, body)`; records each
    request's arrival time and body, and the most requests in flight at once."""

    def __init__(self, respond: Callable[[int, dict], Reply], delay_s: float = 0.0):
        self.respond, self.delay_s = respond, delay_s
        self.requests: list[tuple[float, dict]] = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    n = len(server.requests)
                    server.requests.append((time.monotonic(), body))
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                time.sleep(server.delay_s)
                status, headers, payload = server.respond(n, body)
                with server._lock:
                    server.in_flight -= 1
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):  # keep the test output quiet
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # a CRPO step connects 40 at once (the default backlog is 5)

        self.httpd = Server(("127.0.0.1", free_port()), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ScriptedServer:
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def ok(content: str = GOOD) -> Reply:
    return 200, {}, json.dumps(chat_reply(content)).encode()


def scripted_judge(server: ScriptedServer, **kw) -> Judge:
    return Judge(JudgeConfig(base_url=server.base_url, model="judge", **kw))


def test_garbage_replies_are_recorded_errors_not_losses():
    with ScriptedServer(lambda n, body: ok("The first answer is better.")) as server:
        judge = scripted_judge(server, attempts=3)
        verdict = judge.judge(ITEMS[0])
        assert not verdict.ok and verdict.winners is None
        assert "unusable verdict" in verdict.error and verdict.calls == 3 == len(server.requests)
        # the retries were not greedy copies of the first try
        temperatures = [body["temperature"] for _, body in server.requests]
        assert temperatures[0] == 0.0 and all(t > 0 for t in temperatures[1:])
        # through the reward: no comparison made -> None (no advantage), errors counted
        got = []
        fn = make_reward_fn(judge, on_metrics=lambda step, m: got.append(m))
        assert fn(prompts=["q"], completions=["a"], counterparts=[["x", "y"]]) == [None]
        assert got[0]["crpo/judge_errors"] == 2 and got[0]["crpo/unscored"] == 1
        assert "crpo/reward" not in got[0]


def test_a_body_that_is_not_json_is_an_error():
    with ScriptedServer(lambda n, body: (200, {"Content-Type": "text/plain"}, b"oops")) as server:
        verdict = scripted_judge(server, attempts=2).judge(ITEMS[0])
    assert not verdict.ok and verdict.calls == 2 and "2 attempts" in verdict.error


def test_one_bad_reply_then_a_good_one_is_a_verdict():
    with ScriptedServer(lambda n, body: ok("{}") if n == 0 else ok()) as server:
        verdict = scripted_judge(server).judge(ITEMS[0])
    assert verdict.ok and verdict.calls == 2
    assert verdict.winners == dict(zip(DIMENSIONS, ("a", "tie", "b", "a"), strict=True))


def test_http_429_is_waited_for_then_retried():
    too_many = (429, {"Retry-After": "1"}, b'{"error": {"message": "rate limited"}}')
    with ScriptedServer(lambda n, body: too_many if n == 0 else ok()) as server:
        verdict = scripted_judge(server, attempts=1).judge(ITEMS[0])
        (first, _), (second, _) = server.requests
    assert verdict.ok and verdict.calls == 2  # the 429 used up no attempt
    assert second - first >= 0.95  # Retry-After: 1 was honoured


def test_http_429_without_retry_after_backs_off_and_gives_up_as_an_error():
    too_many = (429, {}, b'{"error": {"message": "rate limited"}}')
    with ScriptedServer(lambda n, body: too_many) as server:
        verdict = scripted_judge(server, rate_limit_waits=2).judge(ITEMS[0])
        times = [t for t, _ in server.requests]
    assert not verdict.ok and "429" in verdict.error and verdict.calls == 3
    assert times[1] - times[0] >= 0.3 and times[2] - times[1] >= 0.6  # 0.5 s, 1 s (+-25 %)


def test_other_client_errors_are_not_retried():
    with ScriptedServer(lambda n, body: (404, {}, b'{"error": {"message": "no such model"}}')) as s:
        verdict = Judge(JudgeConfig(base_url=s.base_url, model="judge", structured="vllm")).judge(
            ITEMS[0]
        )
    assert not verdict.ok and verdict.calls == 1 and "HTTP 404" in verdict.error


def test_a_server_without_vllm_structured_output_gets_response_format():
    def respond(n, body):
        if "structured_outputs" in body:  # a hosted API refuses vLLM's field
            return 400, {}, b'{"error": {"message": "Unrecognized request argument"}}'
        assert body["response_format"]["type"] == "json_schema"
        return ok()

    with ScriptedServer(respond) as server:
        judge = scripted_judge(server)
        assert judge.judge(ITEMS[0]).ok
        assert judge.judge(ITEMS[1]).ok  # remembered: no second refusal
        bodies = [body for _, body in server.requests]
    assert ["structured_outputs" in b for b in bodies] == [True, False, False]


def test_retry_after_forms():
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert 0 < retry_after_s({"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"})
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None


def test_one_crpo_step_issues_every_pair_at_once():
    """G x C calls for one step, one per (candidate, counterpart), all in flight together."""
    with ScriptedServer(lambda n, body: ok(), delay_s=0.3) as server:
        judge = scripted_judge(server)
        fn = make_reward_fn(judge)
        g, c = 8, 5
        rewards = fn(prompts=["Patient: headache"] * g,
                     completions=[f"candidate {i}" for i in range(g)],
                     counterparts=[[f"counterpart {j}" for j in range(c)]] * g)  # fmt: skip
    assert len(server.requests) == judge.calls == g * c
    assert server.most_in_flight == g * c
    # GOOD: candidate first -> wins proactiveness and language quality; second -> usefulness
    assert rewards == [pytest.approx((3 * 2 + 2 * 1) / 20)] * g


def test_engine_maps_429_to_a_retryable_error():
    too_many = (429, {"Retry-After": "0"}, b'{"error": {"message": "rate limited"}}')
    with ScriptedServer(lambda n, body: too_many) as server:
        engine = OpenAIEngine(OpenAIEngineConfig(base_url=server.base_url, model="m", retries=1))
        with pytest.raises(ModelUnreachable) as caught:
            engine.complete([ChatMessage("user", "hi")], SamplingParams(max_tokens=4))
        assert len(server.requests) == 2  # the client waited and retried once
    assert caught.value.retryable and "429" in caught.value.detail


# --- the real vLLM CPU server -----------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_every_verdict_parses_with_structured_output(vllm_server, language):
    judge = Judge(JudgeConfig(base_url=vllm_server.base_url, model="tiny", language=language,
                              structured="vllm", attempts=1))  # fmt: skip
    items = [JudgeItem(f"{it.a} ({n})", it.b, it.context, it.reference)
             for n in range(3) for it in ITEMS]  # fmt: skip
    verdicts = judge.judge_many(items)
    # one attempt each: the random model's text parses because the reply is constrained
    assert all(v.ok for v in verdicts), [v.error for v in verdicts]
    assert judge.calls == len(items) and all(v.calls == 1 for v in verdicts)
    assert all(set(v.winners.values()) <= set(WINNERS) for v in verdicts)


@pytest.mark.vllm
def test_both_orders_cost_two_calls_and_keep_only_consistent_wins(vllm_server, db):
    items = [JudgeItem(f"{it.a} [{n}]", it.b, it.context, it.reference)
             for n in range(3) for it in ITEMS]  # fmt: skip
    single = Judge(JudgeConfig(base_url=vllm_server.base_url, model="tiny"), cache=db)
    forward = single.judge_many(items)
    backward = single.judge_many([JudgeItem(i.b, i.a, i.context, i.reference) for i in items])
    assert single.calls == 2 * len(items)

    both = Judge(JudgeConfig(base_url=vllm_server.base_url, model="tiny", both_orders=True),
                 cache=db)  # fmt: skip
    verdicts = both.judge_many(items)
    assert both.calls == 0  # both orders were already cached, one by one
    for f, b, verdict in zip(forward, backward, verdicts, strict=True):
        expected = combine_orders(f, b.swapped()).winners
        assert verdict.winners == expected
        for d in DIMENSIONS:  # a win stands only where the reversed order agrees
            if verdict.winners[d] != "tie":
                assert f.winners[d] == b.swapped().winners[d] == verdict.winners[d]

    uncached = Judge(JudgeConfig(base_url=vllm_server.base_url, model="tiny", both_orders=True))
    fresh = uncached.judge(ITEMS[1])
    assert fresh.ok and fresh.calls == 2 and uncached.calls == 2


@pytest.mark.vllm
def test_a_cached_verdict_costs_no_call(vllm_server, db):
    from sqlalchemy import func, select

    from storage.models import JudgeVerdict

    judge = Judge(JudgeConfig(base_url=vllm_server.base_url, model="tiny"), cache=db)
    first = judge.judge(ITEMS[1])
    assert first.ok and not first.cached and judge.calls == 1
    again = Judge(JudgeConfig(base_url=vllm_server.base_url, model="tiny"), cache=db)
    second = again.judge(ITEMS[1])
    assert again.calls == 0 and second.cached and second.calls == 0
    assert second.winners == first.winners
    # the row holds the key and the verdict, not the texts
    key = cache_key(again.config, ITEMS[1].a, ITEMS[1].b, ITEMS[1].context, None)
    with db.transaction(write=False) as session:
        row = session.scalar(select(JudgeVerdict))
        assert session.scalar(select(func.count()).select_from(JudgeVerdict)) == 1
    assert row.key_sha256 == key and row.judge_model == "tiny" and row.raw
    assert ITEMS[1].a not in (row.raw or "")
    # anything that decides the verdict is part of the key: another language is a new call
    chinese = Judge(JudgeConfig(base_url=vllm_server.base_url, model="tiny", language="zh-CN"),
                    cache=db)  # fmt: skip
    assert not chinese.judge(ITEMS[1]).cached and chinese.calls == 1
    # identical pairs in one batch are asked once
    fresh = Judge(JudgeConfig(base_url=vllm_server.base_url, model="tiny"))
    twice = fresh.judge_many([ITEMS[0], ITEMS[0]])
    assert fresh.calls == 1 and twice[0].winners == twice[1].winners
    assert [v.calls for v in twice] == [1, 0]


@pytest.mark.vllm
def test_reward_fn_against_the_real_judge(vllm_server):
    judge = Judge(JudgeConfig(base_url=vllm_server.base_url, model="tiny"))
    got = []
    fn = make_reward_fn(judge, on_metrics=lambda step, m: got.append(m))
    g, c = 4, 3
    rewards = fn(prompts=[[{"role": "user", "content": "I have had a headache for a week."}]] * g,
                 completions=[[{"role": "assistant", "content": f"Answer {i}: rest and fluids."}]
                              for i in range(g)],
                 counterparts=[[f"Counterpart {j}: see a neurologist." for j in range(c)]] * g)  # fmt: skip
    assert len(rewards) == g and all(r is not None and 0.0 <= r <= 1.0 for r in rewards)
    assert judge.calls == g * c
    assert got[0]["crpo/judge_calls"] == g * c and got[0]["crpo/judge_errors"] == 0
    assert {f"crpo/{d}" for d in DIMENSIONS} <= set(got[0])


@pytest.mark.vllm
def test_pulsemind_judge_command(vllm_server, tmp_path, capsys):
    from app.cli import main

    answer = tmp_path / "a.txt"
    answer.write_text("Do you have a fever? Since when?", encoding="utf-8")
    argv = ["judge", "--a", str(answer), "--b", "Drink water.", "--context", "Patient: cough",
            "--url", vllm_server.base_url, "--model", "tiny", "--both-orders",
            "--database-url", f"sqlite+pysqlite:///{tmp_path / 'cli.db'}"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 call(s)" in out and all(d in out for d in DIMENSIONS)
    assert main([*argv, "--json"]) == 0  # the same question again: from the cache
    shown = json.loads(capsys.readouterr().out)
    assert shown["calls"] == 0 and shown["cached"] and set(shown["winners"]) == set(DIMENSIONS)


# --- what the serving side allows -----------------------------------------------------------------


def test_serve_keeps_lora_slots_for_a_policy_and_five_counterparts(tmp_path):
    argv = ServeConfig(model=str(tmp_path)).argv(8000)
    assert MAX_LORAS >= 6 and argv[argv.index("--max-loras") + 1] == str(MAX_LORAS)


def test_judge_prompt_in_both_languages():
    from training.judge_prompts import MAX_CONTEXT_CHARS, judge_messages

    system, user = judge_messages("Any fever?", "Drink water.", "Patient: cough", "Ask about fever.")
    assert all(d in system["content"] for d in DIMENSIONS) and "Reference doctor" in user["content"]
    assert user["content"].index("## Answer A") < user["content"].index("## Answer B")
    system, user = judge_messages("有发热吗？", "多喝水。", "", None, "zh-CN")
    assert "医生" in system["content"] and "参考医生" not in user["content"]
    assert "（无" in user["content"]  # no context: said so, in Chinese
    long_context = "old turn. " * MAX_CONTEXT_CHARS + "LATEST TURN"
    _, user = judge_messages("a", "b", long_context)
    assert "LATEST TURN" in user["content"] and len(user["content"]) < MAX_CONTEXT_CHARS + 200


def test_verdict_regex_is_the_compact_json_object():
    import re

    assert re.fullmatch(VERDICT_REGEX, GOOD)
    assert not re.fullmatch(VERDICT_REGEX, GOOD.replace('"A"', '"C"', 1))


@pytest.mark.vllm
def test_complete_n_gives_each_sample_its_token_count(vllm_server):
    engine = OpenAIEngine(OpenAIEngineConfig(base_url=vllm_server.base_url, model="tiny"))
    sampling = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=48, seed=5)
    samples = engine.complete([ChatMessage("user", "Cough for a week, what now?")], sampling, n=6)
    counts = [s.completion_tokens for s in samples]
    assert all(isinstance(n, int) and 1 <= n <= 48 for n in counts)
    for s in samples:  # a sample cut at the limit has exactly max_tokens
        assert (s.completion_tokens == 48) == (s.finish_reason == "length")
    single = engine.complete([ChatMessage("user", "Cough for a week?")], sampling)[0]
    assert single.completion_tokens and single.completion_tokens <= 48
