"""Real files for the intake tests, written by code in well under a second each.

DICOM files start from pydicom's bundled samples (shipped in its wheel; `bundled()` refuses
anything that would need a download); PDFs are written with fpdf2 and pypdf; images with
Pillow. Nothing here is mocked: each builder returns bytes a clinician could upload.
"""

from __future__ import annotations

import io
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
from fpdf import FPDF
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from pypdf import PdfWriter

#: Identifiers planted in a DICOM header; none may reach anything intake hands on.
PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN-123456",
    "PatientBirthDate": "19750314",
    "InstitutionName": "St Elsewhere Hospital",
    "ReferringPhysicianName": "Smith^John",
    "OtherPatientIDs": "ALT-998877",
    "AccessionNumber": "ACC-445566",
    "StudyDescription": "CT chest Jane Doe MRN-123456",
}
#: Strings that must not appear in intake output (case-sensitive; upper-case variants too).
PHI_STRINGS = (
    "Doe",
    "Jane",
    "MRN-123456",
    "123456",
    "19750314",
    "St Elsewhere Hospital",
    "Elsewhere",
    "Smith",
    "ALT-998877",
    "ACC-445566",
)


def bundled(name: str) -> Path:
    """Path of a DICOM sample shipped inside pydicom's wheel (never downloads)."""
    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not bundled with pydicom {pydicom.__version__}")
    return path


def dicom_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dicom_with_phi(base: str = "CT_small.dcm") -> bytes:
    """A real CT whose header names a patient everywhere identifiers usually hide."""
    ds = pydicom.dcmread(bundled(base))
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.PatientSex = "F"
    ds.DetectorID = "MRN-123456"  # an odd place no profile lists: only the final check finds it
    # A private block (vendors put names and IDs there) and a nested sequence item.
    block = ds.private_block(0x0011, "ACME HOSPITAL PACS", create=True)
    block.add_new(0x01, "LO", "Doe Jane MRN-123456")
    item = Dataset()
    item.PatientID = "MRN-123456"
    item.IssuerOfPatientID = "St Elsewhere Hospital"
    ds.OtherPatientIDsSequence = [item]
    req = Dataset()
    req.RequestedProcedureDescription = "for Doe^Jane"
    req.ScheduledProcedureStepID = "MRN-123456"
    ds.RequestAttributesSequence = [req]
    return dicom_bytes(ds)


def dicom_with(base: str, **tags) -> bytes:
    """A bundled sample with some tags set (invalid values too: pydicom only warns)."""
    ds = pydicom.dcmread(bundled(base))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        return dicom_bytes(ds)


def dicom_without_preamble(base: str = "MR_small.dcm") -> bytes:
    """The same dataset written without the 128-byte preamble and 'DICM' (legal, and common
    from old modalities): only recognisable by trying to parse it."""
    ds = pydicom.dcmread(bundled(base))
    ds.preamble = None
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=False)
    data = buf.getvalue()
    assert data[128:132] != b"DICM"
    return data


def dicom_truncated(base: str = "CT_small.dcm", keep: float = 0.6) -> bytes:
    """A real DICOM cut off in the middle of its pixel data (an interrupted copy)."""
    data = bundled(base).read_bytes()
    return data[: int(len(data) * keep)]


def dicom_garbled_jpeg(base: str = "SC_rgb_jpeg_dcmtk.dcm") -> bytes:
    """A JPEG-compressed DICOM whose compressed frame has been overwritten with noise."""
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(bundled(base))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    rng = np.random.default_rng(7)
    junk = frame[:2] + rng.integers(0, 256, len(frame) - 2, dtype=np.uint8).tobytes()
    ds.PixelData = encapsulate([junk])
    return dicom_bytes(ds)


def image_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo_with_exif(size=(400, 300), orientation: int = 6) -> bytes:
    """A JPEG with a red block top-left, EXIF orientation, camera serial and GPS position."""
    img = Image.new("RGB", size, (40, 90, 160))
    ImageDraw.Draw(img).rectangle([0, 0, size[0] // 4, size[1] // 4], fill=(255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "PhoneMaker"
    exif[0xA431] = "SERIAL-0042"  # BodySerialNumber
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 0.0)}
    return image_bytes(img, "JPEG", quality=92, exif=exif.tobytes())


def photo_24mp() -> bytes:
    """A 6000x4000 JPEG (24 MP) with structure (so it is not blank after downscaling)."""
    img = Image.new("RGB", (6000, 4000), (200, 180, 160))
    draw = ImageDraw.Draw(img)
    for i in range(0, 6000, 500):
        draw.rectangle([i, 0, i + 250, 4000], fill=(30 + i // 40, 60, 90))
    return image_bytes(img, "JPEG", quality=85)


def png_100mp() -> bytes:
    """10000x10000 pixels, ~12 KB on disk: a decompression bomb for a naive decoder."""
    return image_bytes(Image.new("1", (10000, 10000)), "PNG")


def png_100mp_header_only() -> bytes:
    """The 100 MP PNG cut right after its first data chunk starts: the header is intact but
    the pixels cannot be decoded, so only a header check can give "too large"."""
    data = png_100mp()
    idat = data.index(b"IDAT")
    return data[: idat + 64]


def pdf_pages_after(first_page_pdf: bytes, extra_pages: int) -> bytes:
    """`first_page_pdf` followed by blank pages."""
    from pypdf import PdfReader

    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(first_page_pdf)))
    for _ in range(extra_pages):
        writer.add_blank_page(612, 792)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def animated(fmt: str, n: int = 3) -> bytes:
    frames = [Image.new("RGB", (40, 40), (60 * i, 200 - 60 * i, 30)) for i in range(n)]
    if fmt == "GIF":
        frames = [f.convert("P", palette=Image.Palette.ADAPTIVE) for f in frames]
    return image_bytes(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)


def docx_bytes() -> bytes:
    """A minimal Office Open XML package (what a .docx is: a ZIP)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        z.writestr("word/document.xml", "<w:document/>")
    return buf.getvalue()


def exe_bytes() -> bytes:
    """The start of a Windows PE executable (MZ header, DOS stub message)."""
    head = bytearray(b"MZ" + bytes(58) + (64).to_bytes(4, "little"))
    return bytes(head) + b"PE\x00\x00" + b"This program cannot be run in DOS mode." + bytes(200)


def lab_report_pdf(pages: int = 3) -> bytes:
    """A text PDF lab report (fpdf2)."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for p in range(pages):
        pdf.add_page()
        pdf.cell(
            0, 10, f"City Lab - Complete blood count - page {p + 1}", new_x="LMARGIN", new_y="NEXT"
        )
        pdf.cell(0, 10, "Hemoglobin 13.2 g/dL (ref 12.0-15.5)", new_x="LMARGIN", new_y="NEXT")
        pdf.cell(0, 10, "WBC 7.1 x10^9/L", new_x="LMARGIN", new_y="NEXT")
        pdf.rect(20, 60, 170, 80)
    return bytes(pdf.output())


#: What `lab_report_with_phi` prints about the patient (none of it may reach the model).
PDF_PHI_STRINGS = ("DOE", "Jane", "MRN-123456", "123456", "03/14/1975", "Elm Street", "555-123-4567",
                   "jane.doe@example.org")  # fmt: skip


def lab_report_with_phi() -> bytes:
    """A lab report that names its patient the way real ones do (fields, a greeting)."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    for line in ("St Mary Laboratory - Complete blood count",
                 "Patient Name: DOE, JANE",
                 "MRN: MRN-123456    DOB: 03/14/1975",
                 "Address: 12 Elm Street, Springfield",
                 "Phone: 555-123-4567    E-mail: jane.doe@example.org",
                 "Hemoglobin 13.2 g/dL (ref 12.0-15.5)",
                 "WBC 7.1 x10^9/L (ref 4.0-11.0)",
                 "Comment: results reviewed with Jane, no action needed."):  # fmt: skip
        pdf.cell(0, 10, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def scanned_pdf() -> bytes:
    """An image-only PDF (a scan): no text layer."""
    img = Image.new("L", (600, 800), 255)
    draw = ImageDraw.Draw(img)
    draw.text((40, 40), "Hemoglobin 13.2 g/dL", fill=0)
    draw.rectangle([40, 100, 560, 400], outline=0, width=3)
    pdf = FPDF()
    pdf.add_page()
    pdf.image(img, x=10, y=10, w=190)
    return bytes(pdf.output())


def encrypted_pdf(user_password: str = "s3cret") -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(595, 842)
    writer.encrypt(user_password=user_password, owner_password="owner-pw", algorithm="AES-256")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def many_pages_pdf(n: int = 5000) -> bytes:
    """n blank pages (pypdf writes 5,000 in under a second)."""
    writer = PdfWriter()
    for _ in range(n):
        writer.add_blank_page(612, 792)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def giant_mediabox_pdf(points: float = 1_440_000.0) -> bytes:
    """One page 500 km on a side: rendered at 72 DPI it would need ~10^14 pixels."""
    writer = PdfWriter()
    writer.add_blank_page(points, points)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def pdf_with_huge_image(side: int = 10000) -> bytes:
    """A one-page PDF holding a side x side greyscale image (100 MP) in a few KB of Flate."""
    stream = zlib.compress(bytes(side * side // 8), 9)  # 1-bit, all black
    content = b"q 500 0 0 500 50 50 cm /Im0 Do Q"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 600 600] "
        b"/Resources << /XObject << /Im0 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
        b"/BitsPerComponent 1 /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream"
        % (side, side, len(stream), stream),
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
    ]
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
