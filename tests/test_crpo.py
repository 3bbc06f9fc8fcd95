"""CRPO (training/crpo.py) on the tiny demo model: TRL's GRPOTrainer with the LoRA policy and the
comparison reward of training/reward.py, on crpo-export-shaped datasets the tests write with the
served prompt builder (three-turn context, two images, counterparts from two variants).

- `FakeJudge` (a fake, named as such: fast, and its verdicts are known) gives each pair a
  verdict drawn from the two answers' text: 2 steps train, rewards in [0, 1], per-dimension
  reward, judge errors and KL reported per step, G x C judge items per step, LoRA weights
  changed. A judge that gives no verdict at all stops the run with a sentence saying so.
- The real vLLM CPU server as the judge (its structured output makes every verdict parse),
  reached through `--judge-url`/`--judge-model` as the command line does (marked vllm).
- A judge endpoint that is down, an sft export given to CRPO: refused before training.

Run: OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pytest tests/test_crpo.py -q
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from model.prompt import to_chat_messages
from tests.test_sft import StopAt, dialogue_records, sft_row, write_export
from training.common import ADAPTER_DIR, TRAINING_INFO_FILE, TrainingError
from training.crpo import CRPOConfig, build_trainer, pick_counterparts, train_crpo
from training.export import chat_columns
from training.judge import DIMENSIONS, WINNERS, JudgeConfig, Verdict

COUNTERPARTS = ["Stop the new powder and use a mild steroid cream.", "Could be anything.",
                "How long has the rash lasted? Any fever?"]  # fmt: skip
COUNTERPART_VARIANTS = ["base", "base", "a1"]
G, C = 4, 2


class FakeJudge:
    """A fake judge (named as such): the verdict of a pair is drawn from a hash of the two
    answers, so different samples get different rewards; `error=True`: every verdict fails.
    Records the items of each `judge_many` call (one per training step)."""

    def __init__(self, *, error: bool = False):
        self.config = JudgeConfig(base_url="http://fake-judge.invalid/v1", model="fake")
        self.error = error
        self.batches: list[list] = []
        self.calls = 0

    def judge_many(self, items):
        self.batches.append(list(items))
        self.calls += len(items)
        if self.error:
            return [Verdict.failed("unusable verdict (3 attempts)", calls=3) for _ in items]
        return [Verdict(dict(zip(DIMENSIONS, self._winners(i), strict=True))) for i in items]

    @staticmethod
    def _winners(item):
        digest = hashlib.sha256(f"{item.a}\0{item.b}".encode()).digest()
        return [WINNERS[b % 3] for b in digest[: len(DIMENSIONS)]]


def crpo_row(records, counterparts=COUNTERPARTS, variants=COUNTERPART_VARIANTS) -> dict:
    """One `crpo` export row: the context before the answer, as the export builds it."""
    prompt, images = chat_columns(to_chat_messages(records, language="en"))
    trace = {
        k: v
        for k, v in sft_row(records).items()
        if k not in ("source", "signals", "messages", "images")
    }
    return {"prompt": prompt, "images": images, "counterparts": counterparts,
            "counterpart_variants": variants, **trace}  # fmt: skip


@pytest.fixture(scope="module")
def crpo_export(tmp_path_factory) -> Path:
    row = crpo_row(dialogue_records(last_answer=False))
    return write_export(tmp_path_factory.mktemp("crpo") / "export", [row, row], "crpo")


def config(data: Path, policy: Path, out: Path, **kw) -> CRPOConfig:
    defaults = dict(num_generations=G, counterparts=C, steps=2, max_completion_length=8,
                    learning_rate=1e-2, lora_rank=8, save_steps=10, gradient_checkpointing=False,
                    progress=False)  # fmt: skip
    return CRPOConfig(data=data, policy=str(policy), out=out, **{**defaults, **kw})


def reward_logs(metrics: list[tuple[int, dict]]) -> list[dict]:
    return [m for _, m in metrics if "reward" in m]


def assert_step_metrics(logs: list[dict]) -> None:
    assert len(logs) == 2
    for m in logs:
        assert 0.0 <= m["reward"] <= 1.0 and 0.0 <= m["crpo/reward"] <= 1.0
        assert all(0.0 <= m[f"crpo/{d}"] <= 1.0 for d in DIMENSIONS)
        assert m["crpo/judge_errors"] == 0 and "kl" in m and math.isfinite(m["kl"])
        assert math.isfinite(m["grad_norm"])


def test_pick_counterparts_one_per_variant_first():
    assert pick_counterparts(COUNTERPARTS, COUNTERPART_VARIANTS, 2) == (
        [COUNTERPARTS[0], COUNTERPARTS[2]], ["base", "a1"])  # fmt: skip
    assert pick_counterparts(COUNTERPARTS, COUNTERPART_VARIANTS, 5)[0] == COUNTERPARTS


def test_crpo_trains_the_lora_policy_on_comparison_rewards(crpo_export, demo_model_dir, tmp_path):
    import torch

    judge, metrics = FakeJudge(), []
    cfg = config(crpo_export, demo_model_dir, tmp_path / "run")
    trainer, _, _ = build_trainer(cfg, judge=judge, on_metrics=lambda s, m: metrics.append((s, m)))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert before and all("lora_" in n and "language_model" in n for n in before)
    trainer.train()

    # G samples x C counterparts judged per step, all in one batch (issued concurrently)
    assert [len(b) for b in judge.batches] == [G * C, G * C]
    first = judge.batches[0]
    assert {i.b for i in first[0::2]} | {i.a for i in first[1::2]} == {
        COUNTERPARTS[0],
        COUNTERPARTS[2],
    }
    assert "Rash on the forearm" in first[0].context  # the prompt the policy saw
    logs = reward_logs(metrics)
    assert_step_metrics(logs)
    assert any(m["reward_std"] > 0 for m in logs)  # the samples' rewards differ: a signal
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n].detach()) for n in before)


def test_crpo_writes_the_adapter_and_its_origin(crpo_export, demo_model_dir, tmp_path):
    out = tmp_path / "run"
    result = train_crpo(
        config(crpo_export, demo_model_dir, out, steps=1, tie=0.5), judge=FakeJudge()
    )
    assert result.steps == 1 and result.adapter_dir == out / ADAPTER_DIR
    info = json.loads((result.adapter_dir / TRAINING_INFO_FILE).read_text())
    assert info["kind"] == "crpo" and info["rows"] == 2 and info["config"]["tie"] == 0.5
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


def test_resume_continues_from_the_last_checkpoint(crpo_export, demo_model_dir, tmp_path):
    """A run that died after step 2 (checkpoint-2 kept) continues with --resume at step 3: the
    steps done are neither trained nor judged again."""
    out = tmp_path / "run"
    first = FakeJudge()
    trainer, _, _ = build_trainer(config(crpo_export, demo_model_dir, out, steps=3, save_steps=2),
                                  judge=first)  # fmt: skip
    trainer.add_callback(StopAt(2))
    trainer.train()  # stops after step 2 with checkpoint-2 written, no adapter/: a crash
    assert (out / "checkpoint-2").is_dir() and not (out / ADAPTER_DIR).exists()
    assert len(first.batches) == 2
    with pytest.raises(TrainingError, match="--resume"):
        train_crpo(config(crpo_export, demo_model_dir, out, steps=3, save_steps=2), judge=first)
    again, steps = FakeJudge(), []
    result = train_crpo(config(crpo_export, demo_model_dir, out, steps=3, save_steps=2,
                               resume=True), judge=again,
                        on_metrics=lambda s, m: steps.append(s))  # fmt: skip
    assert [len(b) for b in again.batches] == [G * C], "only step 3 is judged"
    assert min(steps) == 3 and result.steps == 3 and result.adapter_dir == out / ADAPTER_DIR
    info = json.loads((result.adapter_dir / TRAINING_INFO_FILE).read_text())
    assert info["kind"] == "crpo" and info["steps"] == 3
    with pytest.raises(TrainingError, match="finished adapter"):
        train_crpo(config(crpo_export, demo_model_dir, out, steps=3, resume=True), judge=again)


def test_a_judge_giving_no_verdict_stops_the_run(crpo_export, demo_model_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        train_crpo(config(crpo_export, demo_model_dir, out), judge=FakeJudge(error=True))
    assert "no verdict for any comparison of step" in info.value.user_message
    assert not (out / ADAPTER_DIR).exists()


def test_refused_before_training(crpo_export, demo_model_dir, tmp_path):
    from model.serve import free_port

    out = tmp_path / "run"
    down = config(crpo_export, demo_model_dir, out, judge_url=f"http://127.0.0.1:{free_port()}/v1",
                  judge_model="judge")  # fmt: skip
    with pytest.raises(TrainingError) as info:
        train_crpo(down)
    assert "cannot be reached" in info.value.user_message and " / " in info.value.user_message
    sft = write_export(tmp_path / "sft", [sft_row(dialogue_records())])
    with pytest.raises(TrainingError) as info:
        train_crpo(config(sft, demo_model_dir, out), judge=FakeJudge())
    assert "is a sft export, but pulsemind crpo needs a crpo export" in info.value.user_message
    with pytest.raises(TrainingError, match="at least 2"):
        config(crpo_export, demo_model_dir, out, num_generations=1)
    assert not out.exists()


@pytest.mark.vllm
def test_crpo_with_the_vllm_server_as_judge(crpo_export, demo_model_dir, tmp_path, vllm_server, db,
                                            capsys):  # fmt: skip
    """The real judge (training/judge.py on the vLLM server, structured output, verdicts cached
    in SQL). The tiny model is random: greedy (or sampled with a fixed seed) it gives every pair
    the same verdict and so every sample the same reward, no signal; sampled unseeded at
    temperature 1, its verdicts differ."""
    import torch

    from app.cli import main
    from training.judge import Judge

    metrics: list[tuple[int, dict]] = []
    judge = Judge(
        JudgeConfig(base_url=vllm_server.base_url, model="tiny", temperature=1.0, seed=None),
        cache=db,
    )
    cfg = config(crpo_export, demo_model_dir, tmp_path / "run")
    trainer, _, _ = build_trainer(cfg, judge=judge, on_metrics=lambda s, m: metrics.append((s, m)))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    logs = reward_logs(metrics)
    assert_step_metrics(logs)
    assert all(m["crpo/judge_calls"] == G * C for m in logs)  # one call per pair, 4 dimensions each
    assert any(m["reward_std"] > 0 for m in logs)
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n].detach()) for n in before)

    # `pulsemind crpo` with --judge-url / --judge-model: the endpoint checked, then one step
    out, url = tmp_path / "cli-run", db.url.render_as_string(hide_password=False)
    code = main(["crpo", "--data", str(crpo_export), "--policy", str(demo_model_dir), "--out", str(out),
                 "--judge-url", vllm_server.base_url, "--judge-model", "tiny", "--steps", "1",
                 "--num-generations", "2", "--counterparts", "1", "--max-completion-length", "8",
                 "--lora-rank", "4", "--no-progress", "--database-url", url])  # fmt: skip
    assert code == 0 and f"adapter: {out / ADAPTER_DIR}" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="does not serve 'judge'"):
        main(["crpo", "--data", str(crpo_export), "--policy", str(demo_model_dir),
              "--out", str(tmp_path / "other"), "--judge-url", vllm_server.base_url,
              "--judge-model", "judge", "--steps", "1", "--database-url", url])  # fmt: skip
