"""No patient identifier from an upload reaches the model, the logs or the database.

A DICOM with a name, MRN, birth date, institution and accession number in its header, and a
lab report PDF that prints name, MRN, birth date, address, phone and e-mail, each go through
the whole consultation workflow (intake -> storage -> prompt -> embedded model); the tests
then search what was sent to the model, everything logged, and the SQLite file bytes.
"""

from __future__ import annotations

import json

import pytest
from intake_builders import PDF_PHI_STRINGS, PHI_STRINGS, dicom_with_phi, lab_report_with_phi
from loguru import logger

from app.workflow import Consultations
from model.engines import EngineRegistry
from model.openai_engine import to_openai_messages
from storage import Database, create_user, ensure_model_variant


def _assert_clean(blob: str | bytes, where: str, phi=PHI_STRINGS) -> None:
    for s in phi:
        for variant in {s, s.upper()}:
            needle = variant.encode() if isinstance(blob, bytes) else variant
            assert needle not in blob, f"{variant!r} found in {where}"


@pytest.mark.parametrize(
    ("name", "make", "phi"),
    [("ct.dcm", dicom_with_phi, PHI_STRINGS), ("labs.pdf", lab_report_with_phi, PDF_PHI_STRINGS)],
)
def test_identifiers_reach_neither_prompt_nor_logs_nor_db(
    tmp_path, demo_model_dir, name, make, phi
):
    logs: list[str] = []
    sink = logger.add(lambda m: logs.append(str(m)), level="DEBUG")
    try:
        db = Database.sqlite(tmp_path / "p.db")
        db.upgrade()
        user = create_user(db, "alice", "correct horse battery", "clinician")
        # greedy: the tiny model's random words could spell "Doe" in "Does" when sampled
        ensure_model_variant(db, "demo", "embedded", str(demo_model_dir),
                             sampling_defaults={"max_tokens": 8, "temperature": 0.0})  # fmt: skip
        flow = Consultations(db, EngineRegistry())
        upload = tmp_path / name
        upload.write_bytes(make())
        flow.uploads.add(user.username, [upload])  # as the server records uploads
        cid, msg = flow.add_turn(
            user, None, "See attached, what do you make of it?", [(name, upload)]
        )
        assert msg.attachments[0].deidentified

        answer = flow.answer(user, cid, "demo")
        sent = json.dumps(to_openai_messages(answer.stream.messages))
        assert "image_url" in sent  # the image did go to the model
        _assert_clean(sent, "the prompt sent to the model", phi)
        for _ in answer:
            pass
        assert flow.record(user, answer) is not None
    finally:
        logger.remove(sink)
    assert logs, "the workflow should have logged something"
    _assert_clean("\n".join(logs), "the logs", phi)
    db.dispose()
    for f in tmp_path.glob("p.db*"):
        _assert_clean(f.read_bytes(), f.name, phi)
