"""Vote rows for the leaderboard: every vote with its turn's variants and answer style, read-only.

The leaderboard (training/leaderboard.py) rates variants from votes and checks them for
style effects and careless voting. It needs, per vote, which variant was on which side, the
choices, and a few facts about the two answers (length in characters, markdown elements,
whether an answer names a model) - not the answers' text, and no patient text. This module
reads those in one read-only transaction and returns plain frozen records, so that the
analysis runs on plain lists and is testable without a database.

    rows = leaderboard_rows(db, user_id=admin.id)   # PermissionDenied for a non-admin
    rows = leaderboard_rows(db)                     # trusted callers (the CLI run by an admin)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from loguru import logger
from sqlalchemy import select

from storage.access import active_user
from storage.db import Database
from storage.errors import PermissionDenied
from storage.models import (
    ComparisonResponse,
    ComparisonTurn,
    ModelVariant,
    Side,
    UserRole,
    Vote,
)
from storage.votes import DIMENSIONS

#: Markdown elements counted as "style" (Chatbot Arena's style control counts headers,
#: list items and bold spans): a heading line, a list item line, a bold span, a table row.
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+\S", re.MULTILINE)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\S", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$", re.MULTILINE)
#: Names shorter than this match too many ordinary words to count as naming a model.
MIN_NAME_CHARS = 3
#: What a non-admin is told (the votes reveal which variant answered each comparison).
ADMINS_ONLY = ("Only administrators and annotators can see the leaderboard. / "
               "只有管理员和标注员可以查看排行榜。")
#: Model families an answer could name itself by, besides the registered variants' names.
MODEL_FAMILIES = ("qwen", "pulsemind", "gpt-4", "gpt4", "chatgpt", "gemini", "claude", "llama")


def markdown_elements(text: str) -> int:
    """How many markdown elements (headings, list items, bold spans, table rows) `text` has.

    >>> markdown_elements("# Plan\\n- rest\\n- **fluids**")
    4
    """
    return sum(len(p.findall(text)) for p in (_HEADING, _LIST_ITEM, _BOLD, _TABLE_ROW))


def names_a_model(text: str, names: Iterable[str]) -> bool:
    """Whether `text` names a model: one of `names` (variant or served model names) or a
    known model family, as a whole word, case-insensitively. A named model unblinds the vote."""
    lowered = text.lower()
    for name in {n.lower() for n in names if len(n) >= MIN_NAME_CHARS} | set(MODEL_FAMILIES):
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", lowered):
            return True
    return False


@dataclass(frozen=True)
class VoteRow:
    """One vote, as the leaderboard sees it. `choices` maps each dimension to "a"/"b"/"tie";
    `overall` is "a"/"b"/"tie"/"both_bad"."""

    vote_id: int
    turn_id: int
    voter_id: int
    variant_a_id: int
    variant_a: str
    variant_b_id: int
    variant_b: str
    choices: dict[str, str]
    overall: str
    safety_flag_a: bool
    safety_flag_b: bool
    length_a: int
    length_b: int
    markdown_a: int
    markdown_b: int
    names_model_a: bool
    names_model_b: bool
    time_to_vote_ms: int | None
    created_at: datetime


def leaderboard_rows(db: Database, *, user_id: int | None = None) -> list[VoteRow]:
    """Every vote, oldest first, with its variants and answer style (one read-only transaction).

    With `user_id`: an active admin reads them as stored; an annotator reads them with each
    voter's id replaced by a pseudonym (1, 2, ... in order of first vote: the same grouping
    for daily caps and agreement, no user named); anyone else gets PermissionDenied. Without,
    the caller is trusted (a command run by whoever holds the database).
    """
    with db.transaction(write=False) as session:
        role = active_user(session, user_id).role if user_id is not None else UserRole.ADMIN
        if role not in (UserRole.ADMIN, UserRole.ANNOTATOR):
            logger.warning("user id={} denied the leaderboard", user_id)
            raise PermissionDenied(f"user {user_id} may not read votes", user_message=ADMINS_ONLY)
        variants = {v.id: v for v in session.scalars(select(ModelVariant))}
        known_names = [n for v in variants.values() for n in (v.name, v.served_model_name)]
        pairs = session.execute(select(Vote, ComparisonTurn)
                                .join(ComparisonTurn, ComparisonTurn.id == Vote.turn_id)
                                .order_by(Vote.id)).all()  # fmt: skip
        turn_ids = sorted({turn.id for _, turn in pairs})
        answers: dict[tuple[int, Side], str] = {}
        for response in session.scalars(select(ComparisonResponse)
                                         .where(ComparisonResponse.turn_id.in_(turn_ids))):  # fmt: skip
            answers[(response.turn_id, response.side)] = response.text
        rows, pseudonyms = [], {}
        for vote, turn in pairs:
            text_a, text_b = answers.get((turn.id, Side.A), ""), answers.get((turn.id, Side.B), "")
            voter = vote.voter_id if role is UserRole.ADMIN else pseudonyms.setdefault(
                vote.voter_id, len(pseudonyms) + 1)
            rows.append(VoteRow(
                vote_id=vote.id, turn_id=turn.id, voter_id=voter,
                variant_a_id=turn.variant_a_id, variant_a=variants[turn.variant_a_id].name,
                variant_b_id=turn.variant_b_id, variant_b=variants[turn.variant_b_id].name,
                choices={d: _value(getattr(vote, d)) for d in DIMENSIONS}, overall=vote.overall.value,
                safety_flag_a=vote.safety_flag_a, safety_flag_b=vote.safety_flag_b,
                length_a=len(text_a), length_b=len(text_b),
                markdown_a=markdown_elements(text_a), markdown_b=markdown_elements(text_b),
                names_model_a=names_a_model(text_a, known_names),
                names_model_b=names_a_model(text_b, known_names),
                time_to_vote_ms=vote.time_to_vote_ms, created_at=vote.created_at,
            ))  # fmt: skip
        return rows


def _value(choice: object) -> str | None:
    """A dimension's stored choice ("a", "b", "tie"), or None where it was not rated."""
    return getattr(choice, "value", None)
