"""Attachment cards in the chat: what intake did to each file, from the stored attachment.

Each test takes a real file (tests/intake_builders.py) through intake, `to_new_attachment`,
SQLite and `history`, then renders the chat as the Consult tab does (`app.consult_tab.render`)
and reads the card: de-identified fields (names and counts, never values), the burned-in
warning, "n of m frames sent", PDF pages rendered and text extracted, escaping, one row of
thumbnails, and the Chinese card.

    OMP_NUM_THREADS=1 python -m pytest tests/test_attachment_cards.py -q
"""

from __future__ import annotations

import re

import pydicom
from intake_builders import (
    PDF_PHI_STRINGS,
    PHI_STRINGS,
    bundled,
    dicom_bytes,
    dicom_with,
    dicom_with_phi,
    lab_report_pdf,
    lab_report_with_phi,
)

from app.attachment_cards import card_html, facts
from app.consult_tab import chat_text, render
from app.i18n import t
from app.language import speaking
from app.workflow import to_new_attachment
from model.intake import intake_bytes
from storage import Database, add_user_message, create_consultation, create_user, history


def multiframe_ct(frames: int = 10) -> bytes:
    """pydicom's CT slice as a `frames`-frame CT, each frame brighter (uncompressed)."""
    import numpy as np

    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    base = ds.pixel_array
    stack = np.stack([np.clip(base.astype(np.int32) + 40 * k, -32768, 32767) for k in range(frames)])
    ds.NumberOfFrames = frames
    ds.PixelData = stack.astype(base.dtype).tobytes()
    return dicom_bytes(ds)


def stored(db: Database, *files: tuple[str, bytes]):
    """The files as one stored user turn; returns its MessageRecord (via `history`)."""
    user = create_user(db, "alice", "correct horse battery", "clinician")
    cid = create_consultation(db, user.id, "t").id
    atts = [to_new_attachment(intake_bytes(data, name)) for name, data in files]
    add_user_message(db, cid, user.id, "see attached", atts)
    (msg,) = history(db, cid, user_id=user.id)
    return msg


def test_dicom_card_names_removed_fields_never_values(db):
    (att,) = stored(db, ("chest.dcm", dicom_with_phi())).attachments
    html = card_html(att)
    report = att.deid_report
    assert t("card.deid.dicom", "en", replaced=len(report["replaced"]),
             removed=len(report["removed"]), private=report["private_tags_removed"]) in html  # fmt: skip
    assert "PatientName" in html and "PatientID" in html  # field names, listed
    assert not [s for s in PHI_STRINGS if s in html or s.upper() in html]  # never values
    assert "chest.dcm" in html and "DICOM" in html
    assert "pm-card-warn" not in html  # a CT without the flag: no burned-in warning


def test_burned_in_dicom_card_warns_with_advice_in_both_languages(db):
    (att,) = stored(db, ("mr.dcm", dicom_with("MR_small.dcm", BurnedInAnnotation="YES"))).attachments
    assert att.burned_in_annotation
    html = card_html(att)
    warning = re.search(r'<p class="pm-card-warn" role="note">(.*?)</p>', html)
    assert warning and "Burned-in text" in warning.group(1) and "anonymised" in warning.group(1)
    with speaking("zh-CN"):
        zh = card_html(att)
    assert "烧录文字" in zh and "已去标识化" in zh and "pm-card-warn" in zh


def test_multiframe_card_says_frames_sent_and_thumbnails_in_one_row(db):
    (att,) = stored(db, ("cine.dcm", multiframe_ct(10))).attachments
    assert "4 of 10 frames sent" in facts(att)
    html = card_html(att)
    (row,) = re.findall(r'<div class="pm-thumbs">(.*?)</div>', html)
    assert len(re.findall(r"<img ", row)) == 4  # all four frames side by side, one row
    assert f'src="/attachments/{att.id}/3.png"' in row


def test_pdf_cards_pages_rendered_text_extracted_identifiers_counted(db):
    msg = stored(db, ("cbc.pdf", lab_report_pdf(pages=10)), ("named.pdf", lab_report_with_phi()))
    long, named = msg.attachments
    lines = facts(long)
    assert "8 of 10 pages rendered as images" in lines
    assert f"Text extracted: {len(long.text):,} characters" in lines
    assert t("card.deid.pdf_none", "en") in lines
    html = card_html(named)
    assert "identifiers removed from the text (" in html
    assert not [s for s in PDF_PHI_STRINGS if s in html]


def test_chat_shows_cards_escaped(db):
    name = '<img src=x onerror="alert(1)">.png'
    png = dicom_with("MR_small.dcm")  # any real upload: the name is what matters here
    msg = stored(db, (name, png))
    (bubble,) = render([msg])
    text = chat_text(bubble)
    assert '<img src=x onerror="alert(1)">' not in text
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.png" in text
    assert text.startswith('<div class="pm-card"') and text.endswith("see attached")
    assert "\n\n" not in text.split("see attached")[0].strip()  # one HTML block per card
