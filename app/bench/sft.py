"""SFT benchmark: training throughput (tokens/s) through `training.sft` vs a plain TRL script.

    pulsemind bench sft                                  # demo model and data built here
    pulsemind bench sft --rows 16 --steps 32 --repeats 5 --json out.json

Why: `pulsemind sft` wraps TRL's SFTTrainer (export checks, base resolution, the paper's
LoRA, checkpoints, a metrics hook). The wrapper should cost next to nothing: the goal is its
throughput >= 0.95x that of the few lines anyone would write with TRL directly.

How: it builds the tiny demo model and an sft-export-shaped dataset (multi-turn dialogues,
two images each, built by the served prompt builder as `pulsemind export` builds them) in a
temporary folder, then trains the same LoRA (rank, alpha, dropout, target modules), with the
same optimiser, schedule, batch, precision, assistant-only loss and activation checkpointing,
for the same number of steps, both ways: the plain script (`plain_trl`, below: load, SFTConfig,
SFTTrainer, train) and `training.sft.train_sft`. Tokens/s = tokens trained on (TRL's
`num_tokens`, non-padding input tokens) / `train_runtime` (the training loop, collation
included; loading the model is not). One unmeasured warm-up run, then `--repeats` pairs of
runs back to back (plain then wrapper, then wrapper then plain, ...). The headline ratio is the
median of the pairs' ratios: on a shared machine a load change then hits both runs of a pair
alike, where it would skew one path's median. Tokens per CPU-second of the process (steps
after the first) are printed beside it: other processes competing for the cores change wall
time but hardly the CPU time a step needs, so that ratio shows the wrapper's own cost when the
machine is busy.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

#: The demo model's image budget keeps a 2-image, 3-turn dialogue near 200 tokens.
DIALOGUES = [
    ("Rash on the forearm since yesterday.", "Is it itchy or painful?"),
    ("Itchy. Here it is this morning.", "Any new soap, plants or medicines?"),
    ("New washing powder two days ago.", "Likely contact dermatitis; stop the powder."),
    ("Cough for a week, worse at night.", "Any fever, wheeze or shortness of breath?"),
    ("A slight wheeze; photo of my chest X-ray.", "Do you smoke? Any asthma before?"),
    ("Never smoked, no asthma.", "Post-viral cough is likely; review in two weeks."),
]


@dataclass
class BenchSFTConfig:
    rows: int = 16
    """Conversations in the dataset."""
    steps: int = 32
    """Optimizer steps per run (batch 1: one conversation each)."""
    repeats: int = 5
    """Measured runs per path (after one warm-up)."""
    lora_rank: int = 64
    """The paper's rank (the wrapper's default)."""
    json_out: Path | None = None


@dataclass
class Run:
    path: str
    tokens: float
    seconds: float
    """Wall time of the training loop (`train_runtime`)."""
    cpu_tokens: float
    cpu_seconds: float
    """This process's CPU time from the first step's log to the last (steps 2..N)."""

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.cpu_tokens / self.cpu_seconds


class Clock:
    """Process CPU time and TRL's `num_tokens` at every log: the tokens per CPU-second of the
    steps after the first, which other processes on a shared machine barely change."""

    def __init__(self) -> None:
        self.ticks: list[tuple[float, float]] = []

    def tick(self, logs: dict) -> None:
        if "num_tokens" in logs:
            self.ticks.append((time.process_time(), float(logs["num_tokens"])))

    def span(self) -> tuple[float, float]:
        """(tokens, CPU seconds) from the first log to the last."""
        (c0, n0), (c1, n1) = self.ticks[0], self.ticks[-1]
        return n1 - n0, c1 - c0


# --- data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Image:
    width: int
    height: int
    png: bytes
    sent_mime: str | None = None
    sent: bytes | None = None


@dataclass(frozen=True)
class _Attachment:
    kind: str
    page_count: int | None
    text: str | None
    images: tuple[_Image, ...]


@dataclass(frozen=True)
class _Message:
    role: str
    text: str
    attachments: tuple[_Attachment, ...] = ()


def _photo(seed: int) -> _Attachment:
    from PIL import Image

    buffer = io.BytesIO()
    size = (56 + 14 * (seed % 3), 56 + 14 * (seed % 2))
    Image.new("RGB", size, (40 * seed % 255, 90, 200 - 30 * seed % 200)).save(buffer, format="PNG")
    return _Attachment("image", None, None, (_Image(*size, buffer.getvalue()),))


def write_dataset(out: Path, rows: int) -> Path:
    """An sft export's columns: three-turn dialogues, images on the first two user turns."""
    import datasets

    from model.prompt import to_chat_messages
    from training.export import FEATURES, chat_columns

    table = []
    for i in range(rows):
        turns = DIALOGUES[(i % 2) * 3 : (i % 2) * 3 + 3]
        records = []
        for t, (patient, doctor) in enumerate(turns):
            images = (_photo(i + t),) if t < 2 else ()
            records += [
                _Message("user", f"{patient} (case {i})", images),
                _Message("assistant", doctor),
            ]
        messages, images = chat_columns(to_chat_messages(records, language="en"))
        table.append({"source": "case", "signals": ["reference"], "messages": messages,
                      "images": images, "language": "en", "comparison_turn_ids": [],
                      "vote_ids": [], "response_ids": [], "message_ids": [],
                      "consultation_id": None, "case_id": i, "case_turn_ids": [],
                      "attachment_sha256s": [], "context_sha256": None})  # fmt: skip
    columns = {name: [row[name] for row in table] for name in FEATURES["sft"]}
    datasets.Dataset.from_dict(columns, features=FEATURES["sft"]).save_to_disk(str(out))
    return out


# --- the two paths -------------------------------------------------------------------------------


def plain_trl(data: Path, model_dir: Path, out: Path, steps: int, rank: int) -> Run:
    """What a user would write with TRL alone: the same model, data and training settings."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(
        model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)  # fmt: skip
    dataset = datasets.load_from_disk(str(data)).select_columns(["messages", "images"])
    args = SFTConfig(output_dir=str(out), max_steps=steps, learning_rate=2e-4,
                     lr_scheduler_type="cosine", warmup_steps=0.03, optim="adamw_torch",
                     per_device_train_batch_size=1, assistant_only_loss=True, max_length=None,
                     activation_checkpointing=True, save_strategy="no", logging_steps=1,
                     report_to="none", disable_tqdm=True, bf16=bf16, fp16=False, seed=0,
                     use_cpu=not torch.cuda.is_available())  # fmt: skip
    peft = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.1, bias="none",
                      task_type="CAUSAL_LM",
                      target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")  # fmt: skip
    clock = Clock()
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                         peft_config=peft, callbacks=[_ClockCallback(clock)])  # fmt: skip
    output = trainer.train()
    tokens = max(h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h)
    return Run("plain TRL", tokens, output.metrics["train_runtime"], *clock.span())


def _ClockCallback(clock: Clock):
    """The plain script's way to the same clock (the wrapper's is its `on_metrics` hook)."""
    from transformers import TrainerCallback

    class ClockCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            clock.tick(logs or {})

    return ClockCallback()


def through_wrapper(data: Path, model_dir: Path, out: Path, steps: int, rank: int) -> Run:
    """`pulsemind sft` as a function (checkpoints past the end of the run, as the plain one)."""
    from training.sft import SFTConfig, train_sft

    logs: list[dict[str, float]] = []
    clock = Clock()

    def on_metrics(step: int, metrics: dict[str, float]) -> None:
        clock.tick(metrics)
        logs.append(metrics)

    config = SFTConfig(data=data, base=str(model_dir), out=out, steps=steps, lora_rank=rank,
                       save_steps=steps + 1, progress=False)  # fmt: skip
    train_sft(config, on_metrics=on_metrics)
    tokens = max(m["num_tokens"] for m in logs if "num_tokens" in m)
    runtime = next(m["train_runtime"] for m in logs if "train_runtime" in m)
    return Run("training.sft", tokens, runtime, *clock.span())


PATHS = {"plain": plain_trl, "wrapper": through_wrapper}
#: The issue's goal for the wrapper's throughput relative to plain TRL.
GOAL = 0.95


def bench_sft(config: BenchSFTConfig) -> dict:
    """Run the benchmark; returns (and prints) the medians and their ratio."""
    from loguru import logger

    from app.bench.stats import BUSY_LOAD_PER_CPU
    from model.demo_model import build_demo_model

    runs: dict[str, list[Run]] = {"plain": [], "wrapper": []}
    pairs: list[float] = []  # wrapper / plain of back-to-back runs: shared load changes cancel
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="bench-sft-") as tmp:
        root = Path(tmp)
        model_dir = build_demo_model(root / "model")
        data = write_dataset(root / "export", config.rows)
        t0 = time.perf_counter()
        warm = through_wrapper(data, model_dir, root / "warm-up", config.steps, config.lora_rank)
        logger.info("bench sft: warm-up {:.0f} tokens/s (not counted)", warm.tokens_per_s)
        for i in range(config.repeats):
            done = {}
            for path in ("plain", "wrapper") if i % 2 == 0 else ("wrapper", "plain"):
                run = PATHS[path](
                    data, model_dir, root / f"{path}-{i}", config.steps, config.lora_rank
                )
                logger.info("bench sft: {} {:.0f} tokens/s", run.path, run.tokens_per_s)
                runs[path].append(done.setdefault(path, run))
            pairs.append(done["wrapper"].tokens_per_s / done["plain"].tokens_per_s)
    medians = {p: statistics.median(r.tokens_per_s for r in rs) for p, rs in runs.items()}
    cpu = {p: statistics.median(r.tokens_per_cpu_s for r in rs) for p, rs in runs.items()}
    ratio, cpu_ratio = statistics.median(pairs), cpu["wrapper"] / cpu["plain"]
    result = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
              "tokens_per_run": runs["plain"][0].tokens, "load_per_cpu_at_start": load,
              "plain_tokens_per_s": [r.tokens_per_s for r in runs["plain"]],
              "wrapper_tokens_per_s": [r.tokens_per_s for r in runs["wrapper"]],
              "median_plain": medians["plain"], "median_wrapper": medians["wrapper"],
              "pair_ratios": pairs, "ratio": ratio,
              "ratio_of_medians": medians["wrapper"] / medians["plain"],
              "plain_tokens_per_cpu_s": [r.tokens_per_cpu_s for r in runs["plain"]],
              "wrapper_tokens_per_cpu_s": [r.tokens_per_cpu_s for r in runs["wrapper"]],
              "cpu_ratio": cpu_ratio, "goal": GOAL, "met": ratio >= GOAL,
              "wall_s": time.perf_counter() - t0}  # fmt: skip
    verdict = {True: "met", False: "NOT met"}
    print(
        f"SFT throughput, demo model, LoRA rank {config.lora_rank}, {config.steps} steps x "
        f"{config.repeats} runs per path ({result['tokens_per_run']:.0f} tokens per run)"
    )
    if load > BUSY_LOAD_PER_CPU:
        print(f"  note: load {load:.2f} per CPU at start: other work skews wall-clock runs")
    print(f"  {'':22} {'tokens/s':>9} {'tokens/CPU-s':>13}   (medians)")
    print(f"  {'plain TRL SFTTrainer':22} {medians['plain']:9.0f} {cpu['plain']:13.0f}")
    print(f"  {'training.sft':22} {medians['wrapper']:9.0f} {cpu['wrapper']:13.0f}")
    print(
        f"  ratio training.sft / plain: {ratio:.3f}x wall clock (median of {len(pairs)} "
        f"back-to-back pairs; goal >= {GOAL}x: {verdict[ratio >= GOAL]}), "
        f"{cpu_ratio:.3f}x per CPU-second ({verdict[cpu_ratio >= GOAL]})"
    )
    if config.json_out:
        Path(config.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry (`pulsemind bench sft`)."""
    p = argparse.ArgumentParser(prog="pulsemind bench sft", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=BenchSFTConfig.rows, help="conversations")
    p.add_argument("--steps", type=int, default=BenchSFTConfig.steps, help="steps per run")
    p.add_argument("--repeats", type=int, default=BenchSFTConfig.repeats, help="runs per path")
    p.add_argument("--lora-rank", type=int, default=BenchSFTConfig.lora_rank)
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    bench_sft(BenchSFTConfig(rows=args.rows, steps=args.steps, repeats=args.repeats,
                             lora_rank=args.lora_rank, json_out=args.json))  # fmt: skip
    return 0
