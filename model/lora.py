"""Load a LoRA adapter into a running vLLM server, so a new variant is served without a restart.

vLLM accepts adapters at runtime when it runs with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`
(`pulsemind serve` and `model.serve.VLLMServer` set it): `POST {root}/v1/load_lora_adapter`
with `{"lora_name", "lora_path"}`, after which the adapter is served under its name and
`GET /v1/models` lists it (`id` the name, `root` the path). The path is read by the server,
so it must be a path on the server's machine.

    ensure_adapter_loaded("http://127.0.0.1:8000/v1", "a1-crpo", "/runs/7/adapter")

Refusals become `AdapterLoadFailed`, whose message says what to do (server down, runtime
loading switched off, another adapter under that name, the server's own reason).
"""

from __future__ import annotations

from pathlib import Path

import httpx
from loguru import logger

from model.errors import ModelError

#: Loading reads the adapter from disk and moves it to the device: seconds for rank 64.
LOAD_TIMEOUT_S = 120.0
#: Listing models is instant on a healthy server.
LIST_TIMEOUT_S = 10.0

MESSAGES = {
    "unreachable": {
        "en": "The model server at {url} cannot be reached; start it (pulsemind serve) and "
        "try again. Nothing was registered.",
        "zh-CN": "无法连接模型服务器 {url}；请先启动它（pulsemind serve）再重试。未登记任何内容。",
    },
    "no_runtime": {
        "en": "The model server at {url} does not load adapters at runtime; start it with "
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (pulsemind serve does). Nothing was registered.",
        "zh-CN": "模型服务器 {url} 不支持运行时加载适配器；请使用 "
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True 启动（pulsemind serve 会设置）。未登记任何内容。",
    },
    "refused": {
        "en": "The model server refused to load adapter {name!r}: {reason} Nothing was registered.",
        "zh-CN": "模型服务器拒绝加载适配器 {name!r}：{reason} 未登记任何内容。",
    },
    "other_adapter": {
        "en": "The model server already serves a different adapter as {name!r} ({served}); "
        "choose another name. Nothing was registered.",
        "zh-CN": "模型服务器已用名称 {name!r} 提供另一个适配器（{served}）；请换一个名称。未登记任何内容。",
    },
    "not_listed": {
        "en": "The model server accepted adapter {name!r} but does not list it. Nothing was "
        "registered.",
        "zh-CN": "模型服务器接受了适配器 {name!r}，但未在模型列表中显示。未登记任何内容。",
    },
}


def _say(key: str, **fields: object) -> str:
    entry = MESSAGES[key]
    return " / ".join(entry[lang].format(**fields) for lang in ("en", "zh-CN"))


class AdapterLoadFailed(ModelError):
    """The server did not load the adapter; `user_message` says why and what to do."""

    user_message = "The model server did not load the adapter."
    retryable = False

    def __init__(self, detail: str, user_message: str):
        super().__init__(detail)
        self.user_message = user_message


def server_root(endpoint: str) -> str:
    """`http://host:8000` for an endpoint `http://host:8000/v1` (with or without the /v1)."""
    root = endpoint.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def server_path(path: str | Path) -> str:
    """The adapter path as the server should read it: absolute if it exists here (a relative
    path would be read from the server's working directory), else as given (a remote path)."""
    local = Path(path).expanduser()
    return str(local.resolve()) if local.exists() else str(path)


def served_models(endpoint: str, *, timeout_s: float = LIST_TIMEOUT_S) -> dict[str, str | None]:
    """Names the server answers to (base models and adapters) -> their root (an adapter's path)."""
    root = server_root(endpoint)
    try:
        response = httpx.get(f"{root}/v1/models", timeout=timeout_s)
        response.raise_for_status()
        return {m["id"]: m.get("root") for m in response.json().get("data", [])}
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise AdapterLoadFailed(f"listing models at {root}: {type(exc).__name__}: {exc}",
                                _say("unreachable", url=root)) from exc  # fmt: skip


def _reason(response: httpx.Response) -> str:
    """The server's own words about a refusal (vLLM: {"error": {"message": ...}})."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    error = body.get("error", body) if isinstance(body, dict) else body
    message = error.get("message") if isinstance(error, dict) else error
    return str(message or body)[:300]


def ensure_adapter_loaded(
    endpoint: str, name: str, path: str | Path, *, timeout_s: float = LOAD_TIMEOUT_S
) -> bool:
    """Make the server at `endpoint` serve the adapter at `path` as `name`.

    True if it was loaded now, False if the server already served that adapter under that
    name (after a restart of the app, say). AdapterLoadFailed otherwise; the server is then
    unchanged.
    """
    root = server_root(endpoint)
    lora_path = server_path(path)
    served = served_models(endpoint)
    if name in served:
        if served[name] == lora_path:
            logger.info("adapter {} already served at {}", name, root)
            return False
        raise AdapterLoadFailed(f"{name!r} served from {served[name]}",
                                _say("other_adapter", name=name, served=served[name]))  # fmt: skip
    try:
        response = httpx.post(f"{root}/v1/load_lora_adapter",
                              json={"lora_name": name, "lora_path": lora_path},
                              timeout=timeout_s)  # fmt: skip
    except httpx.HTTPError as exc:
        raise AdapterLoadFailed(f"loading {name!r} at {root}: {type(exc).__name__}: {exc}",
                                _say("unreachable", url=root)) from exc  # fmt: skip
    if response.status_code == 404 and "lora" not in response.text.lower():
        # the route itself is missing: runtime updating is off
        raise AdapterLoadFailed(f"{root} has no /v1/load_lora_adapter", _say("no_runtime", url=root))
    if response.status_code != 200:
        reason = _reason(response)
        raise AdapterLoadFailed(f"loading {name!r}: HTTP {response.status_code} {reason}",
                                _say("refused", name=name, reason=reason))  # fmt: skip
    if name not in served_models(endpoint):
        raise AdapterLoadFailed(f"{name!r} not listed after loading", _say("not_listed", name=name))
    logger.info("adapter {} loaded into {}", name, root)
    return True


def unload_adapter(endpoint: str, name: str, *, timeout_s: float = LIST_TIMEOUT_S) -> None:
    """Stop serving the adapter `name` (undoes a load whose registration then failed)."""
    root = server_root(endpoint)
    try:
        response = httpx.post(f"{root}/v1/unload_lora_adapter", json={"lora_name": name},
                              timeout=timeout_s)  # fmt: skip
    except httpx.HTTPError as exc:
        raise AdapterLoadFailed(f"unloading {name!r}: {exc}", _say("unreachable", url=root)) from exc
    if response.status_code != 200:
        reason = _reason(response)
        raise AdapterLoadFailed(f"unloading {name!r}: HTTP {response.status_code} {reason}",
                                _say("refused", name=name, reason=reason))  # fmt: skip
    logger.info("adapter {} unloaded from {}", name, root)
