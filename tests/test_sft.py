"""SFT (training/sft.py) on the tiny demo model, on export-shaped datasets the tests write with
the served prompt builder (`model.prompt.to_chat_messages` + the export's own column writer):
three-turn conversations with two images each.

Checks: loss finite and falling on a repeated batch; LoRA weights changed and only LoRA weights
(the vision tower and base weights untouched); the assistant-only mask keeps exactly the
assistant turns' text (decoded); resume continues the step count; an adapter base is trained
further; bad exports, bad bases and used output folders refused with a sentence naming the
problem, leaving nothing behind; a full disk stops the run with a sentence; variants resolve
to their folders; `pulsemind sft --run-id` records status, metrics and checkpoints on the row.

Run: OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pytest tests/test_sft.py -q
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pytest
from PIL import Image
from transformers import TrainerCallback

from model.prompt import to_chat_messages
from training.common import ADAPTER_DIR, LANGUAGE_MODEL_LINEAR, TRAINING_INFO_FILE, TrainingError
from training.export import FEATURES, chat_columns
from training.sft import SFTConfig, build_trainer, train_sft

#: (patient text, image colours, doctor's answer) per turn: three turns, two images in all.
DIALOGUE = [
    ("Rash on the forearm since yesterday.", [(200, 40, 40)], "Is it itchy or painful?"),
    ("Itchy. Here it is this morning.", [(40, 40, 200)], "Any new soap or plants?"),
    ("New washing powder.", [], "Likely contact dermatitis; stop the powder."),
]
ASSISTANT_TEXTS = [answer for _, _, answer in DIALOGUE]


@dataclass(frozen=True)
class _Image:
    """Shaped like storage's image record (what `to_chat_messages` reads)."""

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
    attachments: tuple[_Attachment, ...] = field(default=())


def photo(color: tuple[int, int, int], size: tuple[int, int] = (64, 56)) -> _Attachment:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return _Attachment("image", None, None, (_Image(*size, buffer.getvalue()),))


def dialogue_records(dialogue=DIALOGUE, *, last_answer: bool = True) -> list[_Message]:
    records = []
    for i, (text, colors, answer) in enumerate(dialogue):
        records.append(_Message("user", text, tuple(photo(c) for c in colors)))
        if last_answer or i < len(dialogue) - 1:
            records.append(_Message("assistant", answer))
    return records


def sft_row(records) -> dict:
    """One `sft` export row for `records`, built as the export builds it."""
    messages, images = chat_columns(to_chat_messages(records, language="en"))
    empty = {"language": "en", "comparison_turn_ids": [], "vote_ids": [], "response_ids": [],
             "message_ids": [], "consultation_id": None, "case_id": 1, "case_turn_ids": [1, 2, 3],
             "attachment_sha256s": [], "context_sha256": None}  # fmt: skip
    return {"source": "case", "signals": ["reference"], "messages": messages, "images": images,
            **empty}  # fmt: skip


def write_export(path: Path, rows: list[dict], kind: str = "sft") -> Path:
    columns = {name: [row[name] for row in rows] for name in FEATURES[kind]}
    datasets.Dataset.from_dict(columns, features=FEATURES[kind]).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def sft_export(tmp_path_factory) -> Path:
    """Two copies of the three-turn, two-image dialogue (a repeated batch)."""
    row = sft_row(dialogue_records())
    return write_export(tmp_path_factory.mktemp("sft") / "export", [row, row])


def config(data: Path, base: Path, out: Path, **kw) -> SFTConfig:
    defaults = dict(steps=4, learning_rate=5e-3, lora_rank=8, warmup_ratio=0.0, save_steps=2,
                    gradient_checkpointing=False, progress=False)  # fmt: skip
    return SFTConfig(data=data, base=str(base), out=out, **{**defaults, **kw})


def lora_tensors(adapter_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def kept_spans(labels) -> list[list[int]]:
    """The runs of consecutive tokens the loss is computed on (label != -100)."""
    spans: list[list[int]] = []
    previous = -100
    for token in labels.tolist():
        if token != -100:
            if previous == -100:
                spans.append([])
            spans[-1].append(token)
        previous = token
    return spans


class StopAt(TrainerCallback):
    """Ends training after `step` as a crash would (checkpoints so far stay)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step >= self.step


# --- training ------------------------------------------------------------------------------


def test_sft_trains_lora_on_assistant_tokens(sft_export, demo_model_dir, tmp_path):
    import torch

    metrics: list[tuple[int, dict]] = []
    cfg = config(sft_export, demo_model_dir, tmp_path / "run", lora_dropout=0.0)
    trainer, resume_from, _ = build_trainer(cfg, on_metrics=lambda s, m: metrics.append((s, m)))
    assert resume_from is None
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    assert not any("visual" in n for n in trainable)  # the vision tower stays frozen
    peft_config = model.peft_config["default"]
    assert peft_config.r == 8 and peft_config.lora_alpha == 16
    assert peft_config.target_modules == LANGUAGE_MODEL_LINEAR

    # The assistant-only mask, decoded: exactly the three doctor's answers (and their ends).
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert batch["pixel_values"].shape[0] > 0 and batch["image_grid_thw"].shape[0] == 2
    tokenizer = trainer.processing_class.tokenizer
    spans = [
        tokenizer.decode(span, skip_special_tokens=False) for span in kept_spans(batch["labels"][0])
    ]
    assert spans == [f"{a}<|im_end|>\n" for a in ASSISTANT_TEXTS]
    full = tokenizer.decode(batch["input_ids"][0], skip_special_tokens=False)
    assert full.count("<|vision_start|>") == 2 and "You are PulseMind" in full

    trainer.train()
    losses = [m["loss"] for _, m in metrics if "loss" in m]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert all("learning_rate" in m for _, m in metrics if "loss" in m)
    assert [s for s, m in metrics if "loss" in m] == [1, 2, 3, 4]
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed and changed <= trainable
    assert any("lora_B" in n for n in changed)


def test_resume_continues_the_step_count(sft_export, demo_model_dir, tmp_path):
    out = tmp_path / "run"
    steps: list[int] = []
    trainer, _, _ = build_trainer(config(sft_export, demo_model_dir, out))
    trainer.add_callback(StopAt(2))
    trainer.train()  # stops after step 2 with checkpoint-2 written, no adapter/: a crash
    assert (out / "checkpoint-2").is_dir() and not (out / ADAPTER_DIR).exists()
    with pytest.raises(TrainingError, match="--resume"):
        train_sft(config(sft_export, demo_model_dir, out))
    result = train_sft(config(sft_export, demo_model_dir, out, resume=True),
                       on_metrics=lambda s, m: steps.append(s))  # fmt: skip
    assert [s for s in steps if s <= 4][:2] == [3, 4]  # steps 3 and 4, not 1 and 2 again
    assert result.steps == 4 and result.adapter_dir == out / ADAPTER_DIR
    info = json.loads((result.adapter_dir / TRAINING_INFO_FILE).read_text())
    assert info["kind"] == "sft" and info["rows"] == 2 and info["steps"] == 4
    assert info["base_model_dir"] == str(demo_model_dir) and info["precision"] == "fp32"
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert all(
        t.abs().sum() > 0 for n, t in lora_tensors(result.adapter_dir).items() if "lora_B" in n
    )
    with pytest.raises(TrainingError, match="finished adapter"):
        train_sft(config(sft_export, demo_model_dir, out, resume=True))
    # a run stopped before its first checkpoint: --resume starts it from the beginning
    fresh = train_sft(config(sft_export, demo_model_dir, tmp_path / "early", steps=1, resume=True))
    assert fresh.steps == 1


def test_adapter_base_is_trained_further(sft_export, demo_model_dir, adapter_dir, tmp_path):
    """--base ADAPTER_DIR (a variant's adapter): that adapter goes on training, on its base."""
    import torch

    result = train_sft(config(sft_export, adapter_dir, tmp_path / "run", steps=1))
    info = json.loads((result.adapter_dir / TRAINING_INFO_FILE).read_text())
    assert info["base_adapter_dir"] == str(adapter_dir)
    old, new = lora_tensors(adapter_dir), lora_tensors(result.adapter_dir)
    assert old.keys() == new.keys() and any(not torch.equal(old[k], new[k]) for k in old)


# --- refusals ------------------------------------------------------------------------------


def refused(cfg: SFTConfig, match: str) -> None:
    with pytest.raises(TrainingError) as info:
        train_sft(cfg)
    assert re.search(match, info.value.user_message), info.value.user_message
    assert " / " in info.value.user_message  # English / 中文
    assert "Traceback" not in info.value.user_message


def test_bad_exports_are_refused(demo_model_dir, tmp_path):
    out = tmp_path / "run"
    refused(config(tmp_path / "nothing", demo_model_dir, out), "no dataset at .*--kind sft")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    refused(config(tmp_path / "junk", demo_model_dir, out), "not a dataset written by")
    empty = write_export(tmp_path / "empty", [])
    refused(config(empty, demo_model_dir, out), "has no rows")
    pair = {"prompt": [], "images": [], "chosen": [], "rejected": [], "proactiveness": "tie",
            "accuracy": "tie", "usefulness": "tie", "language_quality": "tie", "overall": "chosen",
            "voter_id": 1, "chosen_variant": "a", "rejected_variant": "b",
            **{k: v for k, v in sft_row(dialogue_records()).items() if k not in FEATURES["sft"]
               or k in FEATURES["pairs"]}}  # fmt: skip
    pairs = write_export(tmp_path / "pairs", [{k: pair[k] for k in FEATURES["pairs"]}], "pairs")
    refused(config(pairs, demo_model_dir, out), "is a pairs export, but pulsemind sft needs a sft")
    no_images = tmp_path / "no-images"
    datasets.Dataset.from_list(
        [{"messages": sft_row(dialogue_records())["messages"]}]
    ).save_to_disk(str(no_images))
    refused(config(no_images, demo_model_dir, out), "lacks the column.*images")
    row = sft_row(dialogue_records())
    short = write_export(tmp_path / "short", [{**row, "images": row["images"][:1]}])
    refused(config(short, demo_model_dir, out), "Row 0 .* 1 images for 2 image placeholders")
    unanswered = write_export(
        tmp_path / "unanswered", [sft_row(dialogue_records(last_answer=False))]
    )
    refused(config(unanswered, demo_model_dir, out), "ends with a user message")
    assert not out.exists()


def test_a_full_disk_stops_with_a_sentence(sft_export, demo_model_dir, tmp_path):
    """ENOSPC cannot be produced here without mounting a tiny filesystem: the save raises it
    (a fault injected, named as such)."""
    from training.common import train_and_save

    trainer, _, info = build_trainer(config(sft_export, demo_model_dir, tmp_path / "run", steps=1))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    trainer.save_model = full
    with pytest.raises(TrainingError) as exc:
        train_and_save(trainer, None, tmp_path / "run", info)
    assert "is full" in exc.value.user_message and "--resume" in exc.value.user_message
    assert not (tmp_path / "run" / ADAPTER_DIR).exists()


def test_unloadable_base_leaves_nothing(sft_export, tmp_path, db):
    out = tmp_path / "run"
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    refused(config(sft_export, broken, out), "cannot be loaded")
    refused(
        config(sft_export, Path("no-such-variant"), out),
        "neither a model folder nor a model variant",
    )
    from storage import ensure_model_variant

    ensure_model_variant(db, "remote", "http://127.0.0.1:9/v1", "big-model")
    with pytest.raises(TrainingError, match="names no local model folder"):
        train_sft(config(sft_export, Path("remote"), out), db=db)
    assert not out.exists()


def test_variant_base_resolves_to_its_folders(demo_model_dir, adapter_dir, db):
    from storage import ensure_model_variant
    from training.common import resolve_base

    ensure_model_variant(db, "demo", "embedded", str(demo_model_dir))
    ensure_model_variant(db, "base", "http://127.0.0.1:9/v1", "tiny")
    ensure_model_variant(db, "a1", "http://127.0.0.1:9/v1", "a1", adapter_path=str(adapter_dir),
                         parent="base")  # fmt: skip
    assert resolve_base("demo", db).model_dir == demo_model_dir
    resolved = resolve_base("a1", db)  # the parent names no folder; the adapter's config does
    assert (resolved.model_dir, resolved.adapter_dir, resolved.variant) == (
        demo_model_dir,
        adapter_dir,
        "a1",
    )


def test_cli_sft_records_its_run(sft_export, demo_model_dir, tmp_path, capsys, db):
    """`pulsemind sft --run-id N`: the run's row goes running (this process), gets every
    step's loss and learning rate and each checkpoint; a failing run is marked failed with
    the sentence the command printed."""
    from app.cli import main
    from storage.models import RunStatus
    from storage.runs import create_run, get_run, metrics_of

    out, url = tmp_path / "run", db.url.render_as_string(hide_password=False)
    run = create_run(db, "sft", {"steps": 3}, data_path=str(sft_export))
    code = main(["sft", "--data", str(sft_export), "--base", str(demo_model_dir), "--out", str(out),
                 "--steps", "3", "--save-steps", "2", "--lr", "1e-3", "--lora-rank", "4",
                 "--no-progress", "--run-id", str(run.id), "--database-url", url])  # fmt: skip
    assert code == 0
    assert f"adapter: {out / ADAPTER_DIR}" in capsys.readouterr().out
    row = get_run(db, run.id)
    assert row.status is RunStatus.RUNNING and row.pid == os.getpid()  # succeeded: when registered
    assert row.last_checkpoint == str(out / "checkpoint-3")
    curves = metrics_of(db, run.id)
    assert [p.step for p in curves["loss"]] == [1, 2, 3] and len(curves["learning_rate"]) == 3
    assert all(math.isfinite(p.value) for p in curves["loss"])

    failing = create_run(db, "sft", {})
    with pytest.raises(SystemExit, match="pulsemind sft: .*holds a finished adapter") as info:
        main(["sft", "--data", str(sft_export), "--base", str(demo_model_dir), "--out", str(out),
              "--run-id", str(failing.id), "--database-url", url])  # fmt: skip
    row = get_run(db, failing.id)
    assert row.status is RunStatus.FAILED and row.error in str(info.value)
