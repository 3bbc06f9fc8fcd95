"""`pulsemind bench consult`: both paths measured against the real vLLM server, ratios from them."""

from __future__ import annotations

import json

import pytest

from app.bench.consult import BenchConsultConfig
from app.bench.consult import main as bench_consult
from app.bench.stats import Sample, batch_stats, format_report, summarize


def test_rates_and_ratios_are_computed_from_the_samples():
    # two requests: 11 tokens, first at +0.1 s, done at +1.1 s -> 10 tokens/s after the first
    batch = batch_stats([Sample(0.0, 0.1, 1.1, 11), Sample(0.5, 0.7, 2.7, 21)])
    assert batch["ttft_p50_s"] == pytest.approx(0.15)
    assert batch["tok_s_p50"] == pytest.approx(10.0)
    assert batch["throughput_tok_s"] == pytest.approx(32 / 2.7)
    slow = batch_stats([Sample(0.0, 0.2, 2.2, 11), Sample(0.5, 0.9, 4.9, 21)])
    cfg = BenchConsultConfig(model_url="http://127.0.0.1:1/v1", model="m", concurrency=(2,),
                             repeats=1)  # fmt: skip
    result = summarize(cfg, {("direct", 2): [batch], ("app", 2): [slow]})
    assert list(result["levels"][0]["ratios"]) == ["app"]  # the browser path was not measured
    ratios = result["levels"][0]["ratios"]["app"]
    assert ratios["ttft"] == pytest.approx(0.3 / 0.15)
    assert ratios["tok_s"] == pytest.approx(5.0 / 10.0)
    assert ratios["throughput"] == pytest.approx((32 / 4.9) / (32 / 2.7))
    assert result["goal"] == {"concurrency": 2, "throughput_ratio": ratios["throughput"],
                              "target": 0.9, "met": False}  # fmt: skip
    assert (
        "through-app throughput (/consult) at 2 concurrent: 0.55x direct (goal >= 0.9x: NOT met)"
        in format_report(result)
    )


def test_model_url_needs_a_model_name(capsys):
    assert bench_consult(["--model-url", "http://127.0.0.1:9/v1"]) == 2
    assert "--model" in capsys.readouterr().err


@pytest.mark.vllm
def test_quick_run_measures_both_paths(vllm_server, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench_consult([
        "--model-url", vllm_server.base_url, "--model", "tiny", "--concurrency", "1", "2",
        "--repeats", "1", "--max-tokens", "16", "--json", str(out),
    ])  # fmt: skip
    assert rc == 0
    result = json.loads(out.read_text())
    assert [lv["concurrency"] for lv in result["levels"]] == [1, 2]
    for lv in result["levels"]:
        for path in ("direct", "app", "ui"):
            m = lv[path]
            assert m["ttft_p50_s"] > 0 and m["tok_s_p50"] > 0 and m["throughput_tok_s"] > 0
            (run,) = m["repeats"]
            assert len(run["completion_tokens"]) == lv["concurrency"]
            assert all(0 < t <= 16 for t in run["completion_tokens"])
        d = lv["direct"]
        for path in ("app", "ui"):
            a, r = lv[path], lv["ratios"][path]
            assert r["ttft"] == pytest.approx(a["ttft_p50_s"] / d["ttft_p50_s"])
            assert r["tok_s"] == pytest.approx(a["tok_s_p50"] / d["tok_s_p50"])
            assert r["throughput"] == pytest.approx(a["throughput_tok_s"] / d["throughput_tok_s"])
        assert lv["tokens_match"], "same prompt, greedy: every path generates the same answer"
    goal = result["goal"]
    assert (
        goal["concurrency"] == 2
        and goal["throughput_ratio"] == result["levels"][1]["ratios"]["app"]["throughput"]
    )
    printed = capsys.readouterr().out
    assert (
        f"through-app throughput (/consult) at 2 concurrent: {goal['throughput_ratio']:.2f}x direct"
        in printed
    )
