"""No patient identifier from a DICOM header reaches the model, the logs or the database.

A DICOM with a name, MRN, birth date, institution and accession number in its header goes
through the whole consultation workflow (intake -> storage -> prompt -> embedded model); the
test then searches what was sent to the model, everything logged, and the SQLite file bytes.
"""

from __future__ import annotations

import json

from intake_builders import PHI_STRINGS, dicom_with_phi
from loguru import logger

from app.engines import EngineRegistry
from app.workflow import Consultations
from model.openai_engine import to_openai_messages
from storage import Database, create_user, ensure_model_variant


def _assert_clean(blob: str | bytes, where: str) -> None:
    for s in PHI_STRINGS:
        for variant in {s, s.upper()}:
            needle = variant.encode() if isinstance(blob, bytes) else variant
            assert needle not in blob, f"{variant!r} found in {where}"


def test_dicom_identifiers_reach_neither_prompt_nor_logs_nor_db(tmp_path, demo_model_dir):
    logs: list[str] = []
    sink = logger.add(lambda m: logs.append(str(m)), level="DEBUG")
    try:
        db = Database.sqlite(tmp_path / "p.db")
        db.upgrade()
        user = create_user(db, "alice", "correct horse battery", "clinician")
        ensure_model_variant(db, "demo", "embedded", str(demo_model_dir),
                             sampling_defaults={"max_tokens": 8})  # fmt: skip
        flow = Consultations(db, EngineRegistry())
        scan = tmp_path / "ct.dcm"
        scan.write_bytes(dicom_with_phi())
        cid, msg = flow.add_turn(user, None, "CT attached, what do you see?", [("ct.dcm", scan)])
        assert msg.attachments[0].kind.value == "dicom" and msg.attachments[0].deidentified

        answer = flow.answer(user, cid, "demo")
        sent = json.dumps(to_openai_messages(answer.stream.messages))
        assert "image_url" in sent  # the image did go to the model
        _assert_clean(sent, "the prompt sent to the model")
        for _ in answer:
            pass
        assert flow.record(user, answer) is not None
    finally:
        logger.remove(sink)
    assert logs, "the workflow should have logged something"
    _assert_clean("\n".join(logs), "the logs")
    db.dispose()
    for f in tmp_path.glob("p.db*"):
        _assert_clean(f.read_bytes(), f.name)
