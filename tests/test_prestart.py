"""An answer starts with the turn that asks for it (/send with a variant, the page's Enter), and
/answer follows it: the model is asked once, the answer is stored once however it ends, also
when nobody follows it; another variant replaces it; Stop reaches it before the page follows;
nobody else can follow or stop it; a refused turn starts nothing that stays."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from apphelpers import make_users

from app.consult_tab import ConsultHandlers
from app.workflow import Consultations
from model.chat import Completion, Delta
from model.engines import EngineRegistry
from storage import (
    Database,
    InvalidInput,
    NotFound,
    PermissionDenied,
    answer_versions,
    ensure_model_variant,
    get_user_by_name,
    history,
    list_audit,
    list_consultations,
)

WORDS = ("Chest ", "pain ", "with ", "sweating ", "needs ", "an ", "ECG ", "now.")


class Scripted:
    """A model that answers `WORDS` (or words until closed, `endless`) once `gate` is open,
    counting the requests it was sent."""

    label = "scripted"

    def __init__(self, *, endless: bool = False, gate: bool = True):
        self.endless, self.calls = endless, 0
        self.asked, self.closed = threading.Event(), threading.Event()
        self.gate = threading.Event()
        if gate:
            self.gate.set()

    def stream(self, messages, sampling, *, model=None):
        self.calls += 1
        self.asked.set()
        try:
            assert self.gate.wait(10), "the test never let the model answer"
            text = ""
            words = (f"w{i} " for i in itertools.count()) if self.endless else WORDS
            for word in words:
                text += word
                yield Delta(word)
                time.sleep(0.01)
            yield Completion(text, "stop", prompt_tokens=9, completion_tokens=len(WORDS))
        finally:
            self.closed.set()


class Registry(EngineRegistry):
    def __init__(self, engines: dict[str, Scripted]):
        super().__init__()
        self.engines = engines

    def for_variant(self, variant):
        return self.engines[variant.name], None


@pytest.fixture
def world(tmp_path):
    db = Database.sqlite(tmp_path / "t.db")
    db.upgrade()
    make_users(db)
    for name in ("one", "two"):
        ensure_model_variant(db, name, "http://127.0.0.1:9/v1", "m", sampling_defaults={})
    engines = {"one": Scripted(), "two": Scripted()}
    with Consultations(db, Registry(engines), checkpoint_s=0.0) as flow:
        h = ConsultHandlers(db, flow)
        yield h, db, engines, {n: get_user_by_name(db, n) for n in ("alice", "bob")}
    db.dispose()


def _send(h, user, variant, text="Chest pain since this morning", cid=None) -> int:
    dropdown, shown, box, status, title = h.send(user, {"text": text, "files": []}, cid, variant)
    assert shown[-1] == {"role": "user", "content": text} and box is None
    return dropdown["value"]


def _answers(db, cid):
    return [m for m in history(db, cid) if m.role.value == "assistant"]


def test_send_starts_the_answer_and_answer_follows_it(world):
    h, db, engines, u = world
    engines["one"].gate.clear()
    cid = _send(h, u["alice"], "one")
    assert engines["one"].asked.wait(5), "the model is asked by /send, before /answer"
    engines["one"].gate.set()
    updates = list(h.answer(u["alice"], cid, "one"))
    chat, status = updates[-1]
    assert engines["one"].calls == 1, "asked once: /answer follows the started answer"
    (stored,) = _answers(db, cid)
    assert stored.text == "".join(WORDS) and stored.finish_reason.value == "stop"
    assert chat[-1]["content"].startswith("".join(WORDS)) and status == ""
    assert chat[0]["content"] == "Chest pain since this morning"
    # every update shows the question first, then the answer growing
    assert all(c[0]["content"] == "Chest pain since this morning" for c, _ in updates)
    audits = [a for a in list_audit(db) if a.action == "answer"]
    assert len(audits) == 1 and audits[0].outcome.value == "ok"

    # the next turn of the same consultation starts the same way; the chat keeps both
    _send(h, u["alice"], "one", "And the troponin?", cid)
    list(h.answer(u["alice"], cid, None))  # None: whichever variant was started
    assert engines["one"].calls == 2 and len(_answers(db, cid)) == 2


def test_an_answer_nobody_follows_is_stored(world):
    h, db, engines, u = world
    cid = _send(h, u["alice"], "one")
    run = h.prestarts.running(u["alice"], cid)
    assert run is not None and run.done.wait(10)
    (stored,) = _answers(db, cid)
    assert stored.text == "".join(WORDS) and stored.finish_reason.value == "stop"
    # the page following it late still gets the stored answer, not "already answered"
    chat, _ = list(h.answer(u["alice"], cid, "one"))[-1]
    assert chat[-1]["content"].startswith("".join(WORDS)) and engines["one"].calls == 1


def test_another_variant_replaces_the_started_answer(world):
    h, db, engines, u = world
    engines["one"].endless = True
    cid = _send(h, u["alice"], "one")
    assert engines["one"].asked.wait(5)
    time.sleep(0.2)  # some text of "one" arrives (and is checkpointed)
    chat, status = list(h.answer(u["alice"], cid, "two"))[-1]
    assert engines["one"].closed.is_set(), "the started answer's request ended"
    current = _answers(db, cid)[-1]
    assert current.text == "".join(WORDS) and current.finish_reason.value == "stop"
    versions = answer_versions(db, cid, current.id, u["alice"].id)
    assert len(versions.versions) == 2, "the stopped answer of 'one' is kept as a version"
    assert versions.versions[0].finish_reason.value == "cancelled"


def test_stop_reaches_an_answer_the_page_does_not_follow_yet(world):
    h, db, engines, u = world
    engines["one"].endless = True
    cid = _send(h, u["alice"], "one")
    assert engines["one"].asked.wait(5)
    time.sleep(0.2)
    h.stop(u["alice"], cid)
    assert engines["one"].closed.is_set()
    (stored,) = _answers(db, cid)
    assert stored.finish_reason.value == "cancelled" and stored.text.startswith("w0 w1 ")
    chat, _ = list(h.answer(u["alice"], cid, "one"))[-1]  # the page shows it as stored
    assert chat[-1]["content"].startswith(stored.text) and engines["one"].calls == 1


def test_nobody_else_follows_or_stops_it(world):
    h, db, engines, u = world
    engines["one"].gate.clear()
    cid = _send(h, u["alice"], "one")
    h.stop(u["bob"], cid)  # bob's Stop is about bob's own answers
    with pytest.raises((NotFound, PermissionDenied)):
        list(h.answer(u["bob"], cid, "one"))
    engines["one"].gate.set()
    list(h.answer(u["alice"], cid, "one"))
    (stored,) = _answers(db, cid)
    assert stored.finish_reason.value == "stop" and engines["one"].calls == 1


def test_a_refused_turn_starts_nothing_that_stays(world):
    from storage.messages import MAX_MESSAGE_CHARS

    h, db, engines, u = world
    with pytest.raises(InvalidInput):
        _send(h, u["alice"], "one", "x" * (MAX_MESSAGE_CHARS + 1))
    assert list_consultations(db, u["alice"].id) == []
    assert not engines["one"].asked.is_set() or engines["one"].closed.wait(5)
    for variant in ("three", 123, True, 10**30):  # unknown or not a name: refused with the turn
        with pytest.raises(NotFound) as exc:
            _send(h, u["alice"], variant)
        assert exc.value.user_message
    assert list_consultations(db, u["alice"].id) == [], "nothing stored"


def test_the_page_starts_the_answer_unless_two_answers_follow(world):
    h, db, engines, u = world
    message = {"text": "Cough for a week", "files": []}
    out = h.send_page(u["alice"], message, None, "", "one", True)  # compare mode on
    cid, follows = out[0], out[-1]
    assert follows is True and history(db, cid)[-1].role.value == "user"
    time.sleep(0.2)
    assert engines["one"].calls == 0 and h.prestarts.running(u["alice"], cid) is None
    out = h.send_page(u["alice"], {"text": "And fever?", "files": []}, cid, "", "one", False)
    assert out[-1] is True and engines["one"].asked.wait(5)
    list(h.answer(u["alice"], cid, "one"))
    assert engines["one"].calls == 1 and len(_answers(db, cid)) == 1


def test_updates_slow_down_in_proportion_when_many_answers_stream():
    """One answer updates every UPDATE_INTERVAL_S; with 16 streaming at once each updates half
    as often (the server's updates per second stay about the same); back once they end."""
    from app.workflow import FULL_RATE_STREAMS, UPDATE_INTERVAL_S, throttled

    now = [0.0]

    def texts(n: int, step_s: float = 0.01):
        for i in range(n):
            now[0] += step_s
            yield f"t{i}"

    def shown() -> int:  # updates of one answer whose text grows every 10 ms for 1 s
        now[0] = 0.0
        return len(list(throttled(texts(100), clock=lambda: now[0])))

    alone = shown()
    assert alone == pytest.approx(1 / UPDATE_INTERVAL_S, abs=1)
    others = [throttled(iter(["x"] * 2)) for _ in range(2 * FULL_RATE_STREAMS - 1)]
    for other in others:
        next(other)  # streaming: started, not ended
    crowded = shown()
    assert crowded == pytest.approx(alone / 2, abs=1)
    for other in others:
        other.close()
    assert shown() == alone
