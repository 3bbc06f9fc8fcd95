"""The demo model built from code: loads with transformers, is small, deterministic, has Qwen's
tokens and chat template, and a random LoRA adapter on it changes the logits.

Uses the session fixture `demo_model_dir` (tests/conftest.py: `build_demo_model(..., seed=0)`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from model.demo_model import (
    DEMO_MARKER_FILE,
    DEMO_MAX_PIXELS,
    LORA_TARGET_MODULES,
    QWEN_ADDED_TOKENS,
    build_demo_model,
    count_parameters,
    default_demo_model_dir,
    demo_model_main,
    demo_model_version,
    ensure_demo_model,
    is_demo_model,
    make_lora_adapter,
)

EXPECTED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    DEMO_MARKER_FILE,
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(model_dir: Path):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir).eval()
    return processor, model


def conversation() -> list[dict]:
    return [
        {"role": "user", "content": [
            {"type": "image"}, {"type": "image"},
            {"type": "text", "text": "Here are my ECG and chest X-ray."},
        ]},
        {"role": "assistant", "content": "Any chest pain on exertion?"},
        {"role": "user", "content": "Yes, when I climb stairs."},
    ]  # fmt: skip


def images() -> list[Image.Image]:
    return [Image.new("RGB", (224, 224), (200, 30, 30)), Image.new("RGB", (640, 480), (10, 10, 10))]


def test_builds_a_small_loadable_qwen2_5_vl(demo_model_dir):
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    for name in EXPECTED_FILES:
        assert (demo_model_dir / name).is_file(), name
    processor, model = load(demo_model_dir)
    assert isinstance(processor.image_processor, Qwen2VLImageProcessor)
    assert isinstance(processor.video_processor, Qwen2VLVideoProcessor)
    assert processor.image_processor.size.longest_edge == DEMO_MAX_PIXELS

    n_params = count_parameters(model)
    assert 100_000 < n_params < 5_000_000
    marker = json.loads((demo_model_dir / DEMO_MARKER_FILE).read_text())
    assert marker["parameters"] == n_params
    assert marker["seed"] == 0 and marker["version"] == demo_model_version()
    assert is_demo_model(demo_model_dir)

    text = model.config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert head_dim == 64  # vLLM's CPU attention rejects small head dims
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    assert model.config.vision_config.out_hidden_size == text.hidden_size
    assert text.max_position_embeddings >= 4096
    assert text.vocab_size >= len(processor.tokenizer)

    tok = processor.tokenizer
    stop_ids = {tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")}
    assert set(model.generation_config.eos_token_id) == stop_ids
    with safe_open(demo_model_dir / "model.safetensors", "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"F32"}


def test_same_seed_same_bytes_other_seed_other_weights(demo_model_dir, tmp_path):
    again = build_demo_model(tmp_path / "again", seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert sha256(again / name) == sha256(demo_model_dir / name), name
    other = build_demo_model(tmp_path / "other", seed=1)
    assert sha256(other / "model.safetensors") != sha256(demo_model_dir / "model.safetensors")
    assert sha256(other / "tokenizer.json") == sha256(demo_model_dir / "tokenizer.json")


def test_tokenizer_round_trips_and_has_qwen_special_tokens(demo_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_model_dir)
    assert 2000 <= len(tok) <= 4200
    for text in (
        "Doctor: Your haemoglobin is 105 g/L; ferritin 8 µg/L. Take iron every other day.",
        "Patient: ça va? 头痛 🙂 tabs\tand\nnewlines  double  spaces",
    ):
        ids = tok(text).input_ids
        assert tok.decode(ids) == text
    # trained on the clinical corpus: common words are whole tokens, not bytes
    assert len(tok("Doctor: your blood pressure medicine").input_ids) <= 6

    ids = [tok.convert_tokens_to_ids(t) for t, _ in QWEN_ADDED_TOKENS]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # contiguous, in Qwen's order
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    rendered = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>"
    assert tok(rendered).input_ids[:1] == [tok.convert_tokens_to_ids("<|im_start|>")]
    assert tok(rendered).input_ids.count(tok.convert_tokens_to_ids("<|image_pad|>")) == 1
    decoded = tok.decode(tok(rendered).input_ids, skip_special_tokens=True)
    assert decoded == "user\nhi"


def test_chat_template_renders_images_and_model_runs(demo_model_dir):
    processor, model = load(demo_model_dir)
    prompt = processor.apply_chat_template(
        conversation(), tokenize=False, add_generation_prompt=True
    )
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        "<|vision_start|><|image_pad|><|vision_end|>Here are my ECG and chest X-ray.<|im_end|>\n"
        "<|im_start|>assistant\nAny chest pain on exertion?<|im_end|>\n"
        "<|im_start|>user\nYes, when I climb stairs.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    inputs = processor(text=[prompt], images=images(), return_tensors="pt")
    grids = inputs["image_grid_thw"]
    assert grids.tolist()[0] == [1, 16, 16]  # 224x224 at 14 px patches
    for t, h, w in grids.tolist():
        assert t * h * w * 14 * 14 <= DEMO_MAX_PIXELS
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    n_image_tokens = int((inputs["input_ids"] == image_pad).sum())
    assert n_image_tokens == int(grids.prod(dim=1).sum()) // 4  # 2x2 spatial merge
    with torch.inference_mode():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()


def test_chat_template_is_the_official_one_trl_recognises(demo_model_dir):
    from transformers import AutoProcessor
    from trl.chat_template_utils import get_training_chat_template, qwen2_5_vl_chat_template

    processor = AutoProcessor.from_pretrained(demo_model_dir)
    assert processor.chat_template == qwen2_5_vl_chat_template
    assert processor.tokenizer.chat_template == qwen2_5_vl_chat_template
    # TRL swaps in its assistant-masking variant only for templates it knows
    assert "generation" in get_training_chat_template(processor)


def test_lora_adapter_changes_logits(demo_model_dir, tmp_path):
    from peft import PeftModel

    adapter = make_lora_adapter(demo_model_dir, tmp_path / "lora", rank=4, seed=0)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["target_modules"] == LORA_TARGET_MODULES
    with safe_open(adapter / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
        b_norm = sum(float(f.get_tensor(k).abs().sum()) for k in keys if "lora_B" in k)
    assert len(keys) == 2 * 7 * 2  # 2 layers x 7 projections x (A, B)
    assert all("language_model" in k for k in keys)  # vision tower untouched
    assert b_norm > 0

    processor, base = load(demo_model_dir)
    prompt = processor.apply_chat_template(
        conversation(), tokenize=False, add_generation_prompt=True
    )
    inputs = processor(text=[prompt], images=images(), return_tensors="pt")
    with torch.inference_mode():
        base_logits = base(**inputs).logits
    _, fresh = load(demo_model_dir)
    adapted = PeftModel.from_pretrained(fresh, adapter).eval()
    with torch.inference_mode():
        lora_logits = adapted(**inputs).logits
    assert lora_logits.shape == base_logits.shape
    assert (lora_logits - base_logits).abs().max() > 1e-2

    again = make_lora_adapter(demo_model_dir, tmp_path / "lora2", rank=4, seed=0)
    assert sha256(again / "adapter_model.safetensors") == sha256(
        adapter / "adapter_model.safetensors"
    )


def test_ensure_demo_model_builds_once_atomically(tmp_path):
    target = tmp_path / "cache" / "demo"
    built = ensure_demo_model(target)
    assert built == target and is_demo_model(target)
    stamp = (target / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_model(target) == target
    assert (target / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
    assert [p.name for p in target.parent.iterdir()] == ["demo"]  # no temp dirs left


def test_default_dir_is_versioned_under_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = default_demo_model_dir()
    assert path == tmp_path / ".cache" / "pulsemind" / "demo-model" / demo_model_version()


def test_demo_model_cli_prints_path_and_size(tmp_path, capsys):
    assert demo_model_main(str(tmp_path / "cli")) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "cli") in out
    n_params = json.loads((tmp_path / "cli" / DEMO_MARKER_FILE).read_text())["parameters"]
    assert f"{n_params:,}" in out


def test_corpus_dir_without_text_fails_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="corpus"):
        build_demo_model(tmp_path / "out", corpus_dir=tmp_path / "empty")
