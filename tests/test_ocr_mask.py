"""Text burned into pixels is found by OCR and masked before anything is sent or stored.

Real files (tests/ocr_builders.py): an ultrasound DICOM with a patient banner drawn in DejaVu
Sans / Noto Sans CJK, the same as an unflagged secondary capture, a phone photo of a printed
lab report, an image-only PDF of the same report, a CT without text. Each goes through
`model.intake.intake_bytes`; the output images are then read again by OCR (as they are, and
enlarged 2x so that a half-masked glyph would show) and no planted identifier may be found,
while the technical labels still are. Before that, each test checks the planted text IS
readable in an unmasked image, so a blank or unreadable builder cannot pass.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time

import numpy as np
import pytest
from ocr_builders import (
    BANNER_PHI,
    BANNER_ZH,
    BANNER_ZH_PHI,
    REPORT_PHI,
    REPORT_RESULT,
    SECONDARY_CAPTURE_STORAGE,
    TECHNICAL,
    ct_dicom,
    dicom_from_image,
    document_page,
    document_photo,
    scanned_report_pdf,
    ultrasound_frame,
)
from PIL import Image

from model.intake import DeidentificationFailed, IntakeLimits, intake_bytes, ocr
from model.intake.images import fit_within
from model.intake.types import IntakeImage

BUDGET = IntakeLimits().model_max_pixels


def read_back(img: Image.Image, *, enlarged: bool = True) -> str:
    """Everything OCR reads in `img` (and in it enlarged 2x: a half-masked glyph reads better
    big), spaces removed, lower case."""
    lines = ocr.read_lines(img)
    if enlarged:
        lines += ocr.read_lines(
            img.resize((img.width * 2, img.height * 2), Image.Resampling.LANCZOS)
        )
    return "".join(line.text for line in lines).replace(" ", "").lower()


def readable(planted: tuple[str, ...], img: Image.Image) -> bool:
    """The control: every planted value can be read in the unmasked image."""
    return len(found(planted, read_back(img, enlarged=False))) == len(planted)


def found(planted: tuple[str, ...], text: str) -> list[str]:
    return [p for p in planted if p.replace(" ", "").lower() in text]


def assert_masked(img: Image.Image, planted: tuple[str, ...], kept: tuple[str, ...] = ()):
    text = read_back(img)
    assert not found(planted, text), f"still readable after masking: {found(planted, text)}"
    for k in kept:
        assert k.replace(" ", "").lower() in text, f"technical label {k!r} was masked"


def assert_card(result, planted: tuple[str, ...]) -> None:
    """The report and notes say that text was masked (English and Chinese), never what."""
    summary = json.dumps(result.to_json(), ensure_ascii=False)
    assert not found(planted, summary.replace(" ", "").lower())
    burned = result.deid_report["burned_in_text"]
    assert burned["text_lines_masked"] >= 1 and sum(burned["masked_kinds"].values()) >= 1
    assert burned["engine"].startswith("rapidocr ")
    note = next(n for n in result.notes if "burned-in text found and masked" in n)
    assert "已涂黑" in note
    assert result.deidentified and result.burned_in_annotation


# --- ultrasound / secondary capture DICOM -----------------------------------------------


@pytest.mark.parametrize(
    ("modality", "sop_class", "burned_in"),
    [
        ("US", None, "YES"),  # flagged in the header
        ("OT", SECONDARY_CAPTURE_STORAGE, None),  # a secondary capture that says nothing
        ("US", None, "NO"),  # a header that says NO: US machines print names anyway
        ("MR", SECONDARY_CAPTURE_STORAGE, None),  # a screenshot of an MR viewer
    ],
    ids=["us-flagged", "sc-unflagged", "us-says-no", "mr-screenshot"],
)
def test_ultrasound_banner_masked_technical_labels_kept(modality, sop_class, burned_in):
    frame = ultrasound_frame()
    assert readable(BANNER_PHI, frame)  # the control
    kwargs = {"sop_class": sop_class} if sop_class else {}
    data = dicom_from_image(frame, modality=modality, burned_in=burned_in, **kwargs)
    result = intake_bytes(data, "us.dcm")
    out = result.images[0].image
    assert out.size == frame.size
    assert_masked(out, BANNER_PHI, kept=tuple(k for _, k in TECHNICAL))
    assert_card(result, BANNER_PHI)
    burned = result.deid_report["burned_in_text"]
    assert burned["technical_lines_kept"] >= len(TECHNICAL)
    # The sector (the diagnostic image) is untouched: only text boxes were filled.
    before, after = np.asarray(frame), np.asarray(out)
    assert (before[300:700, 300:700] == after[300:700, 300:700]).all()


def test_chinese_banner_masked():
    frame = ultrasound_frame(banner=None, banner_zh=BANNER_ZH)
    assert readable(BANNER_ZH_PHI, frame)
    result = intake_bytes(dicom_from_image(frame.convert("RGB")), "us-zh.dcm")
    assert result.images[0].image.mode == "RGB"
    assert_masked(result.images[0].image, BANNER_ZH_PHI, kept=("3.2", "5C1"))
    assert_card(result, BANNER_ZH_PHI)


def test_ct_without_text_is_not_changed():
    plain = intake_bytes(ct_dicom(), "ct.dcm")
    # Not OCR'd: CT pixels are reconstructed, not printed on (see model.intake.dicom).
    assert plain.deid_report["burned_in_text"]["checked"] is False
    assert not plain.burned_in_annotation
    assert not any("burned-in" in n for n in plain.notes)
    # Flagged, so OCR'd: nothing found, and the pixels are exactly the unflagged ones.
    flagged = intake_bytes(ct_dicom(burned_in="YES"), "ct.dcm")
    burned = flagged.deid_report["burned_in_text"]
    assert burned["images_checked"] == 1 and burned["text_lines_masked"] == 0
    assert np.array_equal(np.asarray(flagged.images[0].image), np.asarray(plain.images[0].image))
    assert any("nothing identifying found" in n for n in flagged.notes)


# --- photos and scans ---------------------------------------------------------------------


def test_photo_of_a_document_name_masked_results_kept():
    data = document_photo()
    sent = fit_within(Image.open(io.BytesIO(data)).convert("RGB"), BUDGET)  # what intake sends
    assert readable(REPORT_PHI, sent)  # legible at that size
    result = intake_bytes(data, "labs.jpg")
    out = result.images[0].image
    assert out.width * out.height <= BUDGET and any("downscaled" in n for n in result.notes)
    assert_masked(out, REPORT_PHI, kept=(REPORT_RESULT, "g/dL"))
    assert_card(result, REPORT_PHI)
    # Masked pixels are not the upload's pixels: the file itself may not be sent instead.
    assert getattr(result.images[0], "encoded", None) is None


def test_photo_without_text_passes_unchanged():
    img = Image.new("RGB", (640, 480), (180, 40, 40))  # a wound photo, say: no text
    result = intake_bytes(_png(img), "wound.png")
    assert np.array_equal(np.asarray(result.images[0].image), np.asarray(img))
    assert result.deid_report["burned_in_text"]["text_lines_found"] == 0
    assert not result.burned_in_annotation and result.deidentified


def test_scanned_pdf_page_name_masked():
    page = fit_within(document_page().convert("RGB"), BUDGET)
    assert readable(REPORT_PHI, page)
    result = intake_bytes(scanned_report_pdf(), "scan.pdf")
    assert result.text is None and result.deid_report["pages_without_text"] == [1]
    assert_masked(result.images[0].image, REPORT_PHI, kept=(REPORT_RESULT,))
    assert_card(result, REPORT_PHI)


# --- end to end: what storage keeps and the model is sent ---------------------------------


def test_burned_in_dicom_derived_pngs_carry_no_identifier():
    """The privacy path: intake -> the PNGs the workflow stores and sends -> OCR again."""
    from app.workflow import to_new_attachment

    frame = ultrasound_frame(banner_zh=BANNER_ZH)
    result = intake_bytes(dicom_from_image(frame), "us.dcm")
    attachment = to_new_attachment(result)
    assert attachment.images and attachment.deidentified
    planted = BANNER_PHI + BANNER_ZH_PHI
    for stored in attachment.images:
        assert stored.png.startswith(b"\x89PNG")
        img = Image.open(io.BytesIO(stored.png))
        img.load()
        assert_masked(img.convert("RGB"), planted)
        for s in ("ZHANG", "00482913", "19610314", "St Mary"):
            assert s.encode() not in stored.png
    assert not found(planted, json.dumps(attachment.deid_report, ensure_ascii=False).lower())


# --- the engine ---------------------------------------------------------------------------


def test_technical_allow_list():
    keep = ["3.2 cm", "5C1 probe", "HR 72 bpm", "L", "Gain:50%", "D=16cm", "C5-1", "2D",
            "MI 1.1", "TIS<0.4", "RT KIDNEY LONG", "Hemoglobin 13.2 g/dL (ref 12.0-15.5)",
            "WBC 7.1 x10^9/L", "血红蛋白135g/L", "探头", "左"]  # fmt: skip
    mask = ["ZHANG WEI", "ID 00482913", "DOB 1961-03-14", "St Mary Hospital", "03-14",
            "5/25/2011", "12:34:56", "北京协和医院", "王小明", "LI", "Page 13", "",
            "BAPTIST MED CTR", "Hemoglobin 13.2 Jane", "0048 2913", "555 1234",
            "14 03 1961"]  # fmt: skip
    assert [t for t in keep if not ocr.is_technical(t)] == []
    assert [t for t in mask if ocr.is_technical(t)] == []
    for name, (_, reason) in ocr.TECHNICAL_TOKENS.items():
        assert reason, f"rule {name} has no reason"


def test_engine_loads_and_reads_offline(monkeypatch):
    """Models come from the wheel: a fresh engine loads and reads with the network refused,
    and writes nothing beside its models."""
    before = sorted(p.name for p in ocr.model_dir().iterdir())

    def refuse(*args, **kwargs):  # a fake: no network is a fault we cannot cause for real
        raise OSError("network disabled by test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    lines, _ = ocr.OcrEngine().read(ultrasound_frame())
    assert any("00482913" in line.text for line in lines)
    assert sorted(p.name for p in ocr.model_dir().iterdir()) == before


def test_concurrent_masking_matches_sequential():
    frames = [ultrasound_frame(), ultrasound_frame(banner=None, banner_zh=BANNER_ZH)] * 2
    expected = [np.asarray(ocr.mask_image(f)[0]) for f in frames]
    got: list = [None] * len(frames)

    def work(i: int) -> None:
        got[i] = np.asarray(ocr.mask_image(frames[i])[0])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))


def test_time_cap_refuses_rather_than_pass_unchecked():
    images = [IntakeImage(ultrasound_frame(), f"frame {i}") for i in (1, 2)]
    with pytest.raises(DeidentificationFailed, match="took over"):
        ocr.mask_images(images, "cine.dcm", max_seconds=0.0)


def test_ocr_cost():
    """Warm-engine OCR time per kind of image, on the images intake actually sends (2 cores
    here: us frame ~0.4 s, photo of a page ~1 s, scanned page ~1 s, CT 512x512 ~0.2 s)."""
    ocr.warm_up()
    kinds = {
        "ultrasound 1024x768": ultrasound_frame(),
        "photo of a page (12 MP -> budget)": fit_within(
            Image.open(io.BytesIO(document_photo())).convert("RGB"), BUDGET
        ),
        "scanned A4 page at budget": fit_within(document_page(), BUDGET),
        "CT 512x512 without text": intake_bytes(ct_dicom(), "ct.dcm").images[0].image,
    }
    times = {}
    for name, img in kinds.items():
        t0 = time.perf_counter()
        ocr.mask_image(img)
        times[name] = time.perf_counter() - t0
    print("warm OCR + masking, seconds:", {k: round(v, 2) for k, v in times.items()})
    assert all(t < 10 for t in times.values()), times


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
