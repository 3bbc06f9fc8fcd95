"""Registering model variants: `pulsemind variant add / list / activate / deactivate`.

A variant is a base model, or base + LoRA adapter, served at an endpoint with its sampling
defaults (`storage.variants`). Adding an adapter variant served over HTTP first loads the
adapter into the running vLLM server (`model.lora`), then registers it: if the server refuses
or is down, nothing is registered; if registering fails, the adapter is unloaded again.
Activating an adapter variant loads it again if the server lost it (a restarted server
forgets adapters loaded at runtime).

    add_variant(db, VariantSpec("a1-crpo", "http://127.0.0.1:8000/v1", "a1-crpo",
                                adapter_path="/runs/7/adapter", parent="base",
                                sampling={"temperature": 0.7}))
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from loguru import logger

from model.chat import SamplingParams
from model.lora import ensure_adapter_loaded, server_path, unload_adapter
from storage import (
    Conflict,
    Database,
    InvalidInput,
    NotFound,
    StorageError,
    VariantRecord,
    ensure_model_variant,
    get_variant_by_name,
    set_variant_active,
)
from storage.i18n import bilingual

MESSAGES = {
    "exists": {
        "en": "A variant named {name!r} exists already (variants are kept for the votes that "
        "name them); choose another name.",
        "zh-CN": "已存在名为 {name!r} 的模型版本（为保留引用它的投票而不删除），请换一个名称。",
    },
    "no_parent": {
        "en": "There is no variant named {name!r} to be the parent.",
        "zh-CN": "没有名为 {name!r} 的模型版本可作为父版本。",
    },
    "no_variant": {"en": "There is no variant named {name!r}.", "zh-CN": "没有名为 {name!r} 的模型版本。"},
    "sampling": {
        "en": "Unknown sampling setting(s): {names}. Known: {known}.",
        "zh-CN": "未知的采样参数：{names}。可用：{known}。",
    },
}


@dataclass
class VariantSpec:
    """What `variant add` registers."""

    name: str
    """Name shown after a vote and on the leaderboard."""
    endpoint: str
    """OpenAI-compatible server (http://host:8000/v1), or "embedded"."""
    served_model_name: str
    """The `model` the server is asked for; for an adapter, the name it is loaded under."""
    adapter_path: str | None = None
    """LoRA adapter directory (on the server's machine); loaded at runtime when given."""
    parent: str | None = None
    """The variant this one derives from (the base model of an adapter)."""
    sampling: dict[str, Any] = field(default_factory=dict)
    """Sampling defaults (`model.chat.SamplingParams` fields)."""
    notes: str | None = None


def _check_sampling(sampling: dict[str, Any]) -> dict[str, Any] | None:
    known = {f.name for f in fields(SamplingParams)}
    unknown = sorted(set(sampling) - known)
    if unknown:
        raise InvalidInput(f"unknown sampling settings {unknown}", user_message=bilingual(
            MESSAGES["sampling"], names=", ".join(unknown), known=", ".join(sorted(known))))  # fmt: skip
    return dict(sampling) or None


def add_variant(db: Database, spec: VariantSpec) -> VariantRecord:
    """Register a new variant (loading its adapter into the server first). Conflict if the
    name is taken, NotFound for an unknown parent, AdapterLoadFailed if the server refuses."""
    sampling = _check_sampling(spec.sampling)
    if get_variant_by_name(db, spec.name.strip()) is not None:
        raise Conflict(f"variant {spec.name!r} exists", user_message=bilingual(MESSAGES["exists"], name=spec.name))
    if spec.parent is not None and get_variant_by_name(db, spec.parent) is None:
        raise NotFound(f"parent {spec.parent!r}", user_message=bilingual(MESSAGES["no_parent"], name=spec.parent))
    adapter_path, loaded = spec.adapter_path, False
    if spec.adapter_path and spec.endpoint.strip() != "embedded":
        adapter_path = server_path(spec.adapter_path)
        loaded = ensure_adapter_loaded(spec.endpoint, spec.served_model_name, adapter_path)
    try:
        record = ensure_model_variant(db, spec.name.strip(), spec.endpoint, spec.served_model_name,
                                      adapter_path=adapter_path, parent=spec.parent,
                                      sampling_defaults=sampling, notes=spec.notes)  # fmt: skip
    except StorageError:
        if loaded:  # nothing half-registered: the server forgets the adapter again
            try:
                unload_adapter(spec.endpoint, spec.served_model_name)
            except Exception as exc:  # noqa: BLE001 - the registration error is the one to show
                logger.warning("adapter {} could not be unloaded after a failed registration: {}",
                               spec.served_model_name, exc)  # fmt: skip
        raise
    logger.info("variant {} registered (id {}){}", record.name, record.id,
                " with its adapter loaded" if loaded else "")  # fmt: skip
    return record


def set_active(db: Database, name: str, active: bool) -> VariantRecord:
    """Offer (or stop offering) a variant in Compare and Consult; activating an adapter variant
    makes sure its server serves the adapter."""
    variant = get_variant_by_name(db, name)
    if variant is None:
        raise NotFound(f"variant {name!r}", user_message=bilingual(MESSAGES["no_variant"], name=name))
    if active and variant.adapter_path and not variant.embedded:
        ensure_adapter_loaded(variant.endpoint, variant.served_model_name, variant.adapter_path)
    return set_variant_active(db, name, active)
