"""What SFT and CRPO share: the LoRA recipe, precision, the base model, the export, metrics.

Why one module: both trainers must train the same adapter shape (the paper's LoRA rank 64,
dropout 0.1, on every linear layer of the language model, the vision tower frozen), choose
bf16 or fp32 the same way, resolve a base "variant or model directory" the same way, refuse
the same bad exports with the same sentences and report metrics through the same hook.

    from training.common import load_export, resolve_base, load_model
    data = load_export(Path("exports/sft"), "sft")          # TrainingError names the problem
    base = resolve_base("a1-sft", db)                       # a variant, or a model directory
    model, processor = load_model(base, precision())

Layout of a run's output folder (`--out DIR`): `checkpoint-N/` (transformers checkpoints,
what `--resume` continues from) and, when training finishes, `adapter/` (PEFT adapter files,
the processor, and `pulsemind_training.json` saying what it was trained from). `adapter/` is
written beside as `adapter.partial/` and renamed into place: it is complete or absent.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from loguru import logger

from model.errors import PulseMindError
from storage.i18n import bilingual

if TYPE_CHECKING:
    import datasets

    from storage import Database

#: The paper's LoRA: rank 64, dropout 0.1. Alpha 2 x rank is the common choice (LoRA/QLoRA
#: recipes), so the update's scale (alpha / rank) stays 2 whatever the rank.
LORA_RANK = 64
LORA_DROPOUT = 0.1
#: Every linear layer of the language model (attention and MLP); the vision tower, its
#: merger and lm_head are left alone (frozen). Module names as in transformers 5's Qwen2.5-VL.
LANGUAGE_MODEL_LINEAR = (
    r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
)
#: Where the finished adapter goes inside `--out`, and the file that says where it came from.
ADAPTER_DIR = "adapter"
TRAINING_INFO_FILE = "pulsemind_training.json"
#: Columns each export kind must have (training/export.py writes more: the source ids).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "sft": ("messages", "images"),
    "pairs": ("prompt", "images", "chosen", "rejected"),
    "crpo": ("prompt", "images", "counterparts"),
}
#: A column only that kind has: how a given export's kind is told.
KIND_MARKERS = {"sft": "messages", "pairs": "chosen", "crpo": "counterparts"}

Precision = Literal["bf16", "fp32"]
MetricsHook = Callable[[int, dict[str, float]], None]
CheckpointHook = Callable[[str], None]

MESSAGES = {
    "no_export": {
        "en": "There is no dataset at {path}; write one with `pulsemind export --kind {kind} {path}`.",
        "zh-CN": "{path} 处没有数据集；请先用 `pulsemind export --kind {kind} {path}` 导出。",
    },
    "not_export": {
        "en": "{path} is not a dataset written by `pulsemind export` ({reason}).",
        "zh-CN": "{path} 不是 `pulsemind export` 导出的数据集（{reason}）。",
    },
    "wrong_kind": {
        "en": "{path} is a {found} export, but {trainer} needs a {kind} export "
        "(`pulsemind export --kind {kind}`).",
        "zh-CN": "{path} 是 {found} 类型的导出，而 {trainer} 需要 {kind} 类型的导出"
        "（`pulsemind export --kind {kind}`）。",
    },
    "missing_columns": {
        "en": "{path} lacks the column(s) {columns} that a {kind} export has.",
        "zh-CN": "{path} 缺少 {kind} 导出应有的列：{columns}。",
    },
    "empty_export": {
        "en": "{path} has no rows: there is nothing to train on.",
        "zh-CN": "{path} 没有任何数据行，无法训练。",
    },
    "bad_row": {
        "en": "Row {row} of {path} cannot be trained on: {reason}.",
        "zh-CN": "{path} 的第 {row} 行无法用于训练：{reason}。",
    },
    "no_base": {
        "en": "{base!r} is neither a model folder nor a model variant; give a variant's name "
        "(pulsemind variant list) or a local model folder.",
        "zh-CN": "{base!r} 既不是模型文件夹也不是模型变体；请给出变体名称（pulsemind variant list）或本地模型文件夹。",
    },
    "variant_no_dir": {
        "en": "Variant {name!r} is served as {served!r} at {endpoint}, which names no local model "
        "folder; give the model folder instead (the one the server was started with).",
        "zh-CN": "变体 {name!r} 以 {served!r} 名义在 {endpoint} 提供服务，找不到对应的本地模型文件夹；"
        "请直接给出模型文件夹（启动服务器时用的那个）。",
    },
    "unloadable": {
        "en": "The base model in {path} cannot be loaded ({reason}). Nothing was written.",
        "zh-CN": "无法加载 {path} 中的基础模型（{reason}）。未写入任何内容。",
    },
    "out_exists": {
        "en": "{out} exists already and is not empty; pass --resume to continue its run, or "
        "choose a new folder.",
        "zh-CN": "{out} 已存在且不为空；如需继续该次训练请加 --resume，否则请换一个新文件夹。",
    },
    "out_finished": {
        "en": "{out} holds a finished adapter already; choose a new folder.",
        "zh-CN": "{out} 中已有训练完成的适配器；请换一个新文件夹。",
    },
    "judge_down": {
        "en": "The judge endpoint {url} cannot be reached; start it or check --judge-url. "
        "Nothing was trained.",
        "zh-CN": "无法连接评审端点 {url}；请启动它或检查 --judge-url。未进行任何训练。",
    },
    "judge_model": {
        "en": "The judge endpoint {url} does not serve {model!r} (it serves: {served}); check "
        "--judge-model.",
        "zh-CN": "评审端点 {url} 没有提供模型 {model!r}（它提供：{served}）；请检查 --judge-model。",
    },
    "judge_failed": {
        "en": "The judge at {url} gave no verdict for any comparison of step {step}; the run "
        "stopped. Its checkpoints are kept: fix the judge and continue with --resume.",
        "zh-CN": "评审端点 {url} 对第 {step} 步的所有比较都没有给出结论，训练已停止。"
        "检查点已保留：修复评审端点后用 --resume 继续。",
    },
    "disk_full": {
        "en": "The disk holding {out} is full; the run stopped. Free space and continue with "
        "--resume (its checkpoints are kept).",
        "zh-CN": "{out} 所在的磁盘已满，训练已停止。请释放空间后用 --resume 继续（检查点已保留）。",
    },
    "bad_setting": {
        "en": "Invalid setting: {reason}.",
        "zh-CN": "设置无效：{reason}。",
    },
}


class TrainingError(PulseMindError):
    """Training cannot start or go on; `user_message` says why and what to do."""

    user_message = bilingual({"en": "Training failed.", "zh-CN": "训练失败。"})


def fail(key: str, detail: str | None = None, **fields: object) -> TrainingError:
    """A TrainingError with the catalogue sentence `key` (both languages) as its message."""
    message = bilingual(MESSAGES[key], **fields)
    return TrainingError(detail or message, user_message=message)


def check_setting(ok: bool, reason: str) -> None:
    """TrainingError naming `reason` (an English phrase naming the setting) unless `ok`."""
    if not ok:
        raise fail("bad_setting", reason=reason)


# --- LoRA and precision ---------------------------------------------------------------------


def lora_config(rank: int = LORA_RANK, alpha: int | None = None, dropout: float = LORA_DROPOUT):
    """The PEFT LoRA config of both trainers (alpha defaults to 2 x rank)."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, lora_dropout=dropout,
                      target_modules=LANGUAGE_MODEL_LINEAR, bias="none", task_type="CAUSAL_LM")  # fmt: skip


def precision() -> Precision:
    """bf16 on a CUDA GPU that has it (the paper's setting), else fp32 (CPUs, older GPUs)."""
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def precision_args(chosen: Precision) -> dict[str, Any]:
    """TrainingArguments fields for `chosen`; on a machine without CUDA, the CPU explicitly
    (DeepSpeed with two processes on CPU needs `use_cpu`)."""
    import torch

    return {"bf16": chosen == "bf16", "fp16": False, "use_cpu": not torch.cuda.is_available()}


# --- the base model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedBase:
    """What a trainer starts from: a model folder, and an adapter on it to train further."""

    model_dir: Path
    adapter_dir: Path | None = None
    variant: str | None = None
    """The variant's name when `--base` named one (the new variant's parent)."""


def _adapter_base(adapter_dir: Path) -> Path | None:
    """The base model folder an adapter was made on (PEFT writes it into its config)."""
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return None
    base = config.get("base_model_name_or_path")
    return Path(base) if base and Path(base).is_dir() else None


def _served_root(endpoint: str, served: str) -> Path | None:
    """The folder a vLLM server was started with for model `served` (`/v1/models` root)."""
    from model.lora import AdapterLoadFailed, served_models

    try:
        root = served_models(endpoint).get(served)
    except AdapterLoadFailed as exc:
        logger.info("cannot ask {} where {} lives: {}", endpoint, served, exc.detail)
        return None
    return Path(root) if root and Path(root).is_dir() else None


def resolve_base(base: str, db: Database | None = None) -> ResolvedBase:
    """`base` as a model folder (or an adapter folder on one) if it is a folder here, else as
    the name of a model variant in `db`: its adapter is trained further, on the model folder
    the variant is served from (embedded: the variant's model; vLLM: the parent variant's
    folder, the adapter's recorded base, or the folder the server reports)."""
    path = Path(base).expanduser()
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            model_dir = _adapter_base(path)
            if model_dir is None:
                raise fail("unloadable", path=path, reason="its adapter names no local base model")
            return ResolvedBase(model_dir, path)
        return ResolvedBase(path)
    if db is None:
        raise fail("no_base", base=base)
    from storage import get_variant, get_variant_by_name

    variant = get_variant_by_name(db, base)
    if variant is None:
        raise fail("no_base", base=base)
    adapter = Path(variant.adapter_path) if variant.adapter_path else None
    candidates: list[Callable[[], Path | None]] = []
    # embedded variants are served by their folder's path; vLLM ones by a name
    candidates.append(lambda: Path(variant.served_model_name)
                      if Path(variant.served_model_name).is_dir() else None)  # fmt: skip
    if variant.parent_id is not None:
        parent = get_variant(db, variant.parent_id)
        candidates.append(lambda: resolve_base(parent.name, db).model_dir)
    if adapter is not None:
        candidates.append(lambda: _adapter_base(adapter))
    if not variant.embedded and adapter is None:
        candidates.append(lambda: _served_root(variant.endpoint, variant.served_model_name))
    for candidate in candidates:
        try:
            model_dir = candidate()
        except TrainingError:
            model_dir = None  # the parent's own folder is unknown: try the next source
        if model_dir is not None:
            if adapter is not None and not adapter.is_dir():
                raise fail("unloadable", path=adapter,
                           reason="the variant's adapter folder is missing")  # fmt: skip
            return ResolvedBase(model_dir, adapter, variant.name)
    raise fail("variant_no_dir", name=variant.name, served=variant.served_model_name,
               endpoint=variant.endpoint)  # fmt: skip


def load_model(base: ResolvedBase, chosen: Precision):
    """(model, processor) for `base`; a PEFT model with its adapter trainable when `base` has
    one. TrainingError (nothing written) when either cannot be loaded."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    dtype = torch.bfloat16 if chosen == "bf16" else torch.float32
    try:
        processor = AutoProcessor.from_pretrained(base.model_dir)
        model = AutoModelForImageTextToText.from_pretrained(base.model_dir, dtype=dtype)
        if base.adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, base.adapter_dir, is_trainable=True)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ... by cause
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        raise fail("unloadable", f"loading {base}: {reason}",
                   path=base.adapter_dir or base.model_dir, reason=reason) from exc  # fmt: skip
    if not hasattr(processor, "image_processor"):
        raise fail("unloadable", path=base.model_dir,
                   reason="it has no image processor: not a vision-language model")  # fmt: skip
    return model, processor


# --- the export ----------------------------------------------------------------------------


def _export_kind(columns: set[str]) -> str | None:
    found = [kind for kind, marker in KIND_MARKERS.items() if marker in columns]
    return found[0] if len(found) == 1 else None


def _saved_without_data(path: Path) -> bool:
    """True for a dataset saved with no rows: `save_to_disk` then writes no data file, and
    `load_from_disk` fails on it with an IndexError instead of giving an empty dataset."""
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("_data_files") == []


def load_export(path: Path, kind: str, *, trainer: str | None = None) -> datasets.Dataset:
    """The `kind` export at `path` (`save_to_disk` folder), checked: TrainingError names the
    problem (absent, not a dataset, another kind, missing columns, no rows, a row whose
    images do not match its image placeholders or that ends with the wrong role)."""
    import datasets

    path = Path(path)
    trainer = trainer or kind.upper()
    if not path.exists():
        raise fail("no_export", path=path, kind=kind)
    if _saved_without_data(path):
        raise fail("empty_export", path=path)
    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError, IndexError) as exc:
        raise fail("not_export", f"load_from_disk({path}): {exc}", path=path,
                   reason=type(exc).__name__) from exc  # fmt: skip
    if isinstance(data, datasets.DatasetDict):
        if "train" not in data:
            raise fail("not_export", path=path, reason="a dataset dictionary without a train split")
        data = data["train"]
    columns = set(data.column_names)
    found = _export_kind(columns)
    if found is not None and found != kind:
        raise fail("wrong_kind", path=path, found=found, kind=kind, trainer=trainer)
    missing = [c for c in REQUIRED_COLUMNS[kind] if c not in columns]
    if missing:
        raise fail("missing_columns", path=path, kind=kind, columns=", ".join(missing))
    if len(data) == 0:
        raise fail("empty_export", path=path)
    _check_rows(data, path, kind)
    return data


def _check_rows(data: datasets.Dataset, path: Path, kind: str) -> None:
    """Per-row checks that would otherwise fail mid-run (after hours, at that row's batch);
    read from the Arrow table, so no image is decoded."""
    import pyarrow.compute as pc

    chat = "messages" if kind == "sft" else "prompt"
    n_images = pc.list_value_length(data.data.column("images")).to_pylist()
    conversations = data.data.column(chat).to_pylist()
    counterparts = data.data.column("counterparts").to_pylist() if kind == "crpo" else None
    for i, (messages, images) in enumerate(zip(conversations, n_images, strict=True)):
        placeholders = sum(part["type"] == "image"
                           for m in messages or [] for part in m["content"] or [])  # fmt: skip
        if placeholders != (images or 0):
            raise fail("bad_row", path=path, row=i,
                       reason=f"{images or 0} images for {placeholders} image placeholders")  # fmt: skip
        last = (messages or [{}])[-1].get("role")
        want = "assistant" if kind == "sft" else "user"
        if last != want:
            raise fail("bad_row", path=path, row=i,
                       reason=f"it ends with a {last} message, not {want}")  # fmt: skip
        if counterparts is not None and not any((c or "").strip() for c in counterparts[i] or []):
            raise fail("bad_row", path=path, row=i, reason="it has no counterpart answers")


def export_fingerprint(data: datasets.Dataset) -> str:
    """The export's content fingerprint (training/export.py derives it from the rows)."""
    return data._fingerprint


# --- output folder -------------------------------------------------------------------------


def check_out_dir(out: Path, resume: bool) -> str | None:
    """The checkpoint to resume from (None: from the start). TrainingError if `out` holds a
    finished adapter, or holds files without --resume. --resume where no checkpoint was
    written yet (a run stopped before its first) starts from the beginning."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(out)
    if (out / ADAPTER_DIR).exists():
        raise fail("out_finished", out=out)
    if not resume:
        if out.exists() and any(out.iterdir()):
            raise fail("out_exists", out=out)
        return None
    checkpoint = get_last_checkpoint(str(out)) if out.is_dir() else None
    if checkpoint is None:
        logger.warning("no checkpoint in {} to resume from: starting from the beginning", out)
    return checkpoint


def save_adapter(trainer, out: Path, info: Mapping[str, Any]) -> Path:
    """Save the trained adapter (and processor) as `out/adapter`, with `info` beside it in
    `pulsemind_training.json`; written to `adapter.partial` first and renamed into place.
    Called on every process (ZeRO-3 gathers the weights); the main one writes and renames."""
    out = Path(out)
    partial, final = out / f"{ADAPTER_DIR}.partial", out / ADAPTER_DIR
    trainer.save_model(str(partial))
    if trainer.is_world_process_zero():
        (partial / TRAINING_INFO_FILE).write_text(
            json.dumps(info, indent=2, ensure_ascii=False, default=str) + "\n"
        )
        os.replace(partial, final)
        logger.info("adapter saved in {}", final)
    return final


def train_and_save(trainer, resume_from: str | None, out: Path, info: dict[str, Any]):
    """`trainer.train()` (from `resume_from`, or the start) then `save_adapter`; returns
    (train output, adapter folder). A full disk becomes a TrainingError saying so; the
    checkpoints written before stay for --resume."""
    clear_partial(out)
    try:
        output = trainer.train(resume_from_checkpoint=resume_from)
        info["steps"] = trainer.state.global_step
        return output, save_adapter(trainer, out, info)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise fail("disk_full", f"{out}: {exc}", out=out) from exc
        raise


def clear_partial(out: Path) -> None:
    """Remove an `adapter.partial` a crashed run left behind (it is never used)."""
    shutil.rmtree(Path(out) / f"{ADAPTER_DIR}.partial", ignore_errors=True)


# --- metrics, processes ------------------------------------------------------------------------


def progress_callbacks(on_metrics: MetricsHook | None = None,
                       on_checkpoint: CheckpointHook | None = None) -> list:  # fmt: skip
    """TrainerCallbacks (none if no hook) that hand every log (loss, learning_rate, grad_norm,
    reward, kl, ...: the numbers only) to `on_metrics(step, metrics)` and every checkpoint's
    folder to `on_checkpoint(path)`, on the main process."""
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if on_metrics is None and on_checkpoint is None:
        return []

    class ProgressHooks(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if on_metrics is None or not state.is_world_process_zero or not logs:
                return
            numbers = {k: float(v) for k, v in logs.items()
                       if isinstance(v, int | float) and not isinstance(v, bool)
                       and math.isfinite(float(v))}  # fmt: skip
            if numbers:
                on_metrics(state.global_step, numbers)

        def on_save(self, args, state, control, **kwargs):
            if on_checkpoint is not None and state.is_world_process_zero:
                name = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
                on_checkpoint(str(Path(args.output_dir) / name))

    return [ProgressHooks()]


def is_main_process() -> bool:
    """Rank 0 of a launcher's processes (or no launcher)."""
    return os.environ.get("RANK", "0") == "0"


class RunRecorder:
    """A run's row (storage/runs.py) kept up to date by the training process itself
    (`--run-id`): running with this pid when it starts (unless its launcher marked it so),
    each log's metrics and each checkpoint as they come, failed with the reason if it fails.
    Succeeded is for whoever registers the adapter as a variant: a run is not done before."""

    def __init__(self, db: Database, run_id: int):
        self.db, self.run_id = db, run_id

    def start(self) -> None:
        from storage.models import RunStatus
        from storage.runs import get_run, mark_running

        if is_main_process() and get_run(self.db, self.run_id).status is not RunStatus.RUNNING:
            mark_running(self.db, self.run_id, os.getpid())

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        from storage.runs import add_metrics

        add_metrics(self.db, self.run_id, step, metrics)

    def checkpoint(self, path: str) -> None:
        from storage.runs import set_checkpoint

        set_checkpoint(self.db, self.run_id, path)

    def failed(self, exc: BaseException) -> None:
        from storage.runs import mark_failed

        if is_main_process():
            mark_failed(self.db, self.run_id, getattr(exc, "user_message", None)
                        or f"{type(exc).__name__}: {exc}")  # fmt: skip


def run_recorded(train: Callable[..., Any], recorder: RunRecorder | None, **kwargs: Any) -> Any:
    """`train(**kwargs, on_metrics=..., on_checkpoint=...)` with `recorder` (if any) told of
    its start, progress and failure."""
    if recorder is None:
        return train(**kwargs)
    recorder.start()
    try:
        return train(**kwargs, on_metrics=recorder.metrics, on_checkpoint=recorder.checkpoint)
    except Exception as exc:  # not on Ctrl-C: the app marks a run whose process is gone interrupted
        recorder.failed(exc)
        raise


def leave_process_group() -> None:
    """End this process's part in a distributed run (after its last collective): without it,
    a rank can abort at interpreter exit ("terminate called without an active exception")
    while gloo's threads are torn down, failing a run that finished. For process entry points
    (the commands); a no-op without a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def finish_command(code: int = 0) -> int:
    """End a training command: leave the process group and, in a run of several processes,
    exit at once (`os._exit`, after flushing): even after `leave_process_group`, a finished
    rank sometimes aborted while C++ tore down gloo's threads at interpreter exit ("terminate
    called without an active exception", seen in 1 of ~8 two-process runs), failing a run whose
    adapter was saved. Everything the command wrote is on disk or committed by then."""
    several = int(os.environ.get("WORLD_SIZE", "1") or "1") > 1
    leave_process_group()
    if several:
        logger.complete()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def single_process_distributed_env() -> None:
    """DeepSpeed needs a process group even for one process: when no launcher (`deepspeed`,
    `accelerate launch`, torchrun) set one up, describe a world of one on loopback (gloo on
    CPU, NCCL on a GPU). A launcher's own variables are left as they are."""
    from model.serve import free_port

    if "WORLD_SIZE" in os.environ:
        return
    defaults = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}  # fmt: skip
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
