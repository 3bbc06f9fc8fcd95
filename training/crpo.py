"""CRPO: comparison-based policy optimisation of a LoRA policy, on TRL's GRPOTrainer.

Why GRPO's trainer: CRPO (PulseMind, AAAI 2026) is GRPO with a different reward. For each
prompt the policy samples G answers; each is compared by a judge with the answers of C
counterpart models on the four dimensions, and its reward is the share of (counterpart,
dimension) wins: R_g = mean_{c,d} 1[o_g beats CP_c on d] (ties 0, or 0.5 by option).
Advantages (group-normalised), the clipped ratio and the KL term are GRPO's, so this module
is a config and a reward function around `trl.GRPOTrainer`, not a trainer of its own:

- the counterparts are the export's `counterparts` column (other variants' logged answers to
  the same context, `pulsemind export --kind crpo --policy NAME`), C per prompt, one per
  counterpart variant first;
- the reward is `training.reward.make_reward_fn(judge, tie=...)` (one judge call per
  (candidate, counterpart) pair, a step's calls concurrent); its metrics (`crpo/reward`, one
  per dimension, `crpo/judge_errors`, `crpo/judge_calls`) go to TRL's `log_metric` and so
  into each step's log beside TRL's own (reward, KL when beta > 0, completion lengths);
- the LoRA policy, precision, base resolution, checkpoints, --resume and the adapter written
  complete or not at all are shared with SFT (training/common.py).

    pulsemind crpo --data exports/crpo --policy a1-sft --judge-url http://judge:8000/v1 \\
        --judge-model qwen-judge --out runs/crpo-1 --num-generations 8 --counterparts 5 --steps 200
    train_crpo(CRPOConfig(...), judge=Judge(...), on_metrics=print)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from training.common import (
    LORA_DROPOUT,
    LORA_RANK,
    CheckpointHook,
    MetricsHook,
    RunRecorder,
    check_out_dir,
    check_setting,
    export_fingerprint,
    fail,
    finish_command,
    load_export,
    load_model,
    lora_config,
    precision,
    precision_args,
    progress_callbacks,
    resolve_base,
    run_recorded,
    single_process_distributed_env,
    train_and_save,
)

if TYPE_CHECKING:
    import datasets

    from storage import Database

#: Checking that the judge answers: a healthy endpoint lists its models at once.
JUDGE_CHECK_TIMEOUT_S = 15.0
#: Columns the trainer reads; `counterparts` reaches the reward function as a keyword.
CRPO_COLUMNS = ["prompt", "images", "counterparts", "counterpart_variants"]


@dataclass(frozen=True)
class CRPOConfig:
    """One CRPO run (`pulsemind crpo`)."""

    data: Path
    """A crpo export (`pulsemind export --kind crpo --policy NAME`)."""
    policy: str
    """The policy: a model variant's name, a model folder, or an adapter folder."""
    out: Path
    """Run folder: checkpoint-N/ while training, adapter/ when done."""
    judge_url: str | None = None
    """The judge's OpenAI-compatible endpoint (http://host:8000/v1)."""
    judge_model: str | None = None
    """The model name the judge endpoint serves."""
    judge_language: str = "en"
    """The judge's prompt language: en or zh-CN."""
    both_orders: bool = False
    """Judge each pair in both orders and count only consistent wins (twice the calls)."""
    num_generations: int = 8
    """G: answers sampled per prompt (the group GRPO normalises over)."""
    counterparts: int = 5
    """C: counterpart answers each sample is compared with (the paper's C = 5)."""
    tie: float = 0.0
    """Reward of a tied dimension: 0 (the paper) or 0.5."""
    prompts_per_step: int = 1
    """Prompts per device per optimizer step (each with G samples)."""
    steps: int | None = None
    """Optimizer steps; None: `epochs` passes over the prompts."""
    epochs: float = 1.0
    learning_rate: float = 1e-5
    """Peak AdamW learning rate (cosine decay); LoRA RL runs use about 1e-5."""
    beta: float = 0.04
    """KL coefficient against the policy without this run's update (0: no KL term or log)."""
    loss_type: str = "grpo"
    """TRL's loss aggregation; "grpo" is the paper's (GRPO's per-sequence normalisation)."""
    max_completion_length: int = 512
    """Tokens per sampled answer."""
    temperature: float = 1.0
    """Sampling temperature of the G answers."""
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 1
    lora_rank: int = LORA_RANK
    lora_alpha: int | None = None
    lora_dropout: float = LORA_DROPOUT
    gradient_checkpointing: bool = True
    resume: bool = False
    deepspeed: Path | None = None
    seed: int = 0
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    """More `trl.GRPOConfig` fields."""

    def __post_init__(self) -> None:
        check_setting(self.num_generations >= 2, "--num-generations must be at least 2 "
                      "(advantages compare a prompt's answers with each other)")  # fmt: skip
        check_setting(self.counterparts >= 1, "--counterparts must be at least 1")
        check_setting(self.tie in (0.0, 0.5), "--tie must be 0 or 0.5")
        check_setting(
            self.judge_language in ("en", "zh-CN"), "--judge-language must be en or zh-CN"
        )
        check_setting(self.prompts_per_step >= 1, "--prompts-per-step must be positive")
        check_setting(self.steps is None or self.steps > 0, "--steps must be positive")
        check_setting(self.learning_rate > 0, "--lr must be positive")
        check_setting(self.beta >= 0, "--beta must not be negative")
        check_setting(self.max_completion_length > 0, "--max-completion-length must be positive")
        check_setting(self.deepspeed is None or Path(self.deepspeed).is_file(),
                      f"--deepspeed {self.deepspeed}: no such file")  # fmt: skip


@dataclass(frozen=True)
class CRPOResult:
    adapter_dir: Path
    steps: int
    metrics: dict[str, float]


def pick_counterparts(
    answers: list[str], variants: list[str], limit: int
) -> tuple[list[str], list[str]]:
    """Up to `limit` counterpart answers, one per counterpart variant first (the paper's C
    counterpart models), then more from variants already taken, in export order.

    >>> pick_counterparts(["a1", "a2", "b1"], ["A", "A", "B"], 2)
    (['a1', 'b1'], ['A', 'B'])
    """
    order = [i for i, v in enumerate(variants) if v not in variants[:i]]
    order += [i for i in range(len(answers)) if i not in order]
    chosen = sorted(i for i in order[:limit] if answers[i].strip())
    return [answers[i] for i in chosen], [variants[i] for i in chosen]


def training_rows(data: datasets.Dataset, counterparts: int) -> datasets.Dataset:
    """The export's prompts with C counterparts each (`pick_counterparts`)."""

    def pick(row: dict[str, Any]) -> dict[str, Any]:
        variants = row.get("counterpart_variants") or [""] * len(row["counterparts"])
        answers, names = pick_counterparts(row["counterparts"], variants, counterparts)
        return {"counterparts": answers, "counterpart_variants": names}

    columns = [c for c in CRPO_COLUMNS if c in data.column_names]
    return data.select_columns(columns).map(pick, desc="counterparts")


def make_judge(config: CRPOConfig, db: Database | None = None) -> Any:
    """The judge of `--judge-url` / `--judge-model` (training/judge.py), its verdicts cached
    in `db` when there is one; TrainingError now if the endpoint is down or does not serve
    that model (rather than a run whose every comparison fails)."""
    from training.judge import Judge, JudgeConfig

    check_setting(bool(config.judge_url and config.judge_model),
                  "--judge-url and --judge-model are both needed")  # fmt: skip
    judge_config = JudgeConfig(base_url=config.judge_url, model=config.judge_model,
                               language=config.judge_language, both_orders=config.both_orders)  # fmt: skip
    check_judge(judge_config)
    return Judge(judge_config, cache=db)


def check_judge(judge_config: Any) -> None:
    """TrainingError unless the judge endpoint answers and lists the judge model."""
    import openai

    client = openai.OpenAI(base_url=judge_config.base_url, api_key=judge_config.api_key,
                           timeout=JUDGE_CHECK_TIMEOUT_S, max_retries=1)  # fmt: skip
    try:
        served = [m.id for m in client.models.list()]
    except openai.OpenAIError as exc:
        raise fail("judge_down", f"{judge_config.base_url}: {type(exc).__name__}: {exc}",
                   url=judge_config.base_url) from exc  # fmt: skip
    finally:
        client.close()
    if judge_config.model not in served:
        raise fail("judge_model", url=judge_config.base_url, model=judge_config.model,
                   served=", ".join(served[:10]) or "-")  # fmt: skip


def stop_when_judge_fails(judge: Any, tie: float) -> Callable[..., list[float | None]]:
    """`training.reward.make_reward_fn(judge, tie=tie)`, stopping the run (TrainingError; the
    checkpoints so far stay, --resume continues) when a step gets no verdict at all: the judge
    went down. Single failed comparisons are the reward's business (left out, counted)."""
    from training.reward import make_reward_fn

    judged = make_reward_fn(judge, tie=tie)

    def crpo(*args: Any, **kwargs: Any) -> list[float | None]:
        rewards = judged(*args, **kwargs)
        if rewards and all(r is None for r in rewards):
            step = getattr(kwargs.get("trainer_state"), "global_step", "?")
            raise fail("judge_failed", f"step {step}: {len(rewards)} samples, no verdict",
                       url=judge.config.base_url, step=step)  # fmt: skip
        return rewards

    crpo.__name__ = judged.__name__  # TRL names the reward's logs after it (rewards/crpo/mean)
    return crpo


def trl_config(config: CRPOConfig, **overrides: Any):
    """The `trl.GRPOConfig` of a run (see `CRPOConfig` for each choice)."""
    from trl import GRPOConfig

    fields: dict[str, Any] = dict(
        output_dir=str(config.out),
        max_steps=config.steps or -1,
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        optim="adamw_torch",
        per_device_train_batch_size=config.num_generations * config.prompts_per_step,
        gradient_accumulation_steps=1,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.beta,
        loss_type=config.loss_type,
        activation_checkpointing=config.gradient_checkpointing,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to="none",
        seed=config.seed,
        disable_tqdm=not config.progress,
        deepspeed=str(config.deepspeed) if config.deepspeed else None,
        **precision_args(precision()),
    )
    fields.update(config.extra)
    fields.update(overrides)
    return GRPOConfig(**fields)


def build_trainer(config: CRPOConfig, *, judge: Any = None, db: Database | None = None,
                  on_metrics: MetricsHook | None = None,
                  on_checkpoint: CheckpointHook | None = None):  # fmt: skip
    """(trainer, resume checkpoint, run info), everything checked and loaded, nothing written.
    `judge` (a `training.judge.Judge`) replaces the one `--judge-url` names."""
    from trl import GRPOTrainer

    data = load_export(Path(config.data), "crpo", trainer="pulsemind crpo")
    resume_from = check_out_dir(Path(config.out), config.resume)
    base = resolve_base(config.policy, db)
    reward = stop_when_judge_fails(
        judge if judge is not None else make_judge(config, db), config.tie
    )
    if config.deepspeed:
        single_process_distributed_env()
    args = trl_config(config)
    model, processor = load_model(base, "bf16" if args.bf16 else "fp32")
    peft = None if base.adapter_dir else lora_config(config.lora_rank, config.lora_alpha,
                                                      config.lora_dropout)  # fmt: skip
    callbacks = progress_callbacks(on_metrics, on_checkpoint)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args,
                          train_dataset=training_rows(data, config.counterparts),
                          processing_class=processor, peft_config=peft, callbacks=callbacks)  # fmt: skip
    info = {"kind": "crpo", "policy": config.policy, "base_model_dir": str(base.model_dir),
            "base_adapter_dir": str(base.adapter_dir) if base.adapter_dir else None,
            "parent_variant": base.variant, "data": str(config.data),
            "data_fingerprint": export_fingerprint(data), "rows": len(data),
            "judge_url": config.judge_url, "judge_model": config.judge_model,
            "precision": "bf16" if args.bf16 else "fp32", "processes": args.world_size,
            "config": asdict(config)}  # fmt: skip
    return trainer, resume_from, info


def train_crpo(config: CRPOConfig, *, judge: Any = None, db: Database | None = None,
               on_metrics: MetricsHook | None = None,
               on_checkpoint: CheckpointHook | None = None) -> CRPOResult:  # fmt: skip
    """Train the policy's adapter with CRPO; `on_metrics(step, {"reward", "crpo/accuracy",
    "crpo/judge_errors", "kl", ...})` at every log and `on_checkpoint(folder)` after every
    checkpoint (main process only)."""
    trainer, resume_from, info = build_trainer(config, judge=judge, db=db, on_metrics=on_metrics,
                                               on_checkpoint=on_checkpoint)  # fmt: skip
    logger.info("crpo: {} prompts from {}, policy {}, G={} C={} into {}{}", info["rows"],
                config.data, config.policy, config.num_generations, config.counterparts,
                config.out, f", resuming from {resume_from}" if resume_from else "")  # fmt: skip
    output, adapter = train_and_save(trainer, resume_from, Path(config.out), info)
    last = next((h for h in reversed(trainer.state.log_history) if "reward" in h), {})
    return CRPOResult(adapter, trainer.state.global_step, {**last, **output.metrics})


# --- command line ----------------------------------------------------------------------------


def add_arguments(parser) -> None:
    """`pulsemind crpo` options (app/cli.py adds --database-url)."""
    parser.add_argument("--data", required=True, type=Path, help="a crpo export folder")
    parser.add_argument("--policy", required=True,
                        help="model variant name, model folder, or adapter folder")  # fmt: skip
    parser.add_argument("--judge-url", required=True, help="judge endpoint, http://host:8000/v1")
    parser.add_argument("--judge-model", required=True, help="model name the judge serves")
    parser.add_argument("--judge-language", default="en", choices=["en", "zh-CN"],
                        help="the judge's prompt language")  # fmt: skip
    parser.add_argument("--both-orders", action="store_true",
                        help="judge each pair in both orders; only consistent wins count")  # fmt: skip
    parser.add_argument(
        "--out", required=True, type=Path, help="run folder (checkpoints, adapter/)"
    )
    parser.add_argument("--num-generations", type=int, default=8, help="G: samples per prompt")
    parser.add_argument("--counterparts", type=int, default=5, help="C: counterparts per prompt")
    parser.add_argument("--tie", type=float, default=0.0, choices=[0.0, 0.5],
                        help="reward of a tied dimension (default 0)")  # fmt: skip
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="optimizer steps")
    length.add_argument("--epochs", type=float, default=1.0, help="passes over the prompts")
    parser.add_argument("--lr", type=float, default=1e-5, help="peak learning rate (cosine decay)")
    parser.add_argument("--beta", type=float, default=0.04, help="KL coefficient (0: none)")
    parser.add_argument("--max-completion-length", type=int, default=512, help="tokens per sample")
    parser.add_argument("--save-steps", type=int, default=50, help="a checkpoint every N steps")
    parser.add_argument("--lora-rank", type=int, default=LORA_RANK, help="LoRA rank (default 64)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in --out"
    )
    parser.add_argument("--deepspeed", type=Path, default=None, help="DeepSpeed config (ZeRO-3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--run-id", type=int, default=None,
                        help="record status, metrics and checkpoints on this training run's row")  # fmt: skip


def cli_main(args, database) -> int:
    """Run `pulsemind crpo`; `database()` opens the database (only if --policy names a variant)."""
    config = CRPOConfig(data=args.data, policy=args.policy, out=args.out, judge_url=args.judge_url,
                        judge_model=args.judge_model, judge_language=args.judge_language,
                        both_orders=args.both_orders, num_generations=args.num_generations,
                        counterparts=args.counterparts, tie=args.tie, steps=args.steps,
                        epochs=args.epochs, learning_rate=args.lr, beta=args.beta,
                        max_completion_length=args.max_completion_length,
                        save_steps=args.save_steps, lora_rank=args.lora_rank, resume=args.resume,
                        deepspeed=args.deepspeed, seed=args.seed,
                        progress=not args.no_progress)  # fmt: skip
    db = database()  # variants, the judge's verdict cache, the run's row
    recorder = RunRecorder(db, args.run_id) if args.run_id is not None else None
    result = run_recorded(train_crpo, recorder, config=config, db=db)
    reward = result.metrics.get("reward")
    print(
        f"trained {result.steps} steps"
        + (f", last reward {reward:.3f}" if reward is not None else "")
    )
    print(f"adapter: {result.adapter_dir}")
    return finish_command(0)
