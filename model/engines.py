"""Which engine answers for a model variant: the embedded demo engine or an HTTP server.

One engine object per endpoint (HTTP connection pools are shared by every consultation), one
embedded engine per (model dir, adapter) pair: it holds the weights in this process.
In `model/` so the app, the trainers and the evaluation reach a variant's engine the same way.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from model.chat import ChatEngine
from model.embedded import EmbeddedEngine
from model.openai_engine import OpenAIEngine, OpenAIEngineConfig

if TYPE_CHECKING:  # only the variant's fields are read: no runtime tie to storage
    from storage import VariantRecord


class EngineRegistry:
    """Maps variants to live engines, creating each once."""

    def __init__(
        self,
        *,
        max_pixels: int | None = None,
        timeout_s: float | None = None,
        stream_interval: int | None = None,
    ):
        self._lock = threading.Lock()
        self._engines: dict[tuple, ChatEngine] = {}
        self.max_pixels = max_pixels
        self.timeout_s = timeout_s
        self.stream_interval = stream_interval

    def for_variant(self, variant: VariantRecord) -> tuple[ChatEngine, str | None]:
        """The engine and the model name to ask it for."""
        if variant.embedded:
            key = ("embedded", variant.served_model_name, variant.adapter_path)
            with self._lock:
                if key not in self._engines:
                    self._engines[key] = EmbeddedEngine(
                        Path(variant.served_model_name),
                        adapter_dir=Path(variant.adapter_path) if variant.adapter_path else None,
                    )
                return self._engines[key], None
        key = ("http", variant.endpoint)
        with self._lock:
            if key not in self._engines:
                cfg = OpenAIEngineConfig(base_url=variant.endpoint, model=variant.served_model_name,
                                         stream_interval=self.stream_interval)  # fmt: skip
                if self.max_pixels:
                    cfg.max_pixels = self.max_pixels
                if self.timeout_s:
                    cfg.first_token_timeout_s = self.timeout_s
                self._engines[key] = OpenAIEngine(cfg)
            return self._engines[key], variant.served_model_name
