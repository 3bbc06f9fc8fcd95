"""The vLLM server dies in the middle of a streamed answer, then comes back.

One dedicated server (the session one stays untouched) is killed twice: once under a turn
driven through `model/` + `storage/`, once under the launched app driven by gradio_client.
Each time the partial answer is recorded as cut off, a typed error comes back, and after a
restart on the same port a retry succeeds.
"""

from __future__ import annotations

import threading
import time

import pytest
from conftest import vllm_config
from gradio_client import Client

from model.chat import ChatMessage, SamplingParams
from model.errors import ModelDiedMidAnswer
from model.openai_engine import OpenAIEngine, OpenAIEngineConfig
from model.serve import VLLMServer
from model.turn import TurnStream
from storage import (
    Database,
    MessageRole,
    add_assistant_message,
    add_user_message,
    create_consultation,
    create_user,
    ensure_model_variant,
    get_user_by_name,
    history,
)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

#: Long enough that the answer is still streaming when the server is killed.
LONG = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=3000, seed=11)


@pytest.fixture(scope="module")
def doomed_server(demo_model_dir, tmp_path_factory):
    cfg = vllm_config(demo_model_dir, log_path=str(tmp_path_factory.mktemp("v") / "vllm.log"))
    srv = VLLMServer(cfg).start()
    yield srv
    srv.stop()


def restart(srv: VLLMServer) -> None:
    """Start the same server again on the same port."""
    srv.stop()
    srv.start()


def test_model_layer_records_cut_off_and_retry_succeeds(doomed_server, tmp_path):
    db = Database.sqlite(tmp_path / "p.db")
    db.upgrade()
    user = create_user(db, "carol", "correct horse battery", "clinician")
    variant = ensure_model_variant(db, "tiny", doomed_server.base_url, "tiny")
    cid = create_consultation(db, user.id, "kill test").id
    add_user_message(db, cid, user.id, "Persistent cough for three weeks.")
    engine = OpenAIEngine(OpenAIEngineConfig(base_url=doomed_server.base_url, model="tiny"))
    msgs = [ChatMessage("user", "Persistent cough for three weeks.")]

    turn = TurnStream(engine, msgs, LONG, context={"consultation": cid})
    seen = ""
    for i, seen in enumerate(turn):  # noqa: B007 - `seen` is read after the loop
        if i == 3:
            doomed_server.kill()
    out = turn.outcome
    assert out.finish_reason == "cut_off" and isinstance(out.error, ModelDiedMidAnswer)
    assert out.text and out.text.startswith(seen[:5])

    def record(o, replaces=None):
        return add_assistant_message(
            db, cid, o.text, user_id=user.id, model_variant_id=variant.id,
            sampling_params=LONG.to_dict(),
            latency_ms=int(o.latency_s * 1000), first_token_ms=None, prompt_tokens=o.prompt_tokens,
            completion_tokens=o.completion_tokens, finish_reason=o.finish_reason,
            error=o.error.user_message if o.error else None, replaces_id=replaces,
        )  # fmt: skip

    cut = record(out)
    assert cut.finish_reason.value == "cut_off" and cut.text == out.text and cut.error

    # while it is down: a typed error at once, nothing half-written
    down = TurnStream(engine, msgs, SamplingParams(max_tokens=8)).run()
    assert down.finish_reason == "error" and down.error is not None and not down.text

    restart(doomed_server)
    ok = TurnStream(engine, msgs, SamplingParams(max_tokens=16, seed=1)).run()
    assert ok.ok and ok.text
    record(ok, replaces=cut.id)
    current = history(db, cid)
    assert [m.role for m in current] == [MessageRole.USER, MessageRole.ASSISTANT]
    assert current[-1].finish_reason.value in ("stop", "length")
    everything = history(db, cid, include_superseded=True)
    assert any(m.id == cut.id and m.superseded and m.text == out.text for m in everything)


def test_app_shows_error_keeps_conversation_and_retries(doomed_server, tmp_path):
    from apphelpers import PASSWORD, make_users, running_app, text_of

    from app.config import AppConfig

    db = Database.sqlite(tmp_path / "app.db")
    db.upgrade()
    make_users(db)
    ensure_model_variant(db, "tiny", doomed_server.base_url, "tiny",
                         sampling_defaults=LONG.to_dict())  # fmt: skip
    config = AppConfig(model_url=doomed_server.base_url, model="tiny", variant_name="tiny",
                       data_dir=str(tmp_path))  # fmt: skip
    with running_app(config, db) as url:
        # create_app re-registers the variant from the config: keep the long sampling
        ensure_model_variant(db, "tiny", doomed_server.base_url, "tiny",
                             sampling_defaults=LONG.to_dict())  # fmt: skip
        alice = Client(url, auth=("alice", PASSWORD), verbose=False)
        dropdown, *_ = alice.predict({"text": "Fever and rash in a child.", "files": []}, None,
                                     api_name="/send")  # fmt: skip
        cid = int(dropdown["value"])
        job = alice.submit(cid, "tiny", api_name="/answer")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            outs = job.outputs()
            if outs and outs[-1][0] and outs[-1][0][-1]["role"] == "assistant":
                break
            time.sleep(0.05)
        killer = threading.Thread(target=doomed_server.kill)
        killer.start()
        chat, status = job.result(timeout=120)
        killer.join()
        assert "stopped in the middle" in status  # the status line says what happened
        assert "Retry" in text_of(chat[-1])  # ... and so does the conversation
        user = get_user_by_name(db, "alice")
        msgs = history(db, cid, user_id=user.id)
        assert [m.role for m in msgs] == [MessageRole.USER, MessageRole.ASSISTANT]
        assert msgs[1].finish_reason.value == "cut_off" and msgs[1].text

        # retry while still down: a clear message, nothing lost
        chat, status = alice.predict(cid, "tiny", api_name="/retry")
        assert "cannot be reached" in status
        kept = history(db, cid, user_id=user.id)
        assert kept[0].text == "Fever and rash in a child." and kept[1].id == msgs[1].id

        restart(doomed_server)
        ensure_model_variant(db, "tiny", doomed_server.base_url, "tiny",
                             sampling_defaults={"max_tokens": 16, "temperature": 0.0})  # fmt: skip
        chat, status = alice.predict(cid, "tiny", api_name="/retry")
        assert status == ""
        msgs = history(db, cid, user_id=user.id)
        assert [m.role for m in msgs] == [MessageRole.USER, MessageRole.ASSISTANT]
        assert msgs[1].finish_reason.value in ("stop", "length")
        assert text_of(chat[-1]) == msgs[1].text
