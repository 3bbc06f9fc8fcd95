"""A tiny, randomly initialised Qwen2.5-VL built from code: the offline demo model.

Why: no model weights can be downloaded where PulseMind is developed and tested, yet the app
must run offline (`python app.py` with no server) and the tests must drive a real Qwen2.5-VL
through transformers, PEFT, TRL and vLLM. This module builds one in about a second: a byte-level
BPE tokenizer trained on the project's own corpus (assets/demo_corpus/), Qwen's special tokens
and official chat template, a two-layer text model whose shapes vLLM's CPU kernels accept
(head_dim 64), a two-block vision tower, and Qwen2-VL image and video processors. Its answers are
gibberish by design; the UI labels it "demo model".

How to run:
    python -c "from model.demo_model import demo_model_main; demo_model_main('/tmp/demo')"
    (the lead wires this as `pulsemind demo-model DIR`)

`ensure_demo_model()` builds it once into ~/.cache/pulsemind/demo-model/<version> (atomically:
built in a temporary sibling directory, then renamed into place).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

#: Bump when the recipe changes (shapes, template, tokenizer settings); the corpus hash is added
#: to the version string automatically, so editing assets/demo_corpus/ also gives a new cache dir.
DEMO_MODEL_VERSION = "1"
#: Written into every built directory so the app can tell the demo model from a real one.
DEMO_MARKER_FILE = "pulsemind_demo.json"
DEFAULT_CORPUS_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo_corpus"

#: Target BPE vocabulary (before special tokens): big enough that text is not byte soup,
#: small enough that the embedding tables stay ~0.4 M parameters each.
TOKENIZER_VOCAB_TARGET = 3072
#: Image budget per picture: 224*224 px = 16x16 patches of 14 px = 64 LLM tokens after the 2x2
#: merge, so 30 images (the paper's maximum per prompt) still fit in a few thousand positions.
DEMO_MAX_PIXELS = 224 * 224
#: Qwen's own minimum (56*56): smaller images are scaled up to one 2x2 merge block.
DEMO_MIN_PIXELS = 56 * 56
#: Long enough for multi-turn prompts with many images (30 * 64 image tokens + text).
DEMO_MAX_POSITIONS = 32768

#: Qwen2.5-VL's added tokens, in Qwen's order (ids follow the BPE vocabulary). The bool says
#: whether the token is "special" (skipped when decoding); <tool_call> tags are not in Qwen.
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)

#: The chat template Qwen ships with Qwen2.5-VL-*-Instruct (chat_template.json), verbatim.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: LoRA on the language model only (the vision tower stays frozen), as training/ does.
LORA_TARGET_MODULES = (
    r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
)
#: Std of the random LoRA B matrices: large enough that the adapter visibly moves the logits.
LORA_B_INIT_STD = 0.05


@dataclass(frozen=True)
class DemoShapes:
    """Model shapes. Text: head_dim 64 (vLLM's CPU attention rejects 16); mrope sums to 32."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    mrope_section: tuple[int, int, int] = (8, 12, 12)
    vision_depth: int = 2
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 128
    vision_num_heads: int = 1
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2


def corpus_files(corpus_dir: Path = DEFAULT_CORPUS_DIR) -> list[Path]:
    """The corpus text files, sorted so training sees them in a fixed order."""
    files = sorted(corpus_dir.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no *.txt corpus files in {corpus_dir}")
    return files


def demo_model_version(corpus_dir: Path = DEFAULT_CORPUS_DIR) -> str:
    """Recipe version plus a short hash of the corpus, e.g. '1-3fa2c9d1'."""
    digest = hashlib.sha256()
    for path in corpus_files(corpus_dir):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return f"{DEMO_MODEL_VERSION}-{digest.hexdigest()[:8]}"


def default_demo_model_dir() -> Path:
    """~/.cache/pulsemind/demo-model/<version>."""
    return Path.home() / ".cache" / "pulsemind" / "demo-model" / demo_model_version()


def is_demo_model(model_dir: Path) -> bool:
    """True when `model_dir` was built by this module (the UI then says "demo model")."""
    return (Path(model_dir) / DEMO_MARKER_FILE).is_file()


def build_tokenizer(corpus_dir: Path = DEFAULT_CORPUS_DIR):
    """Train a Qwen2-style byte-level BPE on the corpus; return a `Qwen2Tokenizer`.

    Same normaliser and pre-tokeniser as Qwen2 (its split regex, then byte-level), so the
    tokenizer behaves like Qwen's on any text, only with a far smaller vocabulary.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_TARGET,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    lines = [
        line
        for path in corpus_files(corpus_dir)
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
    ]
    bpe.train_from_iterator(lines, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = state["vocab"]
    # transformers 5 wants merges as tuples; older tokenizers serialise them as "a b" strings.
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in state["merges"]]
    # Qwen's tokens go straight after the BPE vocabulary, in Qwen's order, so their ids are fixed
    # and contiguous (Qwen2Tokenizer would otherwise add eos and pad first, in its own order).
    for token, _special in QWEN_ADDED_TOKENS:
        vocab[token] = len(vocab)

    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=DEMO_MAX_POSITIONS,
    )
    tokenizer.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in QWEN_ADDED_TOKENS])
    tokenizer.add_special_tokens(
        # Qwen's "additional_special_tokens": every special one except <|endoftext|> (= pad).
        {"extra_special_tokens": [t for t, s in QWEN_ADDED_TOKENS if s and t != "<|endoftext|>"]},
        replace_extra_special_tokens=True,
    )
    tokenizer.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer):
    """Qwen2.5-VL processor: tokenizer + image and video processors (vLLM needs both)."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    shapes = DemoShapes()
    common = dict(
        min_pixels=DEMO_MIN_PIXELS,
        max_pixels=DEMO_MAX_PIXELS,
        patch_size=shapes.patch_size,
        temporal_patch_size=shapes.temporal_patch_size,
        merge_size=shapes.spatial_merge_size,
    )
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**common),
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )


def build_config(tokenizer, shapes: DemoShapes = DemoShapes()):
    """The Qwen2_5_VLConfig for the demo model, with token ids taken from `tokenizer`."""
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t, _ in QWEN_ADDED_TOKENS}
    # Round the embedding table up to a multiple of 64, as Qwen does (152064 > 151665 tokens).
    vocab_size = -(-len(tokenizer) // 64) * 64
    text_config = dict(
        vocab_size=vocab_size,
        hidden_size=shapes.hidden_size,
        intermediate_size=shapes.intermediate_size,
        num_hidden_layers=shapes.num_hidden_layers,
        num_attention_heads=shapes.num_attention_heads,
        num_key_value_heads=shapes.num_key_value_heads,
        max_position_embeddings=DEMO_MAX_POSITIONS,
        max_window_layers=shapes.num_hidden_layers,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 1000000.0,
            "mrope_section": list(shapes.mrope_section),
        },
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        dtype="float32",
    )
    vision_config = dict(
        depth=shapes.vision_depth,
        hidden_size=shapes.vision_hidden_size,
        intermediate_size=shapes.vision_intermediate_size,
        num_heads=shapes.vision_num_heads,
        out_hidden_size=shapes.hidden_size,
        patch_size=shapes.patch_size,
        spatial_merge_size=shapes.spatial_merge_size,
        temporal_patch_size=shapes.temporal_patch_size,
        window_size=shapes.patch_size * shapes.spatial_merge_size * 4,
        fullatt_block_indexes=[shapes.vision_depth - 1],
        tokens_per_second=2,
    )
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
        dtype="float32",
    )


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build_demo_model(
    out_dir: Path, *, seed: int = 0, corpus_dir: Path = DEFAULT_CORPUS_DIR
) -> Path:
    """Build the demo model into `out_dir` (created; existing files are overwritten).

    Deterministic: the same seed and corpus give byte-identical safetensors. Returns `out_dir`.
    """
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(corpus_dir)
    processor = build_processor(tokenizer)
    config = build_config(tokenizer)
    # fork_rng: seed the weights without leaving the caller's global RNG state changed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config = GenerationConfig(
        bos_token_id=eot,
        eos_token_id=[im_end, eot],
        pad_token_id=eot,
        do_sample=True,
        temperature=0.7,
        top_p=0.9,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    # Also the classic per-part files (preprocessor_config.json, video_preprocessor_config.json)
    # that loaders older than the unified processor_config.json look for.
    processor.image_processor.save_pretrained(out_dir)
    processor.video_processor.save_pretrained(out_dir)
    n_params = count_parameters(model)
    marker = {
        "name": "PulseMind demo model (random weights)",
        "version": demo_model_version(corpus_dir),
        "seed": seed,
        "parameters": n_params,
        "vocab_size": len(tokenizer),
    }
    (out_dir / DEMO_MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    logger.info("built demo model in {} ({} parameters, seed {})", out_dir, n_params, seed)
    return out_dir


def make_lora_adapter(model_dir: Path, out_dir: Path, *, rank: int = 8, seed: int = 0) -> Path:
    """Save a PEFT LoRA adapter for `model_dir` whose B matrices are random (seeded).

    A fresh LoRA has B = 0 and changes nothing; random B makes the adapter's effect visible,
    which is what tests of adapter loading (transformers, vLLM `--enable-lora`) need.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    out_dir = Path(out_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules=LORA_TARGET_MODULES,
        bias="none",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, lora)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in sorted(peft_model.named_parameters()):
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * LORA_B_INIT_STD)
    peft_model.save_pretrained(out_dir)
    logger.info("saved random LoRA adapter (rank {}) in {}", rank, out_dir)
    return out_dir


def ensure_demo_model(model_dir: Path | None = None, *, seed: int = 0) -> Path:
    """Return the demo model directory, building it first if it is missing.

    Atomic: built into a temporary sibling and renamed into place, so a crash or a concurrent
    builder never leaves a half-written model where the app looks for one.
    """
    target = Path(model_dir) if model_dir is not None else default_demo_model_dir()
    if is_demo_model(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        build_demo_model(tmp, seed=seed)
        try:
            os.rename(tmp, target)
        except OSError:
            # Someone else finished first (target now exists and is not empty): use theirs.
            if not is_demo_model(target):
                raise
            logger.info("demo model was built concurrently in {}; using it", target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def demo_model_main(out_dir: str | None = None) -> int:
    """CLI: build the demo model (into `out_dir`, or the cache) and print where and how big."""
    path = build_demo_model(Path(out_dir)) if out_dir else ensure_demo_model()
    marker = json.loads((path / DEMO_MARKER_FILE).read_text())
    print(f"demo model: {path}")
    print(f"parameters: {marker['parameters']:,}")
    return 0
