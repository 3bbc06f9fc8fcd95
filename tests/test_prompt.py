"""`model.prompt`: the one prompt builder (system prompt per language, attachment context,
which stored messages count), fed with storage's records or any rows shaped like them."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from PIL import Image

from model.images import png_bytes
from model.prompt import SYSTEM_PROMPT, SYSTEM_PROMPTS, to_chat_messages
from storage import (
    Database,
    NewAttachment,
    add_user_message,
    create_consultation,
    create_user,
    history,
)


@dataclass
class Img:
    png: bytes | None
    width: int = 0
    height: int = 0
    sent_mime: str | None = None
    sent: bytes | None = None


@dataclass
class Att:
    kind: str
    page_count: int | None
    text: str | None
    images: list[Img] = field(default_factory=list)


@dataclass
class Msg:
    role: str
    text: str
    attachments: list[Att] = field(default_factory=list)


def test_system_prompt_in_english_by_default_and_in_chinese_on_request():
    assert to_chat_messages([])[0].text == SYSTEM_PROMPT == SYSTEM_PROMPTS["en"]
    assert SYSTEM_PROMPT.startswith("You are PulseMind, a clinical consultation assistant")
    zh = to_chat_messages([], language="zh-CN")[0]
    assert zh.role == "system" and "临床" in zh.text and zh.text == SYSTEM_PROMPTS["zh-CN"]
    with pytest.raises(ValueError, match="zh-CN"):
        to_chat_messages([], language="fr")


def test_rows_shaped_like_stored_messages_build_the_same_prompt_as_storage(tmp_path):
    png = png_bytes(Image.new("RGB", (8, 6), (10, 200, 30)))
    rows = [
        Msg("system", "ignored"),
        Msg("user", "Rash on the arm.", [Att("image", None, None, [Img(png)]),
                                         Att("pdf", 2, "Hb 13.2 g/dL")]),  # fmt: skip
        Msg("assistant", ""),  # a failed answer without text: not part of the dialogue
        Msg("assistant", "How long has it itched?"),
    ]
    got = to_chat_messages(rows)
    assert [m.role for m in got] == ["system", "user", "assistant"]
    assert got[1].text == (
        "[Attachment 1: image]\n[Attachment 2: pdf, 2 pages]\nHb 13.2 g/dL\nRash on the arm."
    )
    assert len(got[1].images) == 1 and got[1].images[0].size == (8, 6)

    db = Database.sqlite(tmp_path / "p.db")
    db.upgrade()
    user = create_user(db, "alice", "correct horse battery", "clinician")
    cid = create_consultation(db, user.id, "t").id
    atts = [NewAttachment("a" * 64, "image", "image/png", len(png), True, "rash.png", [("photo", 8, 6, png)]),
            NewAttachment("b" * 64, "pdf", "application/pdf", 10, True, "labs.pdf", (),
                          text="Hb 13.2 g/dL", page_count=2)]  # fmt: skip
    add_user_message(db, cid, user.id, "Rash on the arm.", atts)
    stored = to_chat_messages(history(db, cid, user_id=user.id, with_png=True))
    db.dispose()
    assert [(m.role, m.text) for m in stored] == [(m.role, m.text) for m in got[:2]]
    assert [im.size for im in stored[1].images] == [(8, 6)]
