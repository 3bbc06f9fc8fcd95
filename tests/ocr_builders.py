"""Real files with text burned into their pixels, for the OCR masking tests.

Text is drawn with real fonts found through fontconfig (DejaVu Sans for Latin, Noto Sans CJK
for Chinese: Debian's fonts-dejavu-core and fonts-noto-cjk), so OCR reads glyphs as it would
on a scanner's or ultrasound machine's output. DICOM files are written with pydicom from
scratch (an ultrasound / secondary-capture image with a patient banner, a CT without text),
PDFs with fpdf2, photos with Pillow. Each builder returns bytes a clinician could upload.
"""

from __future__ import annotations

import io
import subprocess
from functools import cache

import numpy as np
import pydicom
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

#: The English banner an ultrasound machine prints, and what of it identifies the patient.
BANNER = "PATIENT: ZHANG WEI  ID 00482913  DOB 1961-03-14  St Mary Hospital"
BANNER_PHI = ("ZHANG", "WEI", "00482913", "1961-03-14", "St Mary", "Hospital")
#: The Chinese banner (name, inpatient number, hospital).
BANNER_ZH = "姓名：王小明 住院号 123456 北京协和医院"
BANNER_ZH_PHI = ("王小明", "123456", "北京协和医院", "协和")
#: Technical labels that must stay readable: (drawn text, what OCR must still find).
TECHNICAL = (("3.2 cm", "3.2"), ("5C1 probe", "5C1"), ("HR 72 bpm", "72"))
#: A lab report as photographed or scanned: who it is for, then results.
REPORT_PHI = ("DOE", "JANE", "00482913", "03/14/1975")
REPORT_LINES = (
    "St Mary Laboratory - Complete blood count",
    "Patient Name: DOE, JANE",
    "MRN: 00482913    DOB: 03/14/1975",
    "Hemoglobin 13.2 g/dL (ref 12.0-15.5)",
    "WBC 7.1 x10^9/L (ref 4.0-11.0)",
)
#: What must survive on the report: a result line (the model needs it).
REPORT_RESULT = "13.2"


@cache
def font_path(lang: str = "en") -> str:
    """A font file that covers `lang` ("en" or "zh"), found with fontconfig."""
    query = {"en": "DejaVu Sans", "zh": ":lang=zh"}[lang]
    if lang == "zh":
        out = subprocess.run(["fc-list", query, "file"], capture_output=True, text=True).stdout
        files = sorted(line.strip().rstrip(":") for line in out.splitlines() if line.strip())
        sans = [f for f in files if "Sans" in f] or files
    else:
        out = subprocess.run(["fc-match", "-f", "%{file}", query], capture_output=True, text=True)
        sans = [out.stdout.strip()] if out.stdout.strip() else []
    if not sans:
        raise RuntimeError(
            f"no {lang} font found by fontconfig: apt-get install fonts-dejavu-core fonts-noto-cjk"
        )
    return sans[0]


def font(size: int, lang: str = "en") -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path(lang), size)


def ultrasound_frame(
    banner: str | None = BANNER, banner_zh: str | None = None, size=(1024, 768)
) -> Image.Image:
    """An 8-bit ultrasound-like frame: a speckle sector, a patient banner at the top, and
    technical labels (probe, measurement, heart rate, an L marker) beside the image."""
    w, h = size
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:h, 0:w]
    sector = ((xx - w / 2) ** 2 + (yy - 80) ** 2 < (h - 120) ** 2) & (
        np.abs(xx - w / 2) < (yy - 80) * 0.8
    )
    arr = np.zeros((h, w), np.uint8)
    arr[sector] = rng.integers(15, 130, int(sector.sum()))
    img = Image.fromarray(arr).filter(ImageFilter.GaussianBlur(0.8))
    draw = ImageDraw.Draw(img)
    if banner:
        draw.text((12, 10), banner, fill=255, font=font(20))
    if banner_zh:
        draw.text((12, 42), banner_zh, fill=255, font=font(22, "zh"))
    for k, (text, _) in enumerate(TECHNICAL):
        draw.text((w - 150, 110 + 34 * k), text, fill=255, font=font(20))
    draw.text((60, h // 2), "L", fill=255, font=font(28))
    draw.line((w // 2 - 80, h // 2, w // 2 + 80, h // 2), fill=255, width=2)  # a caliper line
    return img


def dicom_from_image(
    img: Image.Image,
    *,
    modality: str = "US",
    sop_class: str = US_IMAGE_STORAGE,
    burned_in: str | None = "YES",
) -> bytes:
    """A single-frame 8-bit DICOM (MONOCHROME2 or RGB) holding `img`, whose header also names
    the patient printed on it (the header is de-identified by intake; the pixels are the test)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
    ds.PatientName = "ZHANG^WEI"
    ds.PatientID = "00482913"
    ds.PatientBirthDate = "19610314"
    ds.InstitutionName = "St Mary Hospital"
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    arr = np.asarray(img)
    ds.Rows, ds.Columns = arr.shape[:2]
    if arr.ndim == 3:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = arr.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def ct_dicom(burned_in: str | None = None) -> bytes:
    """A 512x512 16-bit CT slice (a water phantom with a bone ring), no text anywhere."""
    yy, xx = np.mgrid[0:512, 0:512]
    r = np.hypot(xx - 256, yy - 256)
    hu = np.full((512, 512), -1000, np.int16)
    hu[r < 200] = 0
    hu[(r > 170) & (r < 185)] = 700
    hu[(np.hypot(xx - 200, yy - 230) < 30)] = 60
    ds = pydicom.dcmread(io.BytesIO(dicom_from_image(Image.new("L", (4, 4)), modality="CT",
                                                     sop_class=CT_IMAGE_STORAGE,
                                                     burned_in=burned_in)))  # fmt: skip
    ds.Rows, ds.Columns = 512, 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.PixelData = hu.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def document_page(lines=REPORT_LINES, size=(1240, 1754), text_px: int = 34) -> Image.Image:
    """A white A4 page at 150 DPI with the report printed on it."""
    page = Image.new("L", size, 255)
    draw = ImageDraw.Draw(page)
    for k, line in enumerate(lines):
        draw.text((110, 140 + int(text_px * 2.2) * k), line, fill=0, font=font(text_px))
    return page


def document_photo(size=(4000, 3000)) -> bytes:
    """A phone photo (JPEG, 12 MP) of the printed report lying on a desk: tilted, unevenly
    lit, noisy. Intake shrinks it to the model's ~1 MP budget before anything else."""
    w, h = size
    rng = np.random.default_rng(5)
    desk = np.clip(rng.normal(95, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    photo = Image.fromarray(desk)
    page = document_page(text_px=40).convert("RGB").resize((int(h * 0.95 / 1.414), int(h * 0.95)))
    page = page.rotate(2.0, expand=True, fillcolor=(95, 95, 95))
    photo.paste(page, ((w - page.width) // 2, (h - page.height) // 2))
    light = np.linspace(0.85, 1.05, w)[None, :, None]  # a lamp on the right
    arr = np.clip(np.asarray(photo, np.float32) * light + rng.normal(0, 4, (h, w, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def scanned_report_pdf() -> bytes:
    """An image-only PDF (a scan of the printed report): no text layer at all."""
    pdf = FPDF(unit="pt", format="A4")
    pdf.add_page()
    pdf.image(document_page(), x=0, y=0, w=pdf.w, h=pdf.h)
    return bytes(pdf.output())
