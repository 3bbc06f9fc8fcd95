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

PDF content is passed on as is (a lab report names the patient), so `deidentified` is False.
"""

from __future__ import annotations

import math
import re
import threading

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from loguru import logger
from PIL import Image

from .errors import CorruptFile, EncryptedPdf, ImageTooLarge, TooManyPages
from .images import budget_size, fit_within, megapixels, pixels_only
from .limits import IntakeLimits
from .types import Derived, IntakeImage

#: PDFium is not thread-safe and the app serves several clinicians from worker threads.
_PDFIUM_LOCK = threading.Lock()
#: Highest render resolution (200 DPI): small pages (labels, receipts) get no sharper than this.
MAX_RENDER_SCALE = 200 / 72
#: Control characters other than tab and newline, and Unicode non-characters PDFium uses.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffe\uffff]")
#: Pages smaller than this (points) are rendering artefacts, not content.
MIN_PAGE_POINTS = 1.0


def read_pdf(data: bytes, filename: str, limits: IntakeLimits) -> Derived:
    """Render and extract a PDF upload. Raises IntakeError subclasses."""
    with _PDFIUM_LOCK:
        pdf = _open(data, filename)
        try:
            return _read(pdf, filename, limits)
        except pdfium.PdfiumError as exc:  # a page or its text that PDFium cannot load
            raise CorruptFile(
                "Part of the PDF is damaged and cannot be read. Download or export it again.",
                filename=filename,
            ) from exc
        finally:
            pdf.close()


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


def _read(pdf: pdfium.PdfDocument, filename: str, limits: IntakeLimits) -> Derived:
    n_pages = len(pdf)
    if n_pages > limits.max_pdf_pages:
        raise TooManyPages(
            f"This PDF has {n_pages} pages; at most {limits.max_pdf_pages} are accepted. "
            "Upload only the pages that matter (e.g. print the relevant pages to PDF).",
            filename=filename,
        )
    notes: list[str] = []
    text, n_chars_total, truncated = _extract_text(pdf, n_pages, limits.max_text_chars)
    images: list[IntakeImage] = []
    for i in range(min(n_pages, limits.pdf_pages_rendered)):
        img = _render_page(pdf, i, filename, limits)
        if img is None:
            notes.append(f"page {i + 1} has no printable area and was skipped")
            continue
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
    notes.append("PDF content is passed on as is; it may name the patient")
    logger.info(
        "PDF intake: pages={} rendered={} text_chars={} truncated={}",
        n_pages,
        len(images),
        len(text_out or ""),
        truncated,
    )
    return Derived(
        images=images,
        mime="application/pdf",
        text=text_out,
        page_count=n_pages,
        deidentified=False,
        deid_report={
            "profile": "none",
            "reason": "PDF pages and text are passed on as they are (they may name the patient)",
        },
        notes=notes,
    )


def _extract_text(pdf: pdfium.PdfDocument, n_pages: int, cap: int) -> tuple[str, int, bool]:
    """(text of all pages with page markers, at most `cap` chars; chars in the PDF; cut?)."""
    parts: list[str] = []
    length = 0
    total = 0
    cut = False
    for i in range(n_pages):
        page = pdf[i]
        try:
            textpage = page.get_textpage()
            try:
                count = max(textpage.count_chars(), 0)
                total += count
                room = cap - length
                if count == 0:
                    continue
                if room <= 0:
                    cut = True
                    continue
                cut = cut or count > room
                chunk = _clean(textpage.get_text_range(0, min(count, room)))
            finally:
                textpage.close()
        finally:
            page.close()
        if chunk:
            piece = f"[page {i + 1}]\n{chunk}"
            parts.append(piece)
            length += len(piece) + 2
    text = "\n\n".join(parts)
    if len(text) > cap:
        text, cut = text[:cap], True
    return text, total, cut


def _clean(text: str) -> str:
    """Unix newlines, no control characters (PDFium emits CRLF and soft-hyphen markers)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text).strip()


def _render_page(
    pdf: pdfium.PdfDocument, index: int, filename: str, limits: IntakeLimits
) -> Image.Image | None:
    """Render page `index` to fit the pixel budget, whatever its declared size."""
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
        bitmap = page.render(scale=scale, fill_color=(255, 255, 255, 255), may_draw_forms=True)
        try:
            img = bitmap.to_pil().convert("RGB")
        finally:
            bitmap.close()
    finally:
        page.close()
    # Rounding can exceed the budget by a row or column; the resize also detaches the buffer.
    img = fit_within(img, limits.model_max_pixels)
    logger.debug(
        "PDF page rendered: {}x{} (target {}x{})", img.width, img.height, target_w, target_h
    )
    return pixels_only(img)


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
