"""Storage layer on real SQLite files: migrations, users, consultations, messages, variants, audit.

Run: OMP_NUM_THREADS=1 python -m pytest tests/test_storage.py -q   (about 10 s)
PostgreSQL is exercised in tests/test_storage_pg.py.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from argon2 import PasswordHasher
from PIL import Image
from sqlalchemy import func, select, text

from storage import (
    Conflict,
    Database,
    InvalidInput,
    NewAttachment,
    NewImage,
    NotFound,
    PermissionDenied,
    add_assistant_message,
    add_user_message,
    authenticate,
    count_users,
    create_consultation,
    create_user,
    default_database_url,
    delete_consultation,
    ensure_model_variant,
    get_attachment_image,
    get_attachment_images,
    get_consultation,
    get_user,
    get_variant_by_name,
    history,
    list_active_variants,
    list_audit,
    list_consultations,
    list_users,
    record_audit,
    rename_consultation,
    set_password,
    set_user_active,
    set_variant_active,
    start_consultation,
    user_can_access_attachment,
)
from storage.db import MIGRATIONS_DIR
from storage.models import (
    Attachment,
    AttachmentImage,
    Base,
    Consultation,
    Message,
    MessageAttachment,
    User,
)

PASSWORD = "correct horse battery"


# --- helpers and fixtures ---------------------------------------------------------------


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def image_upload(name: str, color: tuple[int, int, int]) -> NewAttachment:
    """An uploaded photo: the 'original' is the PNG itself here."""
    png = png_bytes(color)
    return NewAttachment(
        sha256=hashlib.sha256(png).hexdigest(),
        kind="image",
        mime="image/png",
        size_bytes=len(png),
        deidentified=True,
        original_name=name,
        images=[NewImage("photo", 8, 6, png)],
        deid_report={"exif_removed": True},
    )


def pdf_upload(name: str) -> NewAttachment:
    """A two-page lab report: extracted text plus two rendered pages."""
    pages = [png_bytes((250, 250, 250), (10, 14)), png_bytes((240, 240, 240), (10, 14))]
    return NewAttachment(
        sha256=hashlib.sha256(b"%PDF-1.7 lab report " + name.encode()).hexdigest(),
        kind="pdf",
        mime="application/pdf",
        size_bytes=2048,
        deidentified=False,
        original_name=name,
        images=[("page 1", 10, 14, pages[0]), ("page 2", 10, 14, pages[1])],
        text="Haemoglobin 13.2 g/dL",
        page_count=2,
    )


def answer(db: Database, consultation_id: int, text_: str, **kw) -> int:
    """Store an answer as the consultation's owner asked for it."""
    with db.transaction(write=False) as session:
        owner = session.get(Consultation, consultation_id).owner_id
    fields = dict(
        user_id=owner,
        model_variant_id=None,
        sampling_params={"temperature": 0.7, "top_p": 0.9},
        latency_ms=1200,
        first_token_ms=150,
        prompt_tokens=321,
        completion_tokens=45,
        finish_reason="stop",
    )
    fields.update(kw)
    return add_assistant_message(db, consultation_id, text_, **fields).id


def count(db: Database, model) -> int:
    with db.transaction(write=False) as session:
        return session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def people(db: Database):
    """Two clinicians and an admin."""
    return {
        "alice": create_user(db, "alice", PASSWORD, "clinician"),
        "bob": create_user(db, "bob", PASSWORD, "clinician"),
        "root": create_user(db, "root", PASSWORD, "admin"),
    }


# --- schema and engine ------------------------------------------------------------------


def test_upgrade_matches_models_and_downgrade_drops_everything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Alembic must find its scripts from any cwd
    db = Database.sqlite(tmp_path / "schema.db")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert db.current_revision() is None
    db.upgrade()
    assert db.current_revision() == head == "0008"

    def diff() -> list:
        with db.engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)

    assert diff() == []
    with db.engine.connect() as conn:
        indexes = {row[0] for row in conn.execute(text("SELECT name FROM sqlite_master"))}
    assert {"ix_consultations_owner_id_updated_at", "ix_audit_events_user_id_at"} <= indexes

    db.downgrade("base")
    assert db.current_revision() is None
    with db.engine.connect() as conn:
        tables = {
            row[0]
            for row in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
        }
    assert tables == {"alembic_version"}
    # The comparison does see differences: every table is missing now.
    added = {change[1].name for change in diff() if change[0] == "add_table"}
    assert added == set(Base.metadata.tables)

    db.upgrade()  # and back again
    assert diff() == []
    db.dispose()


def test_sqlite_pragmas_on_every_connection(db: Database):
    def pragmas() -> tuple:
        with db.engine.connect() as conn:
            return tuple(
                conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
            )

    seen = [pragmas()]
    worker = threading.Thread(target=lambda: seen.append(pragmas()))
    worker.start()
    worker.join()
    assert seen == [("wal", 1, 2, 5000)] * 2
    with pytest.raises(Exception, match="FOREIGN KEY"), db.transaction() as session:
        session.execute(
            text(
                "INSERT INTO consultations (owner_id, title, created_at, "
                "updated_at) VALUES (999, 't', '2025-01-01', '2025-01-01')"
            )
        )


def test_default_database_url(tmp_path, monkeypatch):
    monkeypatch.setenv("PULSEMIND_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert default_database_url() == "postgresql+psycopg://u@h/db"
    monkeypatch.delenv("PULSEMIND_DATABASE_URL")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    url = default_database_url()
    assert url.endswith(str(tmp_path / "data" / "pulsemind" / "pulsemind.db"))
    assert (tmp_path / "data" / "pulsemind").is_dir()
    with pytest.raises(Exception, match="in-memory"):
        Database("sqlite://")


# --- users ------------------------------------------------------------------------------


def test_users_create_and_authenticate(db: Database, tmp_path: Path):
    alice = create_user(db, " Alice ", PASSWORD, "clinician")
    assert (alice.username, alice.role, alice.active) == ("alice", "clinician", True)
    assert alice.created_at.tzinfo is not None
    assert authenticate(db, "ALICE", PASSWORD) == alice
    assert authenticate(db, "alice", PASSWORD + "x") is None
    assert authenticate(db, "nobody", PASSWORD) is None
    with pytest.raises(Conflict) as taken:
        create_user(db, "alice", "another long password", "admin")
    assert taken.value.user_message == "This username is taken."
    with pytest.raises(InvalidInput, match="shorter"):
        create_user(db, "carol", "short", "clinician")
    with pytest.raises(InvalidInput, match="role"):
        create_user(db, "carol", PASSWORD, "superuser")
    with pytest.raises(InvalidInput):
        create_user(db, "bad name!", PASSWORD, "clinician")
    create_user(db, "ann", PASSWORD, "annotator")
    assert count_users(db) == 2 and count_users(db, role="admin") == 0
    assert [u.username for u in list_users(db)] == ["alice", "ann"]

    with db.transaction(write=False) as session:
        stored = session.scalar(select(User.password_hash).where(User.id == alice.id))
    assert stored.startswith("$argon2id$")
    db.dispose()  # flush everything to the files before reading their bytes
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("pulsemind.db*"))
    assert b"alice" in raw  # the check below can find text in these files
    assert PASSWORD.encode() not in raw

    set_password(db, alice.id, "a brand new passphrase")
    assert authenticate(db, "alice", PASSWORD) is None
    assert authenticate(db, "alice", "a brand new passphrase") is not None
    set_user_active(db, alice.id, False)
    assert authenticate(db, "alice", "a brand new passphrase") is None


def test_weak_hash_is_upgraded_on_login(db: Database):
    user = create_user(db, "dora", PASSWORD, "clinician")
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    with db.transaction() as session:
        session.get(User, user.id).password_hash = weak
    assert authenticate(db, "dora", PASSWORD) is not None
    with db.transaction(write=False) as session:
        upgraded = session.get(User, user.id).password_hash
    assert upgraded != weak and "m=65536" in upgraded
    assert authenticate(db, "dora", PASSWORD) is not None


# --- consultations ----------------------------------------------------------------------


def test_consultations_owner_admin_and_others(db: Database, people):
    alice, bob, root = people["alice"], people["bob"], people["root"]
    first = create_consultation(db, alice.id)
    second = create_consultation(db, alice.id, "Chest pain, 54 y")
    assert first.title == "New consultation"
    assert [c.id for c in list_consultations(db, alice.id)] == [second.id, first.id]
    assert list_consultations(db, bob.id) == []

    add_user_message(db, first.id, alice.id, "Fever for three days.")
    assert [c.id for c in list_consultations(db, alice.id)] == [first.id, second.id]

    renamed = rename_consultation(db, first.id, alice.id, "  Fever  ")
    assert renamed.title == "Fever" and get_consultation(db, first.id, alice.id).title == "Fever"
    with pytest.raises(InvalidInput):
        rename_consultation(db, first.id, alice.id, "   ")

    with pytest.raises(PermissionDenied):
        get_consultation(db, first.id, bob.id)
    with pytest.raises(PermissionDenied):
        rename_consultation(db, first.id, bob.id, "mine now")
    with pytest.raises(PermissionDenied):
        add_user_message(db, first.id, bob.id, "hello")
    with pytest.raises(PermissionDenied):
        history(db, first.id, user_id=bob.id)
    assert get_consultation(db, first.id, root.id).title == "Fever"  # admins read any
    assert [m.text for m in history(db, first.id, user_id=root.id)] == ["Fever for three days."]
    with pytest.raises(PermissionDenied):
        add_user_message(db, first.id, root.id, "admins do not write here")
    with pytest.raises(NotFound):
        get_consultation(db, 9999, alice.id)

    annotator = create_user(db, "ann", PASSWORD, "annotator")
    with pytest.raises(PermissionDenied):
        create_consultation(db, annotator.id)
    set_user_active(db, alice.id, False)
    with pytest.raises(PermissionDenied):
        get_consultation(db, first.id, alice.id)


# --- messages and attachments -----------------------------------------------------------


def test_multi_turn_with_attachments_and_dedupe(db: Database, people):
    alice, bob, root = people["alice"], people["bob"], people["root"]
    c = create_consultation(db, alice.id)
    xray, report = image_upload("IMG_0001.png", (200, 10, 10)), pdf_upload("labs.pdf")
    u1 = add_user_message(db, c.id, alice.id, "Cough and these results.", [xray, report])
    assert [(a.position, a.original_name, a.kind) for a in u1.attachments] == [
        (0, "IMG_0001.png", "image"),
        (1, "labs.pdf", "pdf"),
    ]
    a1 = answer(db, c.id, "Any fever?")
    same_xray = image_upload("xray-again.png", (200, 10, 10))
    u2 = add_user_message(db, c.id, alice.id, "Yes. Same film again.", [same_xray])
    a2 = answer(db, c.id, "Likely pneumonia.", finish_reason="length")

    assert count(db, Attachment) == 2  # the x-ray once, the report once
    assert count(db, MessageAttachment) == 3
    assert count(db, AttachmentImage) == 3  # photo + two pages, not re-stored

    turns = history(db, c.id, user_id=alice.id)
    assert [(m.seq, m.role, m.id) for m in turns] == [
        (1, "user", u1.id),
        (2, "assistant", a1),
        (3, "user", u2.id),
        (4, "assistant", a2),
    ]
    assert turns[1].sampling_params == {"temperature": 0.7, "top_p": 0.9}
    assert (turns[1].prompt_tokens, turns[1].first_token_ms) == (321, 150)
    assert turns[3].finish_reason == "length"
    xray_id = turns[0].attachments[0].id
    assert turns[2].attachments[0].id == xray_id
    assert turns[2].attachments[0].original_name == "xray-again.png"
    pdf = turns[0].attachments[1]
    assert (pdf.text, pdf.page_count, [i.label for i in pdf.images]) == (
        "Haemoglobin 13.2 g/dL",
        2,
        ["page 1", "page 2"],
    )
    assert all(image.png is None for m in turns for a in m.attachments for image in a.images)

    loaded = history(db, c.id, with_png=True)
    assert loaded[0].attachments[0].images[0].png == xray.images[0].png
    pages = get_attachment_images(db, pdf.id)
    assert [p.png for p in pages] == [img[3] for img in report.images]
    assert Image.open(io.BytesIO(pages[1].png)).size == (10, 14)
    assert get_attachment_image(db, pdf.id, 1).png == report.images[1][3]
    with pytest.raises(NotFound):
        get_attachment_image(db, pdf.id, 5)

    assert user_can_access_attachment(db, alice.id, xray_id)
    assert not user_can_access_attachment(db, bob.id, xray_id)
    assert user_can_access_attachment(db, root.id, xray_id)
    assert not user_can_access_attachment(db, alice.id, 9999)
    # Bob uploads the same x-ray: it is stored once, and now he may fetch it too.
    mine = create_consultation(db, bob.id)
    add_user_message(db, mine.id, bob.id, "", [image_upload("b.png", (200, 10, 10))])
    assert user_can_access_attachment(db, bob.id, xray_id)
    assert count(db, Attachment) == 2

    delete_consultation(db, c.id, alice.id)  # soft: hidden from her, kept for audit
    assert not user_can_access_attachment(db, alice.id, xray_id)
    assert user_can_access_attachment(db, root.id, xray_id)
    assert count(db, Message) == 5 and count(db, MessageAttachment) == 4
    assert count(db, Attachment) == 2


def test_regenerate_supersedes_and_history_follows_current_branch(db: Database, people):
    alice = people["alice"]
    c = create_consultation(db, alice.id)
    u1 = add_user_message(db, c.id, alice.id, "Headache.").id
    a1 = answer(db, c.id, "How long?")
    u2 = add_user_message(db, c.id, alice.id, "Two weeks.").id
    a2 = answer(db, c.id, "Partial answ", finish_reason="error", error="ModelDiedMidAnswer")

    a2b = answer(db, c.id, "See a neurologist.", replaces_id=a2)
    assert [m.id for m in history(db, c.id)] == [u1, a1, u2, a2b]
    everything = history(db, c.id, include_superseded=True)
    assert [(m.id, m.superseded) for m in everything] == [
        (u1, False),
        (a1, False),
        (u2, False),
        (a2, True),
        (a2b, False),
    ]
    assert everything[3].error == "ModelDiedMidAnswer"
    assert everything[4].replaces_id == a2

    with pytest.raises(InvalidInput, match="superseded"):
        answer(db, c.id, "again", replaces_id=a2)
    with pytest.raises(InvalidInput, match="not an answer"):
        answer(db, c.id, "again", replaces_id=u2)

    # Regenerating an earlier answer branches there: later turns leave the current history.
    a1b = answer(db, c.id, "Where is the pain?", replaces_id=a1)
    assert [m.id for m in history(db, c.id)] == [u1, a1b]
    assert [m.seq for m in history(db, c.id, include_superseded=True)] == [1, 2, 3, 4, 5, 6]
    u3 = add_user_message(db, c.id, alice.id, "Behind the eyes.").id
    assert [m.id for m in history(db, c.id)] == [u1, a1b, u3]

    other = create_consultation(db, alice.id)
    with pytest.raises(NotFound):
        answer(db, other.id, "wrong consultation", replaces_id=a1b)


def test_failed_user_message_leaves_nothing(db: Database, people):
    alice = people["alice"]
    c = create_consultation(db, alice.id)
    add_user_message(db, c.id, alice.id, "First turn.")
    before = get_consultation(db, c.id, alice.id).updated_at
    good = image_upload("ok.png", (1, 2, 3))
    bad_kind = NewAttachment(**{**vars(image_upload("virus.exe", (4, 5, 6))), "kind": "exe"})
    not_png = NewAttachment(
        **{**vars(image_upload("fake.png", (7, 8, 9))), "images": [("x", 8, 6, b"GIF89a...")]}
    )
    for bad in (bad_kind, not_png):
        with pytest.raises(InvalidInput):
            add_user_message(db, c.id, alice.id, "Second turn.", [good, bad])
    assert [m.text for m in history(db, c.id)] == ["First turn."]
    assert (count(db, Message), count(db, Attachment), count(db, AttachmentImage)) == (1, 0, 0)
    assert count(db, MessageAttachment) == 0
    assert get_consultation(db, c.id, alice.id).updated_at == before
    # The same turn, corrected, goes through and gets the next seq.
    assert add_user_message(db, c.id, alice.id, "Second turn.", [good]).seq == 2


def test_start_consultation_writes_it_with_its_first_turn_or_nothing(db: Database, people):
    alice = people["alice"]
    good = image_upload("ok.png", (1, 2, 3))
    started, first = start_consultation(db, alice.id, "Chest pain", "胸痛一天。", [good])
    assert (started.title, started.owner_id) == ("Chest pain", alice.id)
    assert (first.consultation_id, first.seq, first.text) == (started.id, 1, "胸痛一天。")
    assert [a.original_name for a in first.attachments] == ["ok.png"]
    assert [m.text for m in history(db, started.id, user_id=alice.id)] == ["胸痛一天。"]
    assert get_consultation(db, started.id, alice.id).title == "Chest pain"
    # a follow-up turn continues it
    assert add_user_message(db, started.id, alice.id, "Second turn.").seq == 2

    ann = create_user(db, "ann", PASSWORD, "annotator")
    before = (count(db, Consultation), count(db, Message), count(db, Attachment))
    bad = NewAttachment(**{**vars(image_upload("virus.exe", (4, 5, 6))), "kind": "exe"})
    refusals = [
        (PermissionDenied, (ann.id, "t", "A turn.", [])),  # annotators own no consultations
        (InvalidInput, (alice.id, "x" * 10_000, "A turn.", [])),  # title too long
        (InvalidInput, (alice.id, "t", "", [])),  # nothing to say
        (InvalidInput, (alice.id, "t", "A turn.", [good, bad])),  # a bad file: no half turn
    ]
    for error, args in refusals:
        with pytest.raises(error):
            start_consultation(db, *args)
    assert (count(db, Consultation), count(db, Message), count(db, Attachment)) == before
    assert [c.id for c in list_consultations(db, alice.id)] == [started.id]


def test_concurrent_writers_get_unique_contiguous_seq(db: Database, people):
    alice = people["alice"]
    c = create_consultation(db, alice.id)
    per_thread, threads = 6, 8
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                if i % 2:
                    answer(db, c.id, f"answer {n}.{i}")
                else:
                    add_user_message(db, c.id, alice.id, f"turn {n}.{i}")
        except BaseException as exc:  # handed to the main thread, which fails the test
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    seqs = [m.seq for m in history(db, c.id)]
    assert seqs == list(range(1, threads * per_thread + 1))
    texts = {m.text for m in history(db, c.id)}
    assert len(texts) == threads * per_thread


# --- model variants and audit -----------------------------------------------------------


def test_model_variants_upsert(db: Database, people):
    base = ensure_model_variant(
        db, "base", "http://127.0.0.1:8000/v1", "qwen", sampling_defaults={"temperature": 0.7}
    )
    again = ensure_model_variant(
        db,
        "base",
        "http://127.0.0.1:9000/v1",
        "qwen",
        sampling_defaults={"temperature": 0.2},
        notes="moved",
    )
    assert again.id == base.id
    assert (again.endpoint, again.sampling_defaults, again.notes) == (
        "http://127.0.0.1:9000/v1",
        {"temperature": 0.2},
        "moved",
    )
    sft = ensure_model_variant(
        db,
        "sft-1",
        "http://127.0.0.1:9000/v1",
        "sft-1",
        adapter_path="/data/adapters/sft-1",
        parent="base",
    )
    demo = ensure_model_variant(db, "demo", "embedded", "demo")
    assert sft.parent_id == base.id and demo.embedded and not sft.embedded
    with pytest.raises(NotFound):
        ensure_model_variant(db, "x", "embedded", "x", parent="missing")
    with pytest.raises(InvalidInput):
        ensure_model_variant(db, "x", "ftp://host/v1", "x")
    assert [v.name for v in list_active_variants(db)] == ["base", "sft-1", "demo"]
    set_variant_active(db, "sft-1", False)
    assert [v.name for v in list_active_variants(db)] == ["base", "demo"]
    assert get_variant_by_name(db, "sft-1").active is False
    assert get_variant_by_name(db, "nope") is None

    c = create_consultation(db, people["alice"].id)
    add_user_message(db, c.id, people["alice"].id, "Rash.")
    assert history(db, c.id)[-1].model_variant_id is None
    answer(db, c.id, "Since when?", model_variant_id=sft.id)
    assert history(db, c.id)[-1].model_variant_id == sft.id
    with pytest.raises(NotFound):
        answer(db, c.id, "?", model_variant_id=12345)


def test_audit_events(db: Database, people):
    alice, root = people["alice"], people["root"]
    t0 = datetime.now(UTC) - timedelta(seconds=1)
    record_audit(db, "login", user_id=alice.id)
    record_audit(
        db,
        "denied",
        user_id=alice.id,
        target_type="consultation",
        target_id=7,
        outcome="denied",
        detail={"reason": "not owner"},
    )
    export = record_audit(
        db,
        "export",
        user_id=root.id,
        target_type="dataset",
        detail={"rows": 120, "splits": ["train", "eval"]},
    )
    assert export.at.tzinfo is not None and export.at >= t0
    assert [e.action for e in list_audit(db)] == ["export", "denied", "login"]
    mine = list_audit(db, user_id=alice.id, outcome="denied")
    assert [(e.target_type, e.target_id, e.detail) for e in mine] == [
        ("consultation", "7", {"reason": "not owner"})
    ]
    assert list_audit(db, since=datetime.now(UTC) + timedelta(hours=1)) == []
    with pytest.raises(InvalidInput):
        record_audit(db, "upload", detail={"text": "patient history " * 50})
    with pytest.raises(InvalidInput):
        record_audit(db, "Bad Action")
    with pytest.raises(InvalidInput):
        record_audit(db, "login", outcome="maybe")
    assert len(list_audit(db)) == 3


def test_sqlite_file_is_a_plain_database(db: Database, people):
    """Other tools (sqlite3 CLI, backups) can read the file while the app has it open."""
    path = db.url.database
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT username FROM users ORDER BY id").fetchall() == [
            ("alice",),
            ("bob",),
            ("root",),
        ]
        assert raw.execute("SELECT role FROM users WHERE username='root'").fetchone() == ("admin",)


def test_the_last_active_admin_cannot_be_disabled(db: Database):
    root = create_user(db, "root", PASSWORD, "admin")
    with pytest.raises(Conflict, match="last active admin") as exc:
        set_user_active(db, root.id, False)
    assert "必须保留至少一名" in exc.value.user_message and get_user(db, root.id).active
    root2 = create_user(db, "root2", PASSWORD, "admin")
    assert set_user_active(db, root.id, False).active is False  # another admin remains
    with pytest.raises(Conflict):
        set_user_active(db, root2.id, False)
    assert set_user_active(db, root.id, True).active and set_user_active(db, root2.id, False)
    clinician = create_user(db, "carol", PASSWORD, "clinician")
    assert set_user_active(db, clinician.id, False).active is False  # no rule for others

