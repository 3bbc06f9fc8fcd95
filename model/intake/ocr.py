"""Text burned into pixels: find it with OCR, keep technical labels, fill everything else black.

Why: ultrasound machines and secondary captures print the patient's name, ID, birth date and
hospital into the image (often without BurnedInAnnotation=YES in the header), clinicians
photograph lab reports, and scanned PDF pages have no text layer to check. Header
de-identification does not reach any of that; this module does, before anything is sent or
stored.

How:
1. rapidocr (PP-OCRv6 small text detection + recognition, Chinese and English, ONNX models
   shipped inside the `rapidocr` wheel and loaded from there by explicit path, so nothing is
   ever downloaded) finds text lines in the very image the model will receive.
2. The lines' text goes, all lines of an image together (a label in one box and its value in
   the next are read as one field), through the project's identifier recognizer
   (`model.intake.phi.find_identifiers`).
3. A line is KEPT only if it holds no identifier, was read with confidence, and every token in
   it is recognisably technical (`TECHNICAL_TOKENS`: measurements with units, acquisition
   settings, probe names, orientation markers, scale ticks...). Every other line (names, IDs,
   dates, institutions, and anything unrecognised or unreadable) is filled black, its box
   padded by `MASK_PAD_*`. When in doubt, mask.
4. The caller gets the masked images and a report of counts and kinds, never the text.

Cost, measured on the dev machine's 2 CPU cores (onnxruntime 1.32, rapidocr 3.10, warm
engine, OCR + recognizer + masking per image; CPU seconds, and wall seconds while other test
suites kept the load average at ~6): a 1024x768 ultrasound frame with a banner 0.6-1.0 CPU s
(1.2-2.2 s wall; 0.36 s wall when the machine was less loaded); the ~1 MP image of a 12 MP
phone photo of a printed page 0.7-0.9 (1.3-2.3); a scanned A4 page at the budget (842x1191)
~0.75 (1.1-1.3); a 512x512 CT slice 0.3 (0.4-0.55); a 1156x867 photo without text 0.5
(0.7-0.8). Small images cost more than their size says: the detector enlarges the shorter
side to 736 px (a 320x240 cine frame is detected at 981x736). Whole uploads (loaded machine):
a 4-frame US cine 3.6-6.3 s, an 8-page scanned PDF 6.9-12.8 s.
`tests/test_ocr_mask.py::test_ocr_cost` re-measures.
The first call in a process loads the models and warms ONNX Runtime (~2 s), and the
recognizer loads its word lists and presidio (`model.intake.phi`, 4-12 s): `warm_up()` and
`phi.load()` let the app pay that at start instead of on the first upload. Printed text down
to ~7 px high is found in a 1156x867 page.

One engine per process, created on first use (nothing happens at import time), used under a
lock: RapidOCR keeps per-call state on its detector, and ONNX Runtime already spreads one
image over all cores, so running two images at once would not finish either sooner.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger
from PIL import Image, ImageDraw

from .errors import DeidentificationFailed
from .types import IntakeImage

#: Longest side handed to the detector; larger images are shrunk for OCR and the boxes scaled
#: back. Images within the model's pixel budget (1280x28x28 ~ 1 MP) never reach it: only an
#: IntakeLimits with a raised `model_max_pixels` or a very long strip does. Bounds memory
#: and time per image (detection cost grows with the pixel count).
OCR_MAX_SIDE = 2000
#: OCR time one upload may spend (all its images: up to 8 PDF pages or 4 DICOM frames; waiting
#: for another upload's OCR not counted). An 8-page scan took 7-13 s on 2 loaded cores, so
#: a normal upload stays far below; past the cap the upload is refused rather than passed on
#: partly unchecked (the cap is checked between images: one image more may run past it).
OCR_MAX_SECONDS_PER_UPLOAD = 60.0
#: Recognition confidence below which a line is masked even if it reads like a technical
#: label: a misread name could look like "3.2 cm"; a clean printed label scores > 0.9.
KEEP_MIN_SCORE = 0.8
#: Padding around a masked line's box, so anti-aliased edges and descenders go too: the larger
#: of a few pixels and a fraction of the line's height.
MASK_PAD_MIN_PX = 3
MASK_PAD_FRACTION = 0.25
#: A "line" read as at most one character whose box is taller than this fraction of the image's
#: shorter side is a shape the detector took for a letter (a phantom's ring read as "O", a
#: round organ outline): one character names nobody, and masking it would black out the
#: diagnostic image. Printed annotations are a few percent of the image high.
SHAPE_MIN_HEIGHT_FRACTION = 0.2
#: What masked pixels become.
MASK_FILL = 0
#: The models shipped in the rapidocr wheel (PP-OCRv6 small: Chinese, English and digits).
DET_MODEL = "PP-OCRv6_det_small.onnx"
REC_MODEL = "PP-OCRv6_rec_small.onnx"
#: Kind reported for a masked line in which the recognizer found no identifier.
UNCLASSIFIED = "other text"

_NUMBER = r"[-+]?(?:\d{1,4}(?:[.,]\d{1,3})?|[.,]\d{1,3})"
_UNIT = (
    r"(?:mm|cm|m|km|um|µm|μm|ml|mL|cc|l|L|%|dB|db|Hz|kHz|KHz|MHz|mhz|bpm|BPM|fps|FPS|"
    r"s|ms|sec|min|cm/s|m/s|mm/s|cm²|cm2|mm²|mm2|cm³|cm3|ml/s|mmHg|°|deg|x|X|×|kPa|mW|W|mV|"
    r"g/dL|g/L|mg/dL|mg/L|mmol/L|µmol/L|μmol/L|umol/L|U/L|IU/L|mIU/L|mIU/mL|µIU/mL|uIU/mL|"
    r"ng/mL|ng/dL|pg/mL|pmol/L|mEq/L|fL|fl|pg|mm/h|/HPF|/LPF|"
    r"[x×]?10\^?(?:9|12|⁹|¹²)/L|厘米|毫米|次/分)"
)
#: Analytes a lab report lists (English abbreviations and names, Chinese names): a photographed
#: report is only useful to the model with its results, and none of these is a person's name.
_ANALYTE = (
    r"(?:Hb|HGB|Hgb|Haemoglobin|Hemoglobin|WBC|RBC|PLT|Platelets?|HCT|Hct|Haematocrit|"
    r"Hematocrit|MCV|MCH|MCHC|RDW|MPV|Neut|Neutrophils?|Lymph|Lymphocytes?|Mono|Monocytes?|"
    r"Eos|Eosinophils?|Baso|Basophils?|Glucose|GLU|Glu|HbA1c|A1c|Creatinine|CREA|Cr|Urea|BUN|"
    r"eGFR|ALT|AST|ALP|GGT|LDH|CK|Bilirubin|TBIL|DBIL|Albumin|ALB|Protein|TP|Sodium|Na|"
    r"Potassium|K|Chloride|Cl|Calcium|Ca|Magnesium|Mg|Phosphate|CRP|hsCRP|ESR|PCT|TSH|FT3|"
    r"FT4|T3|T4|Cholesterol|CHOL|TC|TG|Triglycerides|LDL|HDL|LDL-C|HDL-C|INR|PT|APTT|TT|"
    r"Fibrinogen|D-dimer|Ferritin|Iron|Troponin|cTnI|cTnT|BNP|NT-proBNP|Lactate|pH|pO2|pCO2|"
    r"HCO3|Uric|UA|Amylase|Lipase|PSA|CEA|AFP|CA125|CA19-9|"
    r"血红蛋白|白细胞|红细胞|血小板|红细胞压积|中性粒细胞|淋巴细胞|葡萄糖|血糖|糖化血红蛋白|"
    r"肌酐|尿素|尿素氮|尿酸|谷丙转氨酶|谷草转氨酶|碱性磷酸酶|总胆红素|直接胆红素|白蛋白|"
    r"总蛋白|钾|钠|氯|钙|镁|磷|C反应蛋白|血沉|降钙素原|总胆固醇|甘油三酯|低密度脂蛋白|"
    r"高密度脂蛋白|凝血酶原时间|铁蛋白|肌钙蛋白)"
)  # fmt: skip
#: Words of a result table: column heads, flags, qualitative results.
_LAB_WORD = (
    r"(?:ref|Ref|REF|Reference|range|Range|Result|Results|Unit|Units|Flag|Value|High|Low|"
    r"Normal|Neg|Pos|Negative|Positive|Trace|参考范围|参考值|结果|单位|项目|提示|阴性|阳性|"
    r"偏高|偏低|正常)"
)  # fmt: skip
_LABEL = (
    r"(?:HR|FR|Frq|Freq|Gn|Gain|DR|Dep|Depth|PRF|WF|MI|TIS|TIB|TIC|TI|Pwr|Power|AO|CF|CFM|PW|"
    r"PD|PDI|CW|Angle|SV|Dist|Distance|Area|Vol|Volume|Circ|EF|FS|LVEF|LVIDd|LVIDs|IVSd|LVPWd|"
    r"Vmax|Vmean|PG|MG|VTI|RI|PI|S/D|E/A|TAPSE|HC|AC|BPD|FL|CRL|GA|EFW|Dyn|Comp|Persist|Res|"
    r"Gen|Pen|Harm|THI|SRI|Focus|Zoom|Map|Scale|Speed|Rate|Frame|Probe|probe|Transducer|"
    r"Mode|Scan|Cine|Frz|Freeze|Fz|Live|"
    r"深度|增益|频率|帧率|心率|探头|动态范围|测量|距离|面积|体积)"
)  # fmt: skip
_ORIENTATION = (
    r"(?:L|R|A|P|S|I|H|F|LT|RT|LEFT|RIGHT|Left|Right|ANT|POST|SUP|INF|MED|LAT|PROX|DIST|"
    r"TRV|TRANS|SAG|LONG|COR|AX|AXIAL|AP|PA|LAO|RAO|LPO|RPO|左|右|前|后|纵切|横切|矢状|冠状)"
)  # fmt: skip
_MODE = r"(?:2D|3D|4D|B|M|M-mode|B-mode|Color|Colour|Doppler|Elasto|彩色|多普勒)"
_ANATOMY = (
    r"(?:LIVER|GB|CBD|KIDNEY|RK|LK|SPLEEN|PANC|PANCREAS|AORTA|IVC|THYROID|BLADDER|UTERUS|"
    r"OVARY|ROV|LOV|PROSTATE|TESTIS|CCA|ICA|ECA|HEART|LV|RV|LA|RA|MV|AV|TV|LYMPH|NODE|"
    r"BREAST|CAROTID|NECK|ABD|ABDOMEN|PELVIS|OB|GYN|MSK|CARDIAC|VASC|"
    r"肝|胆|脾|胰|肾|甲状腺|膀胱|子宫|卵巢|前列腺|心脏)"
)  # fmt: skip
#: A line is kept only if each of its whitespace-separated tokens fully matches one of these
#: (case as written; brackets and trailing separators stripped first). The reason is beside
#: each; anything not listed is masked.
TECHNICAL_TOKENS: dict[str, tuple[re.Pattern[str], str]] = {
    "measurement": (
        re.compile(rf"{_NUMBER}(?:{_UNIT})?"),
        "measurements and scale-bar ticks ('3.2cm', '72', '-3dB'); at most 4 integer digits "
        "(IDs are longer) and no '-' or '/' between numbers (dates need them)",
    ),
    "unit": (re.compile(_UNIT), "a unit OCR read apart from its number ('3.2 cm')"),
    "setting": (
        re.compile(
            rf"(?i:{_LABEL})(?:[:=<>≤≥]?{_NUMBER}(?:{_UNIT})?)?"
            rf"|[A-Z][:=<>≤≥]{_NUMBER}(?:{_UNIT})?"
        ),
        "acquisition settings and measurement names the model needs ('HR', 'Gain:50%', "
        "'PRF', and one capital letter with a value: 'D=16cm', 'G:50'); a closed list, so "
        "no word of a name can pass as one",
    ),
    "probe": (
        re.compile(r"\d{0,2}[A-Z]{1,3}\d{1,2}(?:-\d{1,2})?[A-Z]?"),
        "transducer names ('5C1', 'C5-1', 'L12-5', '9L4', 'EC9-5'): short letter-digit codes",
    ),
    "orientation": (
        re.compile(_ORIENTATION),
        "L/R markers, orientation letters and plane names ('L', 'RT', 'SAG', 'TRANS', '左')",
    ),
    "mode": (re.compile(_MODE), "imaging modes ('2D', 'M', 'Color')"),
    "anatomy": (
        re.compile(_ANATOMY, re.IGNORECASE),
        "organ and vessel labels a sonographer types ('RT KIDNEY LONG', 'CCA')",
    ),
    "analyte": (
        re.compile(rf"{_ANALYTE}(?:[:：=]?{_NUMBER}(?:{_UNIT})?)?"),
        "lab analytes, alone or with their value ('Hemoglobin', 'WBC', '血红蛋白135g/L'): a "
        "closed list of test names",
    ),
    "lab_word": (re.compile(_LAB_WORD), "result-table heads and flags ('ref', 'Result', '阴性')"),
    "range": (
        re.compile(
            r"(?:\d{1,4}\.\d{1,3}[-–~]\d{1,4}(?:\.\d{1,3})?|\d{1,4}[-–~]\d{1,4}\.\d{1,3}"
            rf"|\d{{3,4}}[-–~]\d{{3,4}})(?:{_UNIT})?"
        ),
        "reference ranges ('12.0-15.5', '135-145'): a decimal point, or 3-4 digits on both "
        "sides; '03-14' (month-day) and '1961-03' are not ranges",
    ),
    "symbol": (
        re.compile(r"[-+*/|:=.·•×→←↑↓<>#~_]+"),
        "separators, arrows and cursor marks carry no identity",
    ),
}
_BARE_NUMBER = re.compile(_NUMBER)
#: Stripped from both ends of a token before matching: "(3.2 cm)", "HR:", "L,".
_TOKEN_EDGES = "()[]{},;:：，。、"


@dataclass(frozen=True)
class TextLine:
    """One line of text OCR found: its box in image pixels and what it reads (never log it)."""

    quad: tuple[tuple[float, float], ...]  # four corners, clockwise from top-left
    text: str
    score: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        xs, ys = [p[0] for p in self.quad], [p[1] for p in self.quad]
        return min(xs), min(ys), max(xs), max(ys)


@dataclass
class MaskSummary:
    """What OCR found and masked in the images of one upload: counts and kinds only."""

    images_checked: int = 0
    lines_found: int = 0
    lines_masked: int = 0
    lines_kept: int = 0
    shapes_ignored: int = 0
    masked_kinds: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def report(self) -> dict[str, Any]:
        """For the intake result's deid report (JSON-able; no text)."""
        return {
            "engine": engine_name(),
            "images_checked": self.images_checked,
            "text_lines_found": self.lines_found,
            "text_lines_masked": self.lines_masked,
            "technical_lines_kept": self.lines_kept,
            "shapes_ignored": self.shapes_ignored,
            "masked_kinds": dict(sorted(self.masked_kinds.items())),
            "seconds": round(self.seconds, 2),
        }

    def note(self) -> str:
        """The line the clinician sees (English, then Chinese)."""
        kept = f"; {self.lines_kept} technical label(s) kept" if self.lines_kept else ""
        kept_zh = f"，保留 {self.lines_kept} 处技术标注" if self.lines_kept else ""
        if not self.lines_masked:
            return (
                f"burned-in text checked by OCR: nothing identifying found{kept} / "
                f"已用 OCR 检查图像中的文字：未发现身份信息{kept_zh}"
            )
        kinds = ", ".join(sorted(self.masked_kinds))
        return (
            f"burned-in text found and masked: {self.lines_masked} text region(s) blacked out "
            f"({kinds}){kept} / 图像中发现文字并已遮盖：{self.lines_masked} 处已涂黑{kept_zh}"
        )


class OcrEngine:
    """The process's RapidOCR instance, built on first use, used by one thread at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ocr: Any = None

    def _load(self) -> Any:
        from rapidocr import RapidOCR  # heavy (OpenCV, ONNX Runtime): only when first needed

        models = model_dir()
        params = {
            "Global.log_level": "error",  # "no text detected" is a normal answer, not a warning
            # Burned-in labels and photographed pages are upright or at 90 degrees (tall boxes
            # are turned by the recognizer); a line upside down reads as garbage and is masked,
            # so the 180-degree classifier would only cost time.
            "Global.use_cls": False,
            "Global.max_side_len": OCR_MAX_SIDE,
            "Det.model_path": str(models / DET_MODEL),
            "Rec.model_path": str(models / REC_MODEL),
        }
        for name in (DET_MODEL, REC_MODEL):
            if not (models / name).is_file():
                raise FileNotFoundError(f"rapidocr model {name} is not in its wheel")
        return RapidOCR(params=params)

    def read(self, img: Image.Image) -> tuple[list[TextLine], float]:
        """Every text line detected in `img`, readable or not (unreadable ones have text ''),
        and the seconds OCR worked on it (waiting for another thread's image not counted)."""
        from rapidocr.utils.process_img import map_boxes_to_original

        with self._lock:
            started = time.perf_counter()
            if self._ocr is None:
                self._ocr = self._load()
            ocr = self._ocr
            # RapidOCR's own __call__ drops lines read with low confidence or as empty text;
            # for masking those matter most, so run its steps and keep every detected box.
            bgr = ocr.load_img(img)
            pre, record = ocr.preprocess_img(bgr)
            det, _, rec, _ = ocr.run_ocr_steps(pre, record)
            if det.boxes is None or len(det.boxes) == 0:
                return [], time.perf_counter() - started
            boxes = map_boxes_to_original(
                np.asarray(det.boxes, dtype=np.float64), record, img.height, img.width
            )
            busy = time.perf_counter() - started
        texts = list(rec.txts) if rec.txts is not None else []
        scores = list(rec.scores) if rec.scores is not None else []
        lines = []
        for i, quad in enumerate(boxes):
            text = texts[i] if i < len(texts) else ""  # recognition failed: unreadable
            score = float(scores[i]) if i < len(scores) else 0.0
            lines.append(TextLine(tuple((float(x), float(y)) for x, y in quad), text, score))
        return lines, busy


_ENGINE = OcrEngine()


def model_dir() -> Path:
    """Where the rapidocr wheel keeps its ONNX models."""
    import rapidocr

    return Path(rapidocr.__file__).parent / "models"


def engine_name() -> str:
    try:
        return f"rapidocr {version('rapidocr')} (PP-OCRv6 small, zh+en)"
    except PackageNotFoundError:
        return "rapidocr (PP-OCRv6 small, zh+en)"


def warm_up() -> None:
    """Load the models and run them once (~2 s on 2 cores), e.g. when the app starts."""
    read_lines(Image.new("L", (64, 32), 255))


def read_lines(img: Image.Image) -> list[TextLine]:
    """OCR one image (RGB or L): every detected line with its text and confidence."""
    return _ENGINE.read(img)[0]


def technical_rule(token: str) -> str | None:
    """The name of the `TECHNICAL_TOKENS` rule a token passes, or None.

    >>> technical_rule("3.2cm"), technical_rule("5C1"), technical_rule("00482913")
    ('measurement', 'probe', None)
    """
    token = token.strip(_TOKEN_EDGES)
    if not token:
        return "symbol"
    for name, (pattern, _) in TECHNICAL_TOKENS.items():
        if pattern.fullmatch(token):
            return name
    return None


def is_technical(text: str) -> bool:
    """Every token of `text` is a technical label, there is at least one, and no two bare
    numbers stand side by side: each may be a scale tick, but "0048 2913", "555 1234" and
    "14 03 1961" are an ID, a phone number and a date split by spaces.

    >>> is_technical("HR 72 bpm"), is_technical("ID 00482913"), is_technical("0048 2913")
    (True, False, False)
    """
    tokens = [t.strip(_TOKEN_EDGES) for t in text.split()]
    if not tokens or any(technical_rule(t) is None for t in tokens):
        return False
    bare = [bool(_BARE_NUMBER.fullmatch(t)) for t in tokens]
    return not any(a and b for a, b in zip(bare, bare[1:], strict=False))


def _identifier_kinds(lines: list[TextLine]) -> list[set[str]]:
    """For each line, the kinds of identifiers the recognizer finds in it, reading all lines
    of the image as one text (one line each) so that labels and values in separate boxes
    are seen together."""
    from .phi import find_identifiers  # lazy: the recognizer builds its patterns on first use

    starts, parts, at = [], [], 0
    for line in lines:
        starts.append(at)
        parts.append(line.text)
        at += len(line.text) + 1
    joined = "\n".join(parts)
    kinds: list[set[str]] = [set() for _ in lines]
    for ident in find_identifiers(joined):
        for i, line in enumerate(lines):
            s, e = starts[i], starts[i] + len(line.text)
            if ident.start < e and ident.end > s:
                kinds[i].add(ident.kind)
    return kinds


def mask_image(img: Image.Image) -> tuple[Image.Image, MaskSummary]:
    """`img` with every non-technical text line filled black (`img` itself if none was), and
    what was done."""
    lines, busy = _ENGINE.read(img)
    started = time.perf_counter()  # from here: the recognizer and the drawing
    summary = MaskSummary(images_checked=1, lines_found=len(lines))
    out = img
    if lines:
        kinds = _identifier_kinds(lines)
        out = img.copy()
        draw = ImageDraw.Draw(out)
        fill = MASK_FILL if out.mode == "L" else (MASK_FILL,) * 3
        for line, found in zip(lines, kinds, strict=True):
            x0, y0, x1, y1 = line.box
            if len(line.text.strip()) <= 1 and (y1 - y0) >= SHAPE_MIN_HEIGHT_FRACTION * min(
                img.size
            ):
                summary.shapes_ignored += 1
                continue
            if not found and line.score >= KEEP_MIN_SCORE and is_technical(line.text):
                summary.lines_kept += 1
                continue
            summary.lines_masked += 1
            summary.masked_kinds.update(found or {UNCLASSIFIED})
            pad = max(MASK_PAD_MIN_PX, MASK_PAD_FRACTION * (y1 - y0))
            draw.rectangle(
                (max(0, x0 - pad), max(0, y0 - pad),
                 min(out.width - 1, x1 + pad), min(out.height - 1, y1 + pad)),
                fill=fill,
            )  # fmt: skip
    summary.seconds = busy + time.perf_counter() - started
    return (out if summary.lines_masked else img), summary


def mask_images(
    images: list[IntakeImage], filename: str, *, max_seconds: float = OCR_MAX_SECONDS_PER_UPLOAD
) -> tuple[list[IntakeImage], MaskSummary]:
    """Mask burned-in text in the images of one upload (same labels, same sizes).

    Raises `DeidentificationFailed` if OCR cannot run or the upload's OCR time passes
    `max_seconds`: an image that could not be checked is never passed on.
    """
    total = MaskSummary()
    out: list[IntakeImage] = []
    for im in images:
        if total.seconds > max_seconds:
            logger.warning("burned-in text check stopped after {:.1f} s", total.seconds)
            raise DeidentificationFailed(
                f"Checking the images for printed patient details took over {max_seconds:.0f} "
                "seconds, so the file was not used. Upload fewer pages or frames.",
                filename=filename,
            )
        try:
            masked, summary = mask_image(im.image)
        except Exception as exc:  # ONNX Runtime, OpenCV, the recognizer: refuse, never pass on
            # The type only: a traceback with variables (loguru's diagnose) would quote OCR text.
            logger.error("burned-in text check failed: {}", type(exc).__name__)
            raise DeidentificationFailed(
                "Printed text in the image could not be checked for patient details, so the "
                "file was not used. Try again; if it keeps failing, upload an anonymised copy.",
                filename=filename,
            ) from exc
        # unchanged: keep it whole (with what else it carries); masked: a new image, alone
        out.append(im if masked is im.image else IntakeImage(masked, im.label))
        total.images_checked += 1
        total.lines_found += summary.lines_found
        total.lines_masked += summary.lines_masked
        total.lines_kept += summary.lines_kept
        total.shapes_ignored += summary.shapes_ignored
        total.masked_kinds.update(summary.masked_kinds)
        total.seconds += summary.seconds
    logger.info(
        "burned-in text: images={} lines={} masked={} kept={} in {:.2f} s",
        total.images_checked,
        total.lines_found,
        total.lines_masked,
        total.lines_kept,
        total.seconds,
    )
    return out, total
