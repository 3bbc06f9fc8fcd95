"""Attachment intake on real files: DICOM (pydicom's bundled samples), photos, PDFs, bad input.

Every file is real: pydicom's own test files, DICOMs derived from them with planted patient
identifiers, JPEG/PNG/WebP/GIF written by Pillow, PDFs by fpdf2/pypdf (see
tests/intake_builders.py). Assertions are on pixels, sizes, text and the exact error type.
"""

from __future__ import annotations

import io
import json
import logging
import time

import numpy as np
import pydicom
import pytest
from intake_builders import (
    PDF_PHI_STRINGS,
    PHI_STRINGS,
    animated,
    bundled,
    dicom_garbled_jpeg,
    dicom_truncated,
    dicom_with,
    dicom_with_phi,
    dicom_without_preamble,
    docx_bytes,
    encrypted_pdf,
    exe_bytes,
    giant_mediabox_pdf,
    image_bytes,
    lab_report_pdf,
    lab_report_with_phi,
    many_pages_pdf,
    pdf_pages_after,
    pdf_with_huge_image,
    photo_24mp,
    photo_with_exif,
    png_100mp,
    png_100mp_header_only,
    scanned_pdf,
)
from loguru import logger
from PIL import Image

from model.errors import IntakeError
from model.intake import (
    ACCEPTED_TYPES,
    AnimatedImage,
    CorruptFile,
    DicomWithoutImage,
    EmptyFile,
    EncryptedPdf,
    FileTooLarge,
    ImageTooLarge,
    IntakeLimits,
    IntakeResult,
    NotDicom,
    TooManyFiles,
    TooManyPages,
    UnsupportedFileType,
    intake_bytes,
    intake_file,
    intake_files,
)
from model.intake.cli import intake_main
from model.intake.dicom import pick_frames

BUDGET = IntakeLimits().model_max_pixels


def assert_usable(result: IntakeResult, n_images: int) -> None:
    """Images present, within the model budget, RGB/L, metadata-free and not blank."""
    assert len(result.images) == n_images
    for im in result.images:
        img = im.image
        assert img.mode in ("RGB", "L")
        assert img.width * img.height <= BUDGET
        assert img.info == {} and len(img.getexif()) == 0
        assert float(np.asarray(img, dtype=np.float32).std()) > 0, f"{im.label} is blank"
    json.dumps(result.to_json())  # JSON-able, no pixel data


def leaks(blob: str) -> list[str]:
    return [s for s in PHI_STRINGS if s in blob or s.upper() in blob]


# --- DICOM ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "n_images", "mode", "label"),
    [
        ("CT_small.dcm", 1, "L", "CT slice"),  # uncompressed CT, rescale slope/intercept
        ("MR_small.dcm", 1, "L", "MR slice"),  # window in header
        ("MR_small_RLE.dcm", 1, "L", "MR slice"),  # RLE lossless
        ("MR_small_jp2klossless.dcm", 1, "L", "MR slice"),  # JPEG 2000 lossless
        ("MR_small_jpeg_ls_lossless.dcm", 1, "L", "MR slice"),  # JPEG-LS
        ("JPGExtended.dcm", 1, "L", "NM slice"),  # 12-bit JPEG extended
        ("SC_rgb_jpeg_dcmtk.dcm", 1, "RGB", "OT image"),  # JPEG baseline, YBR
        ("examples_jpeg2k.dcm", 1, "RGB", "US image"),  # ultrasound, JPEG 2000
        ("examples_palette.dcm", 1, "RGB", "US image"),  # palette colour
        ("examples_ybr_color.dcm", 4, "RGB", "frame 1 of 30"),  # 30-frame US cine, JPEG
        ("rtdose.dcm", 4, "L", "frame 1 of 15"),  # 15-frame, 32-bit dose grid
    ],
)
def test_bundled_dicom_decodes_and_is_deidentified(name, n_images, mode, label):
    result = intake_file(bundled(name))
    assert result.kind == "dicom" and result.mime == "application/dicom"
    assert_usable(result, n_images)
    assert result.images[0].image.mode == mode
    assert result.images[0].label == label
    assert result.deidentified
    report = result.deid_report
    assert report["profile"].startswith("DICOM PS3.15 Basic Application Level Confidentiality")
    assert report["library"].startswith("dicognito ")
    assert "PatientName" in report["removed"]
    assert result.text.startswith("DICOM ")


def test_lossless_encodings_give_identical_pixels():
    """Uncompressed, RLE, JPEG 2000 and JPEG-LS lossless copies of MR_small decode alike."""
    ref = np.asarray(intake_file(bundled("MR_small.dcm")).images[0].image)
    for name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        assert np.array_equal(np.asarray(intake_file(bundled(name)).images[0].image), ref), name


def test_ct_without_window_uses_soft_tissue_default():
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    assert "WindowCenter" not in ds
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.clip(((hu - 39.5) / 399 + 0.5) * 255 + 0.5, 0, 255).astype(np.uint8)
    result = intake_file(bundled("CT_small.dcm"))
    got = np.asarray(result.images[0].image)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert "window C40 W400 (CT soft tissue)" in result.text


def test_header_window_and_monochrome1_inversion():
    normal = intake_file(bundled("MR_small.dcm"))
    assert "window C600 W1600 from header" in normal.text
    inverted = intake_bytes(
        dicom_with("MR_small.dcm", PhotometricInterpretation="MONOCHROME1"), "mr1.dcm"
    )
    a = np.asarray(normal.images[0].image).astype(int)
    b = np.asarray(inverted.images[0].image).astype(int)
    assert np.array_equal(a, 255 - b)


def test_multiframe_keeps_evenly_spaced_frames_with_middle():
    result = intake_file(bundled("examples_ybr_color.dcm"))
    labels = [im.label for im in result.images]
    assert labels == ["frame 1 of 30", "frame 8 of 30", "frame 16 of 30", "frame 24 of 30"]
    assert any("4 of 30 frames kept" in n for n in result.notes)
    assert "30 frames, 4 shown" in result.text
    # Different frames of a cine differ.
    assert not np.array_equal(
        np.asarray(result.images[0].image), np.asarray(result.images[2].image)
    )
    more = intake_file(bundled("examples_ybr_color.dcm"), limits=IntakeLimits(dicom_max_frames=7))
    assert len(more.images) == 7


def test_pick_frames():
    assert pick_frames(1, 4) == [0]
    assert pick_frames(4, 4) == [0, 1, 2, 3]
    assert pick_frames(40, 4) == [0, 10, 20, 30]
    assert pick_frames(120, 4) == [0, 30, 60, 90]
    assert 50 in pick_frames(101, 3) and len(pick_frames(101, 3)) == 3


def test_dicom_identifiers_reach_nothing(tmp_path, caplog, capsys):
    data = dicom_with_phi()
    (tmp_path / "ct.dcm").write_bytes(data)
    assert leaks(data.decode("latin-1"))  # the identifiers really are in the file
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m) + json.dumps(m.record["extra"])), level="TRACE")
    caplog.set_level(logging.DEBUG)
    try:
        result = intake_file(tmp_path / "ct.dcm")
        code = intake_main([str(tmp_path / "ct.dcm")], as_json=True)
        intake_main([str(tmp_path / "ct.dcm")], as_json=False)
    finally:
        logger.remove(sink)
    out = capsys.readouterr()
    assert code == 0
    assert lines, "intake logged nothing: the sink did not capture"
    blob = json.dumps(result.to_json())
    for name, where in [
        ("to_json", blob),
        ("text", result.text or ""),
        ("notes", json.dumps(result.notes)),
        ("deid_report", json.dumps(result.deid_report)),
        ("loguru", "\n".join(lines)),
        ("logging", caplog.text),
        ("cli", out.out + out.err),
    ]:
        assert not leaks(where), f"identifier in {name}: {leaks(where)}"
    report = result.deid_report
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "InstitutionName",
        "OtherPatientIDs",
        "AccessionNumber",
        "StudyDescription",
    ):
        assert keyword in report["removed"], keyword
    assert report["private_tags_removed"] >= 1
    assert report["removed_on_verify"] == ["DetectorID"]  # found by value, not by name
    assert "StudyInstanceUID" in report["replaced"]  # dicognito regenerated the UIDs
    assert result.deidentified and not result.burned_in_annotation
    assert_usable(result, 1)


def test_pydicom_warnings_do_not_quote_header_values(caplog):
    """pydicom's validation warning would say "Invalid value for VR DA: 'Jane Doe 1975'"."""
    bad = dicom_with("CT_small.dcm", PatientBirthDate="Jane Doe 1975")
    caplog.set_level(logging.DEBUG)
    result = intake_bytes(bad, "bad-date.dcm")
    assert result.kind == "dicom"
    assert "Jane" not in caplog.text and "Doe" not in caplog.text
    assert not leaks(json.dumps(result.to_json()))


def test_burned_in_annotation_is_flagged():
    yes = intake_bytes(dicom_with("MR_small.dcm", BurnedInAnnotation="YES"), "b.dcm")
    assert yes.burned_in_annotation
    assert yes.deid_report["burned_in_annotation"] == "YES"
    assert any("burned-in annotation" in n for n in yes.notes)
    # The header says NO, yet this ultrasound prints "BAPTIST MED CTR" and a date: OCR runs on
    # ultrasound whatever the header says, masks them and flags the image.
    no = intake_bytes(dicom_with("examples_jpeg2k.dcm", BurnedInAnnotation="NO"), "us.dcm")
    assert no.burned_in_annotation and no.deid_report["burned_in_text"]["text_lines_masked"] > 0
    # Ultrasound without the tag: suspected (US machines print names on the image).
    suspected = intake_file(bundled("examples_jpeg2k.dcm"))
    assert suspected.burned_in_annotation and suspected.deid_report["burned_in_suspected"]
    assert not intake_file(bundled("MR_small.dcm")).burned_in_annotation


def test_dicom_found_by_content_not_name():
    data = bundled("MR_small.dcm").read_bytes()
    assert intake_bytes(data, "scan").kind == "dicom"  # no extension, DICM preamble
    assert intake_bytes(data, "scan.png").kind == "dicom"  # wrong extension
    bare = dicom_without_preamble()
    assert intake_bytes(bare, "old.dcm").kind == "dicom"  # no preamble: tried because .dcm
    with pytest.raises(UnsupportedFileType):
        intake_bytes(bare, "old.bin")  # no preamble, no .dcm: nothing says DICOM


@pytest.mark.parametrize(
    ("data", "name", "error"),
    [
        (lambda: bundled("MR_truncated.dcm").read_bytes(), "trunc.dcm", CorruptFile),
        (lambda: dicom_truncated(), "cut.dcm", CorruptFile),
        (lambda: dicom_garbled_jpeg(), "garbled.dcm", CorruptFile),
        (lambda: bundled("JPEG-lossy.dcm").read_bytes(), "lossy.dcm", CorruptFile),
        (lambda: image_bytes(Image.new("RGB", (32, 32)), "PNG"), "image.dcm", NotDicom),
        (lambda: b"Patient seen in clinic today.\n", "note.dcm", NotDicom),
        (lambda: bundled("waveform_ecg.dcm").read_bytes(), "ecg.dcm", DicomWithoutImage),
        (lambda: bundled("rtplan.dcm").read_bytes(), "plan.dcm", DicomWithoutImage),
    ],
    ids=[
        "truncated",
        "cut-copy",
        "garbled-jpeg",
        "malformed-jpeg",
        "png-as-dcm",
        "text-as-dcm",
        "ecg",
        "rtplan",
    ],
)
def test_bad_dicom_gives_specific_error(data, name, error):
    with pytest.raises(error) as info:
        intake_bytes(data(), name)
    assert type(info.value) is error
    assert info.value.filename == name
    assert info.value.detail and info.value.detail != error.user_message


def test_png_named_dcm_says_what_it_is():
    with pytest.raises(NotDicom, match="PNG image"):
        intake_bytes(image_bytes(Image.new("L", (8, 8)), "PNG"), "xray.dcm")


# --- photos -----------------------------------------------------------------------------


def test_exif_orientation_applied_and_metadata_stripped():
    src = Image.open(io.BytesIO(photo_with_exif()))
    assert src.size == (400, 300) and src.getexif()[0x0112] == 6
    assert src.getexif().get_ifd(0x8825)  # GPS present in the upload
    result = intake_bytes(photo_with_exif(), "wound.jpg")
    img = result.images[0].image
    assert result.kind == "image" and result.mime == "image/jpeg"
    assert img.size == (300, 400)  # orientation 6: rotated 90 degrees clockwise
    # The red block was top-left in the stored pixels; after a clockwise turn it is top-right.
    r, g, b = img.getpixel((img.width - 10, 10))
    assert r > 200 and g < 60 and b < 60
    r, g, b = img.getpixel((10, 10))
    assert r < 100
    assert img.info == {} and len(img.getexif()) == 0
    buf = io.BytesIO()
    img.save(buf, format="JPEG")  # what would be sent carries no EXIF either
    assert b"Exif" not in buf.getvalue() and b"SERIAL-0042" not in buf.getvalue()
    assert {"EXIF", "GPS location"} <= set(result.deid_report["removed"])
    assert result.deidentified and result.text is None
    assert any("orientation 6" in n for n in result.notes)


def test_24mp_photo_is_downscaled_to_budget():
    t0 = time.perf_counter()
    result = intake_bytes(photo_24mp(), "camera.jpg")
    elapsed = time.perf_counter() - t0
    img = result.images[0].image
    assert img.width * img.height <= BUDGET
    assert img.width * img.height > 0.95 * BUDGET  # uses the budget, not a tiny thumbnail
    assert abs(img.width / img.height - 1.5) < 0.01  # aspect kept
    assert any("downscaled from 6000x4000" in n for n in result.notes)
    assert_usable(result, 1)
    assert elapsed < 10


def test_small_image_is_not_upscaled():
    result = intake_bytes(image_bytes(Image.new("RGB", (64, 48), (1, 2, 3)), "PNG"), "tiny.png")
    assert result.images[0].image.size == (64, 48)


def test_image_modes_become_rgb_or_l():
    rgba = Image.new("RGBA", (60, 40), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 30, 40))  # left half fully transparent
    out = intake_bytes(image_bytes(rgba, "PNG"), "a.png").images[0].image
    assert out.mode == "RGB" and out.getpixel((5, 5)) == (255, 255, 255)
    assert out.getpixel((50, 5)) == (255, 0, 0)

    grey16 = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 8).astype(np.uint16))
    out = intake_bytes(image_bytes(grey16, "PNG"), "g16.png").images[0].image
    assert out.mode == "L" and out.getextrema() == (0, 255)

    cmyk = intake_bytes(image_bytes(Image.new("CMYK", (30, 30), (0, 255, 255, 0)), "JPEG"), "c.jpg")
    r, g, b = cmyk.images[0].image.getpixel((15, 15))
    assert cmyk.images[0].image.mode == "RGB" and r > 200 and g < 80 and b < 80

    webp = intake_bytes(image_bytes(Image.new("RGB", (50, 50), (0, 128, 0)), "WEBP"), "x.webp")
    assert webp.mime == "image/webp" and webp.images[0].image.mode == "RGB"


def test_multipage_tiff_takes_first_page_with_note():
    pages = [Image.new("RGB", (50, 50), (250, 0, 0)), Image.new("RGB", (50, 50), (0, 0, 250))]
    data = image_bytes(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    result = intake_bytes(data, "scan.tif")
    assert result.images[0].image.getpixel((1, 1))[0] > 200
    assert any("page 1 of 2" in n for n in result.notes)


def test_100_megapixel_png_refused_from_header_before_decoding():
    data = png_100mp()
    assert len(data) < 100_000  # tiny on disk, 100 MB+ once decoded
    with pytest.raises(ImageTooLarge, match="10000 x 10000"):
        intake_bytes(data, "bomb.png")
    # Same header, pixel data cut off: decoding would fail as corrupt; the size check comes
    # first, so the answer is still "too large".
    with pytest.raises(ImageTooLarge):
        intake_bytes(png_100mp_header_only(), "bomb-cut.png")
    with pytest.raises(CorruptFile):  # the control: let it past the limit and it is decoded
        intake_bytes(
            png_100mp_header_only(), "cut.png", limits=IntakeLimits(max_image_pixels=10**8)
        )


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_images_refused(fmt):
    with pytest.raises(AnimatedImage, match="3 frames"):
        intake_bytes(animated(fmt), f"anim.{fmt.lower()}")


@pytest.mark.parametrize(
    ("data", "name", "what"),
    [
        (lambda: image_bytes(Image.new("P", (20, 20)), "GIF"), "still.gif", "GIF"),
        (lambda: image_bytes(Image.new("RGB", (20, 20)), "BMP"), "x.bmp", "BMP"),
        (lambda: docx_bytes(), "report.docx", ".docx"),
        (lambda: b"Hb 13.2 g/dL\nWBC 7.1\n", "labs.txt", "plain text"),
        (lambda: exe_bytes(), "setup.exe", ".exe"),
    ],
    ids=["gif", "bmp", "docx", "txt", "exe"],
)
def test_unsupported_types_list_accepted_ones(data, name, what):
    with pytest.raises(UnsupportedFileType) as info:
        intake_bytes(data(), name)
    assert what in info.value.detail and ACCEPTED_TYPES in info.value.detail
    assert info.value.filename == name


# --- PDF ----------------------------------------------------------------------------------


def _text_box(pdf_bytes: bytes, needle: str, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where `needle` is printed on page 1, in pixels of an image of `size`, a little inset."""
    import pypdfium2 as pdfium

    page = pdfium.PdfDocument(pdf_bytes)[0]
    textpage = page.get_textpage()
    start = textpage.get_text_range().index(needle)
    boxes = [textpage.get_charbox(i) for i in range(start, start + len(needle))]
    left, bottom, right, top = page.get_bbox()
    sx, sy = size[0] / (right - left), size[1] / (top - bottom)
    x0, x1 = min(b[0] for b in boxes), max(b[2] for b in boxes)
    y0, y1 = min(b[1] for b in boxes), max(b[3] for b in boxes)
    px0, px1, py0, py1 = (x0 - left) * sx, (x1 - left) * sx, (top - y1) * sy, (top - y0) * sy
    dx, dy = (px1 - px0) * 0.15, (py1 - py0) * 0.15
    return int(px0 + dx), int(py0 + dy), int(px1 - dx), int(py1 - dy)


def test_pdf_identifiers_leave_the_text_and_are_painted_out_of_the_page():
    data = lab_report_with_phi()
    result = intake_bytes(data, "labs.pdf")
    assert result.deidentified and result.deid_report["pages_without_text"] == []
    removed = result.deid_report["removed"]
    assert removed["name"] == 1 and removed["id"] == 1 and removed["dob"] == 1
    assert removed["contact"] >= 2 and "1975" not in json.dumps(result.deid_report)
    for phi in PDF_PHI_STRINGS:
        assert phi.lower() not in result.text.lower(), phi
    assert "Hemoglobin 13.2 g/dL (ref 12.0-15.5)" in result.text, "clinical content is kept"
    assert "results reviewed with [REDACTED], no action" in result.text  # the echo of the name
    page = np.asarray(result.images[0].image.convert("L"), dtype=float)

    def mean(needle: str) -> float:
        x0, y0, x1, y1 = _text_box(data, needle, result.images[0].image.size)
        return page[y0:y1, x0:x1].mean()

    for phi in ("DOE, JANE", "MRN-123456", "03/14/1975", "555-123-4567", "Jane"):
        assert mean(phi) < 40, f"{phi} is not painted out"
    assert mean("Hemoglobin") > 120 and mean("Patient Name") > 120  # labels and results stay


def test_lab_report_pdf_text_and_pages():
    result = intake_bytes(lab_report_pdf(3), "cbc.pdf")
    assert result.kind == "pdf" and result.page_count == 3
    assert_usable(result, 3)
    assert [im.label for im in result.images] == ["page 1", "page 2", "page 3"]
    assert "Hemoglobin 13.2 g/dL" in result.text
    assert "[page 3]" in result.text and "\r" not in result.text
    # its text layer was checked: nothing identifying (no false hits on "12.0-15.5")
    assert result.deidentified is True and result.deid_report["removed"] == {}
    capped = intake_bytes(
        lab_report_pdf(3), "cbc.pdf", limits=IntakeLimits(pdf_pages_rendered=2, max_text_chars=60)
    )
    assert len(capped.images) == 2 and capped.page_count == 3
    assert any("2 of 3 pages rendered" in n for n in capped.notes)
    assert len(capped.text) <= 60 and any("text truncated at 60" in n for n in capped.notes)


def test_scanned_pdf_noted_as_without_text():
    result = intake_bytes(scanned_pdf(), "scan.pdf")
    assert result.text is None
    assert any("no text layer" in n for n in result.notes)
    assert_usable(result, 1)
    # a scan is read by OCR and what identifies someone is masked before it goes anywhere
    assert result.deidentified and result.deid_report["pages_without_text"] == [1]
    assert any("read by OCR" in n for n in result.notes)
    blank = intake_bytes(pdf_pages_after(lab_report_pdf(1), 1), "report.pdf")
    assert blank.deidentified and blank.deid_report["pages_without_text"] == []  # blank page


def test_encrypted_pdf_refused_owner_only_accepted():
    with pytest.raises(EncryptedPdf, match="password"):
        intake_bytes(encrypted_pdf(), "locked.pdf")
    # Only an owner password (printing restrictions): opens without one, so it is taken.
    assert intake_bytes(encrypted_pdf(user_password=""), "restricted.pdf").page_count == 1


def test_5000_page_pdf_refused_before_rendering():
    data = many_pages_pdf(5000)
    t0 = time.perf_counter()
    with pytest.raises(TooManyPages, match="5000 pages"):
        intake_bytes(data, "huge.pdf")
    assert time.perf_counter() - t0 < 3
    # Page 1 holds a 100 MP image: had anything been rendered, that would be the error.
    over = pdf_pages_after(pdf_with_huge_image(), IntakeLimits().max_pdf_pages)
    with pytest.raises(TooManyPages, match="201 pages"):
        intake_bytes(over, "over.pdf")
    with pytest.raises(ImageTooLarge):  # the control: allowed more pages, page 1 is opened
        intake_bytes(over, "over.pdf", limits=IntakeLimits(max_pdf_pages=300))


def test_pdf_bombs_are_bounded():
    giant = intake_bytes(giant_mediabox_pdf(), "giant.pdf")
    img = giant.images[0].image
    assert img.width * img.height <= BUDGET and img.width > 500
    with pytest.raises(ImageTooLarge, match="10000 x 10000"):
        intake_bytes(pdf_with_huge_image(), "img-bomb.pdf")
    with pytest.raises(CorruptFile):
        intake_bytes(lab_report_pdf(2)[:400], "cut.pdf")


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow: "Truncated File Read" etc.
def test_damaged_uploads_only_raise_intake_errors():
    """Truncated and bit-flipped copies of real files: each is taken or refused with an
    IntakeError, never another exception (Rust decoder panics included)."""
    sources = {
        "ct.dcm": bundled("CT_small.dcm").read_bytes(),
        "rle.dcm": bundled("MR_small_RLE.dcm").read_bytes(),
        "jpeg.dcm": bundled("SC_rgb_jpeg_dcmtk.dcm").read_bytes(),
        "j2k.dcm": bundled("MR_small_jp2klossless.dcm").read_bytes(),
        "lab.pdf": lab_report_pdf(1),
        "photo.jpg": photo_with_exif(),
        "scan.tif": image_bytes(Image.new("RGB", (40, 30), (1, 2, 3)), "TIFF"),
        "x.webp": image_bytes(Image.new("RGB", (40, 30), (1, 2, 3)), "WEBP"),
    }
    rng = np.random.default_rng(2024)
    outcomes: dict[str, int] = {}
    for _ in range(240):
        name = list(sources)[rng.integers(len(sources))]
        data = bytearray(sources[name])
        if rng.random() < 0.3:
            data = data[: int(rng.integers(1, len(data)))]
        else:
            for i in rng.integers(0, len(data), size=int(rng.integers(1, 20))):
                data[i] = int(rng.integers(256))
        try:
            intake_bytes(bytes(data), name)
            outcome = "ok"
        except IntakeError as exc:
            assert exc.filename == name and exc.detail
            outcome = type(exc).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("CorruptFile", 0) > 20 and outcomes.get("ok", 0) > 20, outcomes


# --- sizes, counts, files ------------------------------------------------------------------


def test_empty_and_oversized_files(tmp_path):
    with pytest.raises(EmptyFile):
        intake_bytes(b"", "x.png")
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(EmptyFile):
        intake_file(tmp_path / "empty.dcm")
    big = tmp_path / "big.dcm"
    with big.open("wb") as f:  # sparse 60 MB: refused from its size, never read
        f.truncate(60 * 2**20)
    t0 = time.perf_counter()
    with pytest.raises(FileTooLarge, match="60 MB"):
        intake_file(big)
    assert time.perf_counter() - t0 < 0.5
    with pytest.raises(FileTooLarge):
        intake_bytes(bytes(2000), "x.png", limits=IntakeLimits(max_file_bytes=1000))


def test_too_many_files_refused_before_any_work(tmp_path):
    paths = [tmp_path / f"missing-{i}.png" for i in range(11)]  # would fail if opened
    with pytest.raises(TooManyFiles, match="11 files"):
        intake_files(paths)
    ok = tmp_path / "ok.png"
    ok.write_bytes(image_bytes(Image.new("RGB", (10, 10), (9, 9, 9)), "PNG"))
    assert [r.kind for r in intake_files([ok, bundled("MR_small.dcm")])] == ["image", "dicom"]


def test_errors_are_intake_errors_with_messages():
    for data, name in [(b"", "e.png"), (png_100mp(), "b.png"), (b"MZ" + bytes(9), "a.exe")]:
        with pytest.raises(IntakeError) as info:
            intake_bytes(data, name)
        assert info.value.filename == name and name in str(info.value)


def test_limits_are_checked():
    with pytest.raises(ValueError, match="model_max_pixels"):
        IntakeLimits(model_max_pixels=10**9)
    with pytest.raises(ValueError, match="dicom_max_frames"):
        IntakeLimits(dicom_max_frames=0)


# --- command line and bench -----------------------------------------------------------------


def test_intake_main_json(tmp_path):
    (tmp_path / "ct.dcm").write_bytes(dicom_with_phi())
    (tmp_path / "cbc.pdf").write_bytes(lab_report_pdf(1))
    (tmp_path / "fake.dcm").write_bytes(image_bytes(Image.new("L", (8, 8)), "PNG"))
    out = io.StringIO()
    paths = [str(tmp_path / n) for n in ("ct.dcm", "cbc.pdf", "fake.dcm")]
    code = intake_main(paths, as_json=True, out=out)
    assert code == 1  # one file failed
    entries = json.loads(out.getvalue())
    assert [e["ok"] for e in entries] == [True, True, False]
    assert entries[0]["kind"] == "dicom" and entries[0]["images"][0]["width"] == 128
    assert "Hemoglobin 13.2" in entries[1]["text"]
    assert entries[2]["error_type"] == "NotDicom"
    assert not leaks(out.getvalue())
    human = io.StringIO()
    assert intake_main(paths[:2], as_json=False, out=human) == 0
    assert "CT slice: 128x128" in human.getvalue() and not leaks(human.getvalue())


def test_bench_intake_reports_ratio(tmp_path, capsys):
    from app.bench.intake import bench_intake

    photo = tmp_path / "photo.jpg"
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), np.uint8))
    img.save(photo, quality=90)
    summary = bench_intake([photo, bundled("CT_small.dcm")], repeats=1, show=True)
    rows = {r["file"]: r for r in summary["rows"]}
    assert rows["photo.jpg"]["kind"] == "image" and rows["CT_small.dcm"]["kind"] == "dicom"
    assert rows["photo.jpg"]["naive_b64"] > 3 * rows["photo.jpg"]["sent_b64"]
    assert summary["ratio"] > 1
    assert "overall:" in capsys.readouterr().out
