"""The judge's verdict cache: one row per judge call that gave a usable verdict.

Why: CRPO judges the same (candidate, counterpart) pair again whenever a sample repeats (a
resumed run, a second epoch, a policy that answers the same way), and `pulsemind judge` may
be asked the same question twice; a verdict already paid for is read back instead. Rows are
found by `key_sha256`, the content hash `training.judge.cache_key` makes of everything that
decides a verdict; the answers' texts are not stored. Only usable verdicts are kept: an error
is tried again next time.

    found = cached_verdicts(db, keys)                     # {key: CachedVerdict}, one query
    store_verdicts(db, [NewVerdict(key, "judge-model", "en", winners, raw, latency_ms)])

Both functions take many keys at once so a training step costs one read and one write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from storage.checks import bounded_text
from storage.db import Database
from storage.errors import InvalidInput
from storage.models import (
    LANGUAGE_LENGTH,
    PATH_LENGTH,
    SHA256_HEX_LENGTH,
    JudgeVerdict,
    Preference,
)
from storage.votes import DIMENSIONS

#: Keys per `IN (...)` query: well under every backend's limit on bound parameters.
KEYS_PER_QUERY = 500
#: The judge's raw reply is a short JSON object; anything longer is cut to this.
MAX_RAW_CHARS = 4000


@dataclass(frozen=True)
class NewVerdict:
    """A usable verdict to cache: `winners` maps each dimension to "a", "b" or "tie"."""

    key_sha256: str
    judge_model: str
    language: str
    winners: Mapping[str, str]
    raw: str | None = None
    latency_ms: int | None = None


@dataclass(frozen=True)
class CachedVerdict:
    key_sha256: str
    judge_model: str
    language: str
    winners: dict[str, str]
    raw: str | None
    latency_ms: int | None
    created_at: datetime


def _record(row: JudgeVerdict) -> CachedVerdict:
    return CachedVerdict(
        key_sha256=row.key_sha256,
        judge_model=row.judge_model,
        language=row.language,
        winners={d: getattr(row, d).value for d in DIMENSIONS},
        raw=row.raw,
        latency_ms=row.latency_ms,
        created_at=row.created_at,
    )


def cached_verdicts(db: Database, keys: Iterable[str]) -> dict[str, CachedVerdict]:
    """The cached verdicts among `keys`, by key (keys without one are simply absent)."""
    wanted = sorted(set(keys))
    found: dict[str, CachedVerdict] = {}
    with db.transaction(write=False) as session:
        for start in range(0, len(wanted), KEYS_PER_QUERY):
            chunk = wanted[start : start + KEYS_PER_QUERY]
            rows = session.scalars(select(JudgeVerdict).where(JudgeVerdict.key_sha256.in_(chunk)))
            found.update((row.key_sha256, _record(row)) for row in rows)
    return found


def _values(verdict: NewVerdict) -> dict:
    if len(verdict.key_sha256) != SHA256_HEX_LENGTH:
        raise InvalidInput(f"judge cache key of {len(verdict.key_sha256)} characters")
    winners = {}
    for d in DIMENSIONS:
        try:
            winners[d] = Preference(verdict.winners[d])
        except (KeyError, ValueError) as exc:
            raise InvalidInput(f"verdict without a valid {d}: {exc}") from exc
    raw = verdict.raw[:MAX_RAW_CHARS] if verdict.raw is not None else None
    return {
        "key_sha256": verdict.key_sha256,
        "judge_model": bounded_text(verdict.judge_model, "judge model", PATH_LENGTH),
        "language": bounded_text(verdict.language, "language", LANGUAGE_LENGTH),
        **winners,
        "raw": raw,
        "latency_ms": verdict.latency_ms,
    }


def store_verdicts(db: Database, verdicts: Iterable[NewVerdict]) -> int:
    """Cache these verdicts in one transaction; a key already cached keeps its first verdict
    (two processes judging the same pair at once both succeed). Returns the rows written."""
    rows = [_values(v) for v in verdicts]
    if not rows:
        return 0
    insert = sqlite.insert if db.is_sqlite else postgresql.insert
    written = 0
    with db.transaction() as session:
        for row in rows:
            statement = insert(JudgeVerdict).values(**row)
            statement = statement.on_conflict_do_nothing(index_elements=["key_sha256"])
            # RETURNING, not rowcount: psycopg reports no count for ON CONFLICT inserts
            written += len(session.execute(statement.returning(JudgeVerdict.id)).all())
    return written
