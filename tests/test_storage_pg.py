"""Storage layer on a real, throwaway PostgreSQL server (psycopg 3): migrations and a round trip.

Run: OMP_NUM_THREADS=1 python -m pytest tests/test_storage_pg.py -q -m postgres   (about 5 s)
The server comes from app/bench/postgres.py; the test skips, saying why, where none can be started.
"""

from __future__ import annotations

import hashlib
import io
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from PIL import Image
from sqlalchemy import text

from app.bench.postgres import PostgresUnavailable, fresh_database, postgres_server
from storage import (
    Conflict,
    Database,
    NewAttachment,
    NewImage,
    add_assistant_message,
    add_user_message,
    authenticate,
    create_consultation,
    create_user,
    ensure_model_variant,
    get_attachment_images,
    history,
    list_audit,
    record_audit,
    user_can_access_attachment,
)
from storage.models import Base

pytestmark = pytest.mark.postgres

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def pg_server():
    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL server here: {exc}")


@pytest.fixture
def pg_db(pg_server, request):
    db = Database(fresh_database(pg_server, request.node.name.lower()[:60]))
    db.upgrade()
    yield db
    db.dispose()


def png_bytes(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (5, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_postgres_schema_matches_models_and_downgrades(pg_db: Database):
    assert pg_db.engine.dialect.name == "postgresql"
    assert pg_db.current_revision() == "0008"
    with pg_db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        kinds = dict(
            conn.execute(
                text(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = 'messages'"
                )
            ).all()
        )
    assert kinds["created_at"] == "timestamp with time zone"
    assert kinds["sampling_params"] == "json"
    assert kinds["role"] == "character varying"
    pg_db.downgrade("base")
    with pg_db.engine.connect() as conn:
        left = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).scalars()
        assert set(left) == {"alembic_version"}


def test_postgres_round_trip(pg_db: Database):
    alice = create_user(pg_db, "alice", PASSWORD, "clinician")
    with pytest.raises(Conflict):
        create_user(pg_db, "ALICE", PASSWORD, "admin")
    assert authenticate(pg_db, "alice", PASSWORD) == alice
    variant = ensure_model_variant(
        pg_db, "base", "http://127.0.0.1:8000/v1", "qwen", sampling_defaults={"top_p": 0.9}
    )
    c = create_consultation(pg_db, alice.id, "Rash")
    png = png_bytes((10, 200, 30))
    upload = NewAttachment(
        sha256=hashlib.sha256(png).hexdigest(),
        kind="image",
        mime="image/png",
        size_bytes=len(png),
        deidentified=True,
        original_name="arm.png",
        images=[NewImage("photo", 5, 4, png)],
        deid_report={"exif_removed": True, "tags": ["GPS"]},
    )
    user_turn = add_user_message(pg_db, c.id, alice.id, "Itchy rash on the arm.", [upload])
    add_assistant_message(
        pg_db,
        c.id,
        "How long has it been there?",
        user_id=alice.id,
        model_variant_id=variant.id,
        sampling_params={"temperature": 0.7, "seed": 3},
        latency_ms=900,
        first_token_ms=80,
        prompt_tokens=200,
        completion_tokens=12,
        finish_reason="cut_off",
    )
    add_user_message(pg_db, c.id, alice.id, "Same photo, a week later.", [upload])

    turns = history(pg_db, c.id, user_id=alice.id, with_png=True)
    assert [(m.seq, m.role) for m in turns] == [(1, "user"), (2, "assistant"), (3, "user")]
    assert turns[1].finish_reason == "cut_off"
    assert turns[1].sampling_params == {"temperature": 0.7, "seed": 3}
    attachment = turns[0].attachments[0]
    assert attachment.deid_report == {"exif_removed": True, "tags": ["GPS"]}
    assert attachment.images[0].png == png
    assert turns[2].attachments[0].id == attachment.id == user_turn.attachments[0].id
    assert get_attachment_images(pg_db, attachment.id)[0].png == png
    assert user_can_access_attachment(pg_db, alice.id, attachment.id)
    assert turns[0].created_at.tzinfo is not None

    record_audit(
        pg_db,
        "upload",
        user_id=alice.id,
        target_type="attachment",
        target_id=attachment.id,
        detail={"kind": "image"},
    )
    assert list_audit(pg_db, user_id=alice.id)[0].detail == {"kind": "image"}


def test_postgres_concurrent_writers(pg_db: Database):
    alice = create_user(pg_db, "alice", PASSWORD, "clinician")
    c = create_consultation(pg_db, alice.id)
    threads, per_thread = 6, 5
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                add_user_message(pg_db, c.id, alice.id, f"turn {n}.{i}")
        except BaseException as exc:  # handed to the main thread, which fails the test
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert [m.seq for m in history(pg_db, c.id)] == list(range(1, threads * per_thread + 1))


def test_two_admins_disabling_each_other_at_once_leave_one_active(pg_db: Database):
    """The last-admin rule holds under a race: both requests lock the active admins' rows, so
    the second sees the first's change and is refused (storage.users.set_user_active)."""
    from storage import get_user, set_user_active

    one = create_user(pg_db, "root1", PASSWORD, "admin")
    two = create_user(pg_db, "root2", PASSWORD, "admin")
    for _ in range(10):
        outcomes: list[object] = []
        start = threading.Barrier(2)

        def disable(target: int, start=start, outcomes=outcomes) -> None:
            start.wait()
            try:
                outcomes.append(set_user_active(pg_db, target, False).id)
            except Conflict as exc:
                outcomes.append(exc)

        workers = [threading.Thread(target=disable, args=(t,)) for t in (one.id, two.id)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        refused = [o for o in outcomes if isinstance(o, Conflict)]
        assert len(refused) == 1 and "At least one active administrator" in refused[0].user_message
        assert [get_user(pg_db, u.id).active for u in (one, two)].count(True) == 1
        for u in (one, two):
            set_user_active(pg_db, u.id, True)
