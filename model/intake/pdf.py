"""PDF documents (lab reports, discharge letters, scans) -> page images and the text layer.

With pypdfium2 (PDFium, the engine of Chrome's viewer):
- password-protected PDFs are refused (we never guess or strip passwords);
- the page count is checked against `max_pdf_pages` before anything is rendered;
- the first `pdf_pages_rendered` pages are rendered at the scale that fits the model's pixel
  budget, computed from the page size, so a page with a gigantic MediaBox renders small
  instead of allocating gigabytes; embedded images over `max_image_pixels` are refused before
  rendering (PDFium would decode them in full);
- the text layer of all pages is extracted, at most `max_text_chars` characters (counted
  before extraction, so a page with millions of characters costs no more than the cap);
  a PDF without any text is noted as a scan: the model then reads only the page images.

Patient identifiers in the text layer (`pdf_deid`: labelled fields such as "Patient:" or
"DOB:", e-mail, phone, SSN, dates, and every echo of a name found) are replaced in the text and
painted black on the page images. A rendered page without a text layer that shows an image (a
scan or a photo) is read by OCR instead, and every printed line on it that is not a technical
label is painted black (`model.intake.ocr`), after PDFium's lock is released. Measured on 2
cores (loaded), warm engine: a scanned A4 page rendered at the model budget (842x1191) ~0.75
CPU s (1.1-1.3 s wall); an 8-page scan 6.9-12.8 s for the whole intake.
"""

from __future__ import annotations

import math
import re
import threading

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from loguru import logger
from PIL import Image, ImageDraw

from .errors import (
    CorruptFile,
    DeidentificationFailed,
    EncryptedPdf,
    ImageTooLarge,
    TooManyPages,
)
from .images import budget_size, fit_within, megapixels, pixels_only
from .limits import IntakeLimits
from .ocr import mask_images
from .pdf_deid import find_identifiers, redact
from .types import Derived, IntakeImage

#: PDFium is not thread-safe and the app serves several clinicians from worker threads.
_PDFIUM_LOCK = threading.Lock()
#: Highest render resolution (200 DPI): small pages (labels, receipts) get no sharper than this.
MAX_RENDER_SCALE = 200 / 72
#: Control characters other than tab and newline, and Unicode non-characters PDFium uses.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffe\uffff]")
#: Pages smaller than this (points) are rendering artefacts, not content.
MIN_PAGE_POINTS = 1.0
#: A rendered page is checked for identifiers in full; a page with more text than this is not
#: a lab report or letter, and is refused rather than passed on unchecked.
MAX_CHECKED_CHARS_PER_PAGE = 50_000
PROFILE = "PulseMind PDF rules: labelled fields, e-mail, phone, SSN, dates, and their echoes"


def read_pdf(data: bytes, filename: str, limits: IntakeLimits) -> Derived:
    """Render and extract a PDF upload. Raises IntakeError subclasses."""
    with _PDFIUM_LOCK:
        pdf = _open(data, filename)
        try:
            derived, scans = _read(pdf, filename, limits)
        except pdfium.PdfiumError as exc:  # a page or its text that PDFium cannot load
            raise CorruptFile(
                "Part of the PDF is damaged and cannot be read. Download or export it again.",
                filename=filename,
            ) from exc
        finally:
            pdf.close()
    if scans:  # OCR outside the lock: other uploads' PDFs need not wait for it
        masked, burned = mask_images([derived.images[k] for k in scans], filename)
        for k, im in zip(scans, masked, strict=True):
            derived.images[k] = im
        derived.deid_report["burned_in_text"] = burned.report()
        derived.burned_in_annotation = burned.lines_masked > 0
        derived.notes.append(burned.note())
    return derived


def _open(data: bytes, filename: str) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if exc.err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise EncryptedPdf(
                "The PDF is password-protected. Open it, save or print an unprotected copy "
                '("Save as PDF"), and upload that.',
                filename=filename,
            ) from exc
        raise CorruptFile(
            "The PDF is damaged or incomplete and cannot be opened. Download or export it again.",
            filename=filename,
        ) from exc


def _read(
    pdf: pdfium.PdfDocument, filename: str, limits: IntakeLimits
) -> tuple[Derived, list[int]]:
    """The PDF's pages and text, and the positions in `images` of pages without a text layer
    that show an image (to be OCR'd)."""
    n_pages = len(pdf)
    if n_pages > limits.max_pdf_pages:
        raise TooManyPages(
            f"This PDF has {n_pages} pages; at most {limits.max_pdf_pages} are accepted. "
            "Upload only the pages that matter (e.g. print the relevant pages to PDF).",
            filename=filename,
        )
    notes: list[str] = []
    n_render = min(n_pages, limits.pdf_pages_rendered)
    pages, n_chars_total = _page_texts(pdf, n_pages, n_render, limits.max_text_chars, filename)
    found = find_identifiers(pages)
    text, truncated = _document_text(pages, found.spans, limits.max_text_chars)
    truncated = truncated or n_chars_total > sum(len(t) for t in pages.values())
    images: list[IntakeImage] = []
    # pages that show something without text to check: a scan, a photo (blank pages do not)
    scanned = [
        i + 1 for i in range(n_render) if not pages.get(i, "").strip() and _has_image(pdf, i)
    ]
    scans: list[int] = []  # positions in `images` of the scanned pages
    for i in range(n_render):
        img = _render_page(pdf, i, filename, limits, found.spans.get(i, []))
        if img is None:
            notes.append(f"page {i + 1} has no printable area and was skipped")
            continue
        if i + 1 in scanned:
            scans.append(len(images))
        images.append(IntakeImage(img, f"page {i + 1}"))
    if n_pages > limits.pdf_pages_rendered:
        notes.append(
            f"{limits.pdf_pages_rendered} of {n_pages} pages rendered as images; "
            "text taken from all pages"
        )
    if not text.strip():
        notes.append(
            "no text layer: this looks like a scanned document; the model reads the page "
            "images only"
        )
        text_out: str | None = None
    else:
        text_out = text
        if truncated:
            notes.append(
                f"text truncated at {limits.max_text_chars} characters (of about {n_chars_total})"
            )
    removed = sum(found.counts.values())
    if removed:
        notes.append(f"{removed} patient identifier(s) removed from the text and page images")
    if scanned:
        notes.append(
            f"page(s) {', '.join(map(str, scanned))} have no text layer (a scan or photo), so "
            "they were read by OCR"
        )
    logger.info(
        "PDF intake: pages={} rendered={} text_chars={} truncated={} identifiers_removed={}",
        n_pages,
        len(images),
        len(text_out or ""),
        truncated,
        removed,
    )
    derived = Derived(
        images=images,
        mime="application/pdf",
        text=text_out,
        page_count=n_pages,
        deidentified=True,  # text layer checked; pages without one are masked by OCR
        deid_report={
            "profile": PROFILE,
            "removed": dict(sorted(found.counts.items())),
            "pages_without_text": scanned,
        },
        notes=notes,
        identifying_tokens=frozenset(found.tokens),
    )
    return derived, scans


def _page_texts(
    pdf: pdfium.PdfDocument, n_pages: int, n_render: int, cap: int, filename: str
) -> tuple[dict[int, str], int]:
    """({page: its text, char for char as PDFium indexes it}, chars in the PDF).

    Rendered pages are read whole (their images are redacted from these indices); the others
    only while the text budget `cap` lasts.
    """
    pages: dict[int, str] = {}
    used = total = 0
    for i in range(n_pages):
        page = pdf[i]
        try:
            textpage = page.get_textpage()
            try:
                count = max(textpage.count_chars(), 0)
                total += count
                if i < n_render:
                    if count > MAX_CHECKED_CHARS_PER_PAGE:
                        raise DeidentificationFailed(
                            f"Page {i + 1} holds {count} characters, too many to check for "
                            "patient identifiers. Upload only the pages that matter.",
                            filename=filename,
                        )
                    need = count
                else:
                    need = min(count, cap - used)
                if need <= 0:
                    continue
                pages[i] = "".join(_char(textpage, k) for k in range(need))
                used += need
            finally:
                textpage.close()
        finally:
            page.close()
    return pages, total


def _char(textpage, index: int) -> str:
    """One char of the page (PDFium's own index), or NUL for what is not a character."""
    code = pdfium_c.FPDFText_GetUnicode(textpage.raw, index)
    return "\x00" if not code or 0xD800 <= code <= 0xDFFF or code > 0x10FFFF else chr(code)


def _document_text(
    pages: dict[int, str], spans: dict[int, list[tuple[int, int]]], cap: int
) -> tuple[str, bool]:
    """The pages' redacted, cleaned text with page markers, at most `cap` chars; cut?"""
    parts = []
    for i, raw in sorted(pages.items()):
        chunk = _clean(redact(raw, spans.get(i, [])))
        if chunk:
            parts.append(f"[page {i + 1}]\n{chunk}")
    text = "\n\n".join(parts)
    return (text[:cap], True) if len(text) > cap else (text, False)


def _clean(text: str) -> str:
    """Unix newlines, no control characters (PDFium emits CRLF and soft-hyphen markers)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text).strip()


def _render_page(
    pdf: pdfium.PdfDocument,
    index: int,
    filename: str,
    limits: IntakeLimits,
    redact_spans: list[tuple[int, int]],
) -> Image.Image | None:
    """Render page `index` to fit the pixel budget, whatever its declared size, with the
    characters of `redact_spans` (indices into its text) painted over in black."""
    w_pt, h_pt = pdf.get_page_size(index)
    if not (math.isfinite(w_pt) and math.isfinite(h_pt)) or min(w_pt, h_pt) < MIN_PAGE_POINTS:
        return None
    scale = min(MAX_RENDER_SCALE, math.sqrt(limits.model_max_pixels / (w_pt * h_pt)))
    target_w, target_h = budget_size(
        math.ceil(w_pt * scale), math.ceil(h_pt * scale), limits.model_max_pixels
    )
    page = pdf[index]
    try:
        _check_embedded_images(page, index, filename, limits)
        boxes = _char_boxes(page, redact_spans, filename)
        bitmap = page.render(scale=scale, fill_color=(255, 255, 255, 255), may_draw_forms=True)
        try:
            img = bitmap.to_pil().convert("RGB")
        finally:
            bitmap.close()
        if boxes:
            left, _, _, top = page.get_bbox()  # media and crop box, inherited ones included
            draw = ImageDraw.Draw(img)
            for x0, y0, x1, y1 in boxes:  # PDF points, y up -> pixels, y down; 1 px margin
                draw.rectangle(
                    ((x0 - left) * scale - 1, (top - y1) * scale - 1,
                     (x1 - left) * scale + 1, (top - y0) * scale + 1),
                    fill=(0, 0, 0),
                )  # fmt: skip
    finally:
        page.close()
    # Rounding can exceed the budget by a row or column; the resize also detaches the buffer.
    img = fit_within(img, limits.model_max_pixels)
    logger.debug(
        "PDF page rendered: {}x{} (target {}x{})", img.width, img.height, target_w, target_h
    )
    return pixels_only(img)


def _char_boxes(page, spans: list[tuple[int, int]], filename: str) -> list[tuple[float, ...]]:
    """Page-space boxes (left, bottom, right, top) of the characters in `spans`."""
    if not spans:
        return []
    if page.get_rotation() % 360:
        raise DeidentificationFailed(
            "A rotated page of this PDF names the patient, and it cannot be masked reliably. "
            "Print the document to a new PDF (pages upright) and upload that.",
            filename=filename,
        )
    textpage = page.get_textpage()
    try:
        boxes = []
        for s, e in spans:
            for k in range(s, e):
                left, bottom, right, top = textpage.get_charbox(k, loose=True)
                if right > left and top > bottom:
                    boxes.append((left, bottom, right, top))
        return boxes
    finally:
        textpage.close()


def _has_image(pdf: pdfium.PdfDocument, index: int) -> bool:
    page = pdf[index]
    try:
        return (
            next(page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=4), None)
            is not None
        )
    finally:
        page.close()


def _check_embedded_images(page, index: int, filename: str, limits: IntakeLimits) -> None:
    """Refuse a page holding an image that would decode past `max_image_pixels`."""
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=4):
        try:
            w, h = obj.get_px_size()
        except pdfium.PdfiumError:  # an image without a readable size: PDFium will skip it
            continue
        if w * h > limits.max_image_pixels:
            raise ImageTooLarge(
                f"Page {index + 1} of this PDF holds an image of {w} x {h} pixels "
                f"({megapixels(w, h)}); at most {megapixels(limits.max_image_pixels, 1)} "
                "can be opened safely. Upload a smaller scan.",
                filename=filename,
            )
