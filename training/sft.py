"""Supervised fine-tuning: a LoRA adapter on the exported consultations, with TRL's SFTTrainer.

Why TRL: its SFTTrainer already does what the paper's SFT needs, and it is maintained:
multi-turn conversations with many images each (its vision collator runs the model's
processor on the fly), loss on the assistant's tokens only (`assistant_only_loss`: it swaps
in Qwen2.5-VL's training chat template with generation markers), PEFT, DeepSpeed. This module
adds the project's parts: the base given as a variant or a folder, the export checked before
anything loads, the paper's LoRA (training/common.py), precision chosen by the hardware,
checkpoints and `--resume`, metrics to a hook, the adapter written complete or not at all.

The prompt is the served one: `pulsemind export --kind sft` stores each conversation as
`model.prompt.to_chat_messages` built it (system prompt, attachment context lines, image
placeholders), and the model's own chat template renders it, as vLLM does when serving.

    pulsemind sft --data exports/sft --base base --out runs/sft-1 --steps 500
    pulsemind sft --data exports/sft --base base --out runs/sft-1 --steps 500 --resume
    deepspeed --num_gpus 8 -m app.cli sft --data ... --deepspeed training/zero3.json
    train_sft(SFTConfig(data=Path("exports/sft"), base="/models/qwen", out=Path("runs/1")),
              on_metrics=lambda step, m: print(step, m["loss"]))
"""

from __future__ import annotations

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
    from storage import Database

#: Columns the trainer reads; the rest of an export row (source ids) stays in the export.
SFT_COLUMNS = ["messages", "images"]


@dataclass(frozen=True)
class SFTConfig:
    """One SFT run (`pulsemind sft`)."""

    data: Path
    """An sft export (`pulsemind export --kind sft`)."""
    base: str
    """A model variant's name, a model folder, or an adapter folder (trained further)."""
    out: Path
    """Run folder: checkpoint-N/ while training, adapter/ when done."""
    steps: int | None = None
    """Optimizer steps; None: `epochs` passes over the data."""
    epochs: float = 1.0
    """Passes over the data when `steps` is None."""
    learning_rate: float = 2e-4
    """Peak AdamW learning rate (cosine decay after warm-up); 2e-4 is the usual LoRA value."""
    batch_size: int = 1
    """Conversations per device per step (they carry many images; 1 is the safe default)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    warmup_ratio: float = 0.03
    """Share of the steps spent warming the learning rate up."""
    save_steps: int = 50
    """A checkpoint every this many steps (what --resume continues from)."""
    save_total_limit: int = 2
    """Checkpoints kept (older ones are deleted)."""
    logging_steps: int = 1
    """Loss and learning rate reported every this many steps."""
    max_length: int | None = None
    """Truncate longer conversations (tokens); None: never (truncation could cut an image)."""
    lora_rank: int = LORA_RANK
    lora_alpha: int | None = None
    """None: 2 x rank."""
    lora_dropout: float = LORA_DROPOUT
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass (TRL's default: long multi-image dialogues)."""
    resume: bool = False
    """Continue from the last checkpoint in `out`."""
    deepspeed: Path | None = None
    """A DeepSpeed config (training/zero3.json) for ZeRO-3 across processes and machines."""
    seed: int = 0
    progress: bool = True
    """Show the progress bar (transformers' tqdm)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """More `trl.SFTConfig` fields, for what this dataclass does not name."""

    def __post_init__(self) -> None:
        check_setting(self.steps is None or self.steps > 0, "--steps must be positive")
        check_setting(self.epochs > 0, "--epochs must be positive")
        check_setting(self.learning_rate > 0, "--lr must be positive")
        check_setting(self.batch_size > 0 and self.grad_accum > 0,
                      "--batch and --grad-accum must be positive")  # fmt: skip
        check_setting(self.save_steps > 0, "--save-steps must be positive")
        check_setting(self.lora_rank > 0, "--lora-rank must be positive")
        check_setting(0 <= self.lora_dropout < 1, "--lora-dropout must be in [0, 1)")
        check_setting(self.deepspeed is None or Path(self.deepspeed).is_file(),
                      f"--deepspeed {self.deepspeed}: no such file")  # fmt: skip


@dataclass(frozen=True)
class SFTResult:
    adapter_dir: Path
    steps: int
    metrics: dict[str, float]
    """The run's summary (train_runtime, train_loss, ...) and last logged values."""


def trl_config(config: SFTConfig, **overrides: Any):
    """The `trl.SFTConfig` of a run: AdamW, cosine schedule, assistant-only loss, bf16 or fp32
    by hardware, checkpoints every `save_steps`, no hub, no reporting integrations."""
    from trl import SFTConfig as TRLSFTConfig

    chosen = precision()
    fields: dict[str, Any] = dict(
        output_dir=str(config.out),
        max_steps=config.steps or -1,
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio,  # a float < 1 is a ratio of the steps (transformers 5)
        optim="adamw_torch",
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        assistant_only_loss=True,
        max_length=config.max_length,
        activation_checkpointing=config.gradient_checkpointing,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to="none",
        seed=config.seed,
        disable_tqdm=not config.progress,
        dataloader_num_workers=0,
        deepspeed=str(config.deepspeed) if config.deepspeed else None,
        **precision_args(chosen),
    )
    fields.update(config.extra)
    fields.update(overrides)
    return TRLSFTConfig(**fields)


def build_trainer(config: SFTConfig, *, db: Database | None = None,
                  on_metrics: MetricsHook | None = None,
                  on_checkpoint: CheckpointHook | None = None):  # fmt: skip
    """(trainer, resume checkpoint, run info) for `config`, everything checked and loaded;
    nothing is written yet. TrainingError names what is wrong."""
    from trl import SFTTrainer

    data = load_export(Path(config.data), "sft", trainer="pulsemind sft")
    resume_from = check_out_dir(Path(config.out), config.resume)
    base = resolve_base(config.base, db)
    if config.deepspeed:
        single_process_distributed_env()
    # The training arguments first: under ZeRO-3 they make from_pretrained partition weights.
    args = trl_config(config)
    model, processor = load_model(base, "bf16" if args.bf16 else "fp32")
    peft = None if base.adapter_dir else lora_config(config.lora_rank, config.lora_alpha,
                                                      config.lora_dropout)  # fmt: skip
    callbacks = progress_callbacks(on_metrics, on_checkpoint)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data.select_columns(SFT_COLUMNS),
                         processing_class=processor, peft_config=peft, callbacks=callbacks)  # fmt: skip
    info = {"kind": "sft", "base": config.base, "base_model_dir": str(base.model_dir),
            "base_adapter_dir": str(base.adapter_dir) if base.adapter_dir else None,
            "parent_variant": base.variant, "data": str(config.data),
            "data_fingerprint": export_fingerprint(data), "rows": len(data),
            "precision": "bf16" if args.bf16 else "fp32", "processes": args.world_size,
            "config": asdict(config)}  # fmt: skip
    return trainer, resume_from, info


def train_sft(config: SFTConfig, *, db: Database | None = None,
              on_metrics: MetricsHook | None = None,
              on_checkpoint: CheckpointHook | None = None) -> SFTResult:  # fmt: skip
    """Train the adapter of `config`; returns where it is. `on_metrics(step, {"loss",
    "learning_rate", "grad_norm", ...})` is called at every log and `on_checkpoint(folder)`
    after every checkpoint (main process only)."""
    trainer, resume_from, info = build_trainer(config, db=db, on_metrics=on_metrics,
                                               on_checkpoint=on_checkpoint)  # fmt: skip
    logger.info("sft: {} rows from {}, base {}, {} into {}{}", info["rows"], config.data,
                info["base_model_dir"], info["precision"], config.out,
                f", resuming from {resume_from}" if resume_from else "")  # fmt: skip
    output, adapter = train_and_save(trainer, resume_from, Path(config.out), info)
    last = next((h for h in reversed(trainer.state.log_history) if "loss" in h), {})
    return SFTResult(adapter, trainer.state.global_step, {**last, **output.metrics})


# --- command line ----------------------------------------------------------------------------


def add_arguments(parser) -> None:
    """`pulsemind sft` options (app/cli.py adds --database-url)."""
    parser.add_argument("--data", required=True, type=Path, help="an sft export folder")
    parser.add_argument("--base", required=True,
                        help="model variant name, model folder, or adapter folder to train further")  # fmt: skip
    parser.add_argument(
        "--out", required=True, type=Path, help="run folder (checkpoints, adapter/)"
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="optimizer steps")
    length.add_argument(
        "--epochs", type=float, default=1.0, help="passes over the data (default 1)"
    )
    parser.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (cosine decay)")
    parser.add_argument("--batch", type=int, default=1, help="conversations per device per step")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step")
    parser.add_argument("--save-steps", type=int, default=50, help="a checkpoint every N steps")
    parser.add_argument(
        "--max-length", type=int, default=None, help="truncate longer conversations"
    )
    parser.add_argument("--lora-rank", type=int, default=LORA_RANK, help="LoRA rank (default 64)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in --out"
    )
    parser.add_argument("--deepspeed", type=Path, default=None,
                        help="DeepSpeed config, e.g. training/zero3.json (ZeRO-3)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--run-id", type=int, default=None,
                        help="record status, metrics and checkpoints on this training run's row")  # fmt: skip


def cli_main(args, database) -> int:
    """Run `pulsemind sft`; `database()` opens the database (if --base names a variant, or
    with --run-id)."""
    config = SFTConfig(data=args.data, base=args.base, out=args.out, steps=args.steps,
                       epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch,
                       grad_accum=args.grad_accum, save_steps=args.save_steps,
                       max_length=args.max_length, lora_rank=args.lora_rank, resume=args.resume,
                       deepspeed=args.deepspeed, seed=args.seed,
                       progress=not args.no_progress)  # fmt: skip
    db = None if Path(args.base).expanduser().is_dir() and args.run_id is None else database()
    recorder = RunRecorder(db, args.run_id) if args.run_id is not None else None
    result = run_recorded(train_sft, recorder, config=config, db=db)
    loss = result.metrics.get("train_loss")
    print(f"trained {result.steps} steps" + (f", mean loss {loss:.4f}" if loss is not None else ""))
    print(f"adapter: {result.adapter_dir}")
    return finish_command(0)
