"""Training exports (training/export.py) from a real SQLite database built with the storage
functions: columns, images, provenance ids, flagged votes, the prompt builder's messages, and
byte-identical output from the same database.

Run: OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pytest tests/test_export.py -q
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import datasets
import pytest

from app.cli import main
from model.images import as_pixels
from model.prompt import to_chat_messages
from storage import (
    Database,
    NewAttachment,
    NewCase,
    NewCaseTurn,
    NewImage,
    add_assistant_message,
    add_user_message,
    create_comparison,
    create_consultation,
    create_user,
    ensure_model_variant,
    history,
    import_case_set,
    keep_response,
    record_response,
    record_vote,
    turn_context,
)
from storage.feedback import set_feedback
from storage.models import MessageRole
from storage.records import ContextMessage
from tests.test_storage import png_bytes
from training.export import FEATURES, ExportConfig, NothingToExport, export_dataset

PASSWORD = "correct horse battery"
VOTE = dict(proactiveness="a", accuracy="tie", usefulness="b", language_quality="a")
SIZES = {"red": (8, 6), "blue": (12, 5), "green": (7, 9)}
COLORS = {"red": (200, 30, 30), "blue": (30, 30, 200), "green": (30, 200, 30)}


def image(name: str) -> NewAttachment:
    png = png_bytes(COLORS[name], SIZES[name])
    w, h = SIZES[name]
    return NewAttachment(sha256=hashlib.sha256(png).hexdigest(), kind="image", mime="image/png",
                         size_bytes=len(png), deidentified=True, original_name=f"{name}.png",
                         images=[NewImage("photo", w, h, png)])  # fmt: skip


def answer(db, turn, user, side, text):
    return record_response(db, turn.id, user.id, side, text, sampling_params={"temperature": 0.7},
                           finish_reason="stop", latency_ms=900)  # fmt: skip


def reply(db, cid, user, text):
    return add_assistant_message(db, cid, text, user_id=user.id, model_variant_id=None,
                                 sampling_params=None, latency_ms=1, first_token_ms=1,
                                 prompt_tokens=1, completion_tokens=1, finish_reason="stop")  # fmt: skip


@pytest.fixture
def built(db: Database):
    """A consultation (two images over three turns, a thumbs-up answer) compared in clinician
    mode and voted; a typed comparison whose vote flags its chosen side; a case set compared
    and voted; ids of everything for the assertions."""
    alice = create_user(db, "alice", PASSWORD, "clinician")
    ann = create_user(db, "ann", PASSWORD, "annotator")
    base = ensure_model_variant(db, "base", "http://127.0.0.1:1/v1", "tiny")
    lora = ensure_model_variant(db, "lora", "http://127.0.0.1:1/v1", "a1", adapter_path="/a1",
                                parent="base")  # fmt: skip
    ids = dict(variant_a_id=base.id, variant_b_id=lora.id)
    c = create_consultation(db, alice.id, "Rash")
    add_user_message(db, c.id, alice.id, "Rash on the arm.", [image("red")])
    first = reply(db, c.id, alice, "Since when?")
    set_feedback(db, first.id, alice.id, "up")
    add_user_message(db, c.id, alice.id, "Two days; here it is today.", [image("blue")])
    reply(db, c.id, alice, "Any fever?")
    add_user_message(db, c.id, alice.id, "No fever.")
    mine = create_comparison(db, alice.id, "consultation", consultation_id=c.id, **ids)
    answer(db, mine, alice, "a", "Likely contact dermatitis.")
    answer(db, mine, alice, "b", "Could be anything.")
    clinician_vote = record_vote(
        db, mine.id, alice.id, overall="a", idempotency_key="vote-alice-1", **VOTE
    )
    kept = keep_response(db, mine.id, alice.id, "a")
    typed = create_comparison(db, ann.id, "ad_hoc", prompt_text="Cough for a week.", **ids)
    answer(db, typed, ann, "a", "Smoker?")
    answer(db, typed, ann, "b", "Take this unsafe dose.")
    flagged_vote = record_vote(db, typed.id, ann.id, overall="b", safety_flag_b=True,
                               idempotency_key="vote-ann-flag", **VOTE)  # fmt: skip
    case_set = import_case_set(db, "derm", "pulsemind_jsonl", "0" * 64, [NewCase(
        source_id="c1", turns=[NewCaseTurn("Itchy spot.", "How long?", [image("green")]),
                               NewCaseTurn("A week.", None)])])  # fmt: skip
    from storage import list_cases

    case_id = list_cases(db, case_set.id)[0].id
    on_case = create_comparison(db, ann.id, "case", case_id=case_id, **ids)
    answer(db, on_case, ann, "a", "Photo please.")
    answer(db, on_case, ann, "b", "Use a cream.")
    case_vote = record_vote(
        db, on_case.id, ann.id, overall="b", idempotency_key="vote-ann-case", **VOTE
    )
    return dict(alice=alice, ann=ann, consultation=c, first=first, mine=mine, kept=kept,
                typed=typed, on_case=on_case, case_id=case_id, clinician_vote=clinician_vote,
                flagged_vote=flagged_vote, case_vote=case_vote)  # fmt: skip


def export(db, tmp_path, kind, name=None, **kw) -> datasets.Dataset:
    out = tmp_path / (name or kind)
    export_dataset(db, ExportConfig(kind=kind, out=out, **kw))
    return datasets.load_from_disk(str(out))


def prompt_of(chat) -> tuple[list, list]:
    """The expected columns of prompt-builder messages: role/content and the images' pixels."""
    messages = [{"role": m.role, "content": [{"type": "image", "text": None}] * len(m.images)
                 + [{"type": "text", "text": m.text}]} for m in chat]  # fmt: skip
    return messages, [as_pixels(img).convert("RGB") for m in chat for img in m.images]


def same_images(got, expected) -> bool:
    return len(got) == len(expected) and all(
        g.size == e.size and list(g.convert("RGB").getdata()) == list(e.getdata())
        for g, e in zip(got, expected, strict=True))  # fmt: skip


def test_sft_rows_from_votes_consultations_and_cases(db, tmp_path, built):
    ds = export(db, tmp_path, "sft")
    assert list(ds.column_names) == list(FEATURES["sft"])
    rows = list(ds)
    by_source = {s: [r for r in rows if r["source"] == s] for s in ("vote", "consultation", "case")}
    # the flagged vote (safety flag on its chosen side) is left out
    assert sorted(v for r in by_source["vote"] for v in r["vote_ids"]) == sorted(
        [built["clinician_vote"].id, built["case_vote"].id]
    )
    assert built["flagged_vote"].id not in {v for r in rows for v in r["vote_ids"]}

    # the clinician-mode vote: the prompt is to_chat_messages on the turn's records + the winner
    mine = built["mine"]
    row = next(r for r in by_source["vote"] if r["comparison_turn_ids"] == [mine.id])
    records = turn_context(db, mine.id, user_id=built["alice"].id, with_png=True)
    expected, pixels = prompt_of(
        to_chat_messages(
            [*records, ContextMessage(MessageRole.ASSISTANT, "Likely contact dermatitis.")],
            language="en",
        )
    )
    assert row["messages"] == expected
    assert same_images(row["images"], pixels) and [i.size for i in row["images"]] == [
        SIZES["red"],
        SIZES["blue"],
    ]
    assert row["attachment_sha256s"] == [image("red").sha256, image("blue").sha256]
    assert len(row["response_ids"]) == 1 and row["context_sha256"] == mine.context_sha256
    stored = history(db, built["consultation"].id)
    # the clinician kept that answer: it is the consultation's next message, and the same
    # example, so one row carries the vote's ids and the consultation's
    assert row["message_ids"] == [m.id for m in stored] and len(stored) == 6
    assert stored[-1].id == built["kept"].kept_message_id and row["signals"] == [
        "kept",
        "vote_overall",
    ]
    assert row["consultation_id"] == built["consultation"].id
    full = history(db, built["consultation"].id, with_png=True)
    assert prompt_of(to_chat_messages(full, language="en"))[0] == row["messages"]

    # consultation answers: the thumbs-up one, in its own context
    (thumbs,) = by_source["consultation"]
    assert thumbs["signals"] == ["thumbs_up"] and thumbs["message_ids"] == [
        m.id for m in stored[:2]
    ]
    expected, pixels = prompt_of(to_chat_messages(full[:2], language="en"))
    assert thumbs["messages"] == expected and same_images(thumbs["images"], pixels)
    assert [i.size for i in thumbs["images"]] == [SIZES["red"]]

    # the case set's reference dialogue, up to its last reference answer
    (case_row,) = by_source["case"]
    assert case_row["case_id"] == built["case_id"] and len(case_row["case_turn_ids"]) == 1
    assert [m["role"] for m in case_row["messages"]] == ["system", "user", "assistant"]
    assert case_row["messages"][2]["content"][-1]["text"] == "How long?"
    assert [i.size for i in case_row["images"]] == [SIZES["green"]]

    with_flagged = export(db, tmp_path, "sft", name="sft-flagged", include_flagged=True)
    assert built["flagged_vote"].id in {v for r in with_flagged for v in r["vote_ids"]}
    assert len(with_flagged) == len(ds) + 1


def test_pairs_rows(db, tmp_path, built):
    ds = export(db, tmp_path, "pairs")
    assert list(ds.column_names) == list(FEATURES["pairs"])
    assert sorted(v for r in ds for v in r["vote_ids"]) == sorted(
        [built["clinician_vote"].id, built["case_vote"].id]
    )
    row = next(r for r in ds if r["vote_ids"] == [built["case_vote"].id])  # overall "b"
    on_case = built["on_case"]
    records = turn_context(db, on_case.id, user_id=built["ann"].id, with_png=True)
    expected, pixels = prompt_of(to_chat_messages(records, language="en"))
    assert row["prompt"] == expected and same_images(row["images"], pixels)
    assert row["chosen"][0]["content"][0]["text"] == "Use a cream."
    assert row["rejected"][0]["content"][0]["text"] == "Photo please."
    # VOTE: proactiveness a, accuracy tie, usefulness b, language a; b won overall
    assert (row["proactiveness"], row["accuracy"], row["usefulness"], row["language_quality"],
            row["overall"]) == ("rejected", "tie", "chosen", "rejected", "chosen")  # fmt: skip
    assert row["voter_id"] == built["ann"].id and row["case_id"] == built["case_id"]
    assert (row["chosen_variant"], row["rejected_variant"]) == ("lora", "base")
    assert row["comparison_turn_ids"] == [on_case.id] and len(row["response_ids"]) == 2
    assert row["attachment_sha256s"] == [image("green").sha256] and len(row["case_turn_ids"]) == 2
    flagged = export(db, tmp_path, "pairs", name="pairs-flagged", include_flagged=True)
    row = next(r for r in flagged if r["vote_ids"] == [built["flagged_vote"].id])
    assert row["chosen"][0]["content"][0]["text"] == "Take this unsafe dose."


def test_crpo_rows_and_policy(db, tmp_path, built):
    ds = export(db, tmp_path, "crpo")
    assert list(ds.column_names) == list(FEATURES["crpo"])
    by_turn = {tuple(r["comparison_turn_ids"]): r for r in ds}
    assert by_turn[(built["mine"].id,)]["counterparts"] == [
        "Likely contact dermatitis.",
        "Could be anything.",
    ]
    # the flagged answer is not a counterpart; its unflagged sibling is
    assert by_turn[(built["typed"].id,)]["counterparts"] == ["Smoker?"]
    assert by_turn[(built["typed"].id,)]["vote_ids"] == [built["flagged_vote"].id]
    mine = by_turn[(built["mine"].id,)]
    assert [i.size for i in mine["images"]] == [SIZES["red"], SIZES["blue"]]
    records = turn_context(db, built["mine"].id, user_id=built["alice"].id, with_png=True)
    assert mine["prompt"] == prompt_of(to_chat_messages(records, language="en"))[0]
    policy = export(db, tmp_path, "crpo", name="crpo-policy", policy="lora", include_flagged=True)
    assert all(v == "base" for r in policy for v in r["counterpart_variants"])
    assert sum(len(r["counterparts"]) for r in policy) == 3


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("kind", ["sft", "pairs", "crpo"])
def test_same_database_gives_identical_bytes(db, tmp_path, built, kind):
    for name in ("one", "two"):
        export_dataset(db, ExportConfig(kind=kind, out=tmp_path / name))
    one, two = files_of(tmp_path / "one"), files_of(tmp_path / "two")
    assert any(name.endswith(".arrow") for name in one)
    assert one == two


def test_empty_export_and_existing_folder(db, tmp_path, built):
    fresh = Database.sqlite(tmp_path / "empty.db")
    fresh.upgrade()
    with pytest.raises(NothingToExport) as exc:
        export_dataset(fresh, ExportConfig(kind="pairs", out=tmp_path / "out"))
    assert "Nothing to export" in exc.value.user_message
    assert list(tmp_path.glob("*out*")) == []
    (tmp_path / "taken").mkdir()
    with pytest.raises(Exception, match="exists"):
        export_dataset(db, ExportConfig(kind="sft", out=tmp_path / "taken"))
    fresh.dispose()


def test_cli_export(db, tmp_path, built, capsys):
    url = db.url.render_as_string(hide_password=False)
    assert main(["export", "--kind", "pairs", str(tmp_path / "p"), "--database-url", url]) == 0
    assert len(datasets.load_from_disk(str(tmp_path / "p"))) == 2
    assert "exported 2 pairs rows" in capsys.readouterr().out
    assert main(["export", "--kind", "pairs", str(tmp_path / "q"), "--database-url", url,
                 "--since", "2999-01-01T00:00:00+00:00"]) == 1  # fmt: skip
    assert "Nothing to export" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_picked_version_and_thumbs_down(db, tmp_path):
    bob = create_user(db, "bob", PASSWORD, "clinician")
    c = create_consultation(db, bob.id, "Cough")
    add_user_message(db, c.id, bob.id, "Cough for a week.")
    old = reply(db, c.id, bob, "Take antibiotics.")
    new = add_assistant_message(db, c.id, "Any fever or smoking?", user_id=bob.id,
                                model_variant_id=None, sampling_params=None, latency_ms=1,
                                first_token_ms=1, prompt_tokens=1, completion_tokens=1,
                                finish_reason="stop", replaces_id=old.id)  # fmt: skip
    add_user_message(db, c.id, bob.id, "No fever, non-smoker.")
    last = reply(db, c.id, bob, "Chest X-ray then.")
    set_feedback(db, old.id, bob.id, "up")
    set_feedback(db, last.id, bob.id, "up")
    set_feedback(db, last.id, bob.id, "down")  # changed its mind: no longer a good answer
    ds = export(db, tmp_path, "sft")
    signals = {r["message_ids"][-1]: r["signals"] for r in ds}
    # the regenerated version the clinician went on from is picked; the replaced one keeps
    # its thumbs up and its own context (no later turns)
    assert signals == {new.id: ["picked"], old.id: ["thumbs_up"]}
    row = next(r for r in ds if r["message_ids"][-1] == old.id)
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][-1]["content"][-1]["text"] == "Take antibiotics."
