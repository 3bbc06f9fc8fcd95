"""Attachment cards: what intake did to each file of a message, shown in the chat.

A clinician who uploads a DICOM or a lab report should see, where the file appears, what the
model was given: that the file was de-identified and what was taken out (field names and
counts, never values), that its pixels carry burned-in text (in a warning colour, with what to
do), how many frames of a cine or pages of a PDF were sent, how much text was read. All of it
comes from the stored attachment (`AttachmentRecord`: its de-identification report, images and
text), so a reopened consultation shows the same cards.

    card_html(attachment)      # one card: HTML the Chatbot renders (every text escaped)

Cards are one line of HTML (a Markdown HTML block ends at a blank line) in the request's
language (`app.i18n.t`). Styles: `.pm-card*` in assets/app.css.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

from app.i18n import t
from storage import AttachmentKind
from storage.records import AttachmentRecord

#: Thumbnails per attachment (a PDF's first pages, a DICOM's kept frames), side by side.
THUMBNAILS_PER_ATTACHMENT = 4
#: Field names listed (collapsed) under a DICOM card before "+n": a de-identified CT lists
#: 30-40; the full list is in the stored report.
FIELDS_SHOWN = 60
#: How `model.intake.dicom` labels a kept frame of a multi-frame file ("frame 12 of 40").
FRAME_LABEL = re.compile(r"^frame (\d+) of (\d+)$")


def thumbnails_html(att: AttachmentRecord) -> str:
    """The attachment's first images in one row, each a link to the full-size PNG."""
    links = []
    for img in att.images[:THUMBNAILS_PER_ATTACHMENT]:
        src = f"/attachments/{att.id}/{img.position}.png"
        alt = escape(f"{att.original_name}, {img.label}")
        links.append(f'<a href="{src}" target="_blank" rel="noopener"><img src="{src}" '
                     f'alt="{alt}" title="{alt}" loading="lazy"></a>')  # fmt: skip
    return f'<div class="pm-thumbs">{"".join(links)}</div>' if links else ""


def facts(att: AttachmentRecord) -> list[str]:
    """The card's lines (plain text, not escaped): de-identification, frames, pages, text."""
    report = att.deid_report or {}
    lines = [_deidentified(att, report)]
    masked = _masked(report)
    if masked:
        lines.append(t("card.masked", n=masked))
    frames = frames_sent(att)
    if frames is not None:
        lines.append(t("card.frames", kept=frames[0], total=frames[1]))
    if att.kind is AttachmentKind.PDF and att.page_count:
        lines.append(t("card.pages", rendered=len(att.images), total=att.page_count))
    if att.kind is AttachmentKind.PDF and att.text:
        lines.append(t("card.text", chars=f"{len(att.text):,}"))
    return lines


def frames_sent(att: AttachmentRecord) -> tuple[int, int] | None:
    """(frames sent, frames in the file) for a multi-frame DICOM, else None."""
    if att.kind is not AttachmentKind.DICOM or not att.images:
        return None
    found = FRAME_LABEL.match(att.images[0].label)
    return (len(att.images), int(found.group(2))) if found else None


def removed_fields(att: AttachmentRecord) -> list[str]:
    """Names of the DICOM header fields replaced or removed (names, never values)."""
    report = att.deid_report or {}
    names = [*_strings(report.get("replaced")), *_strings(report.get("removed"))]
    return sorted(set(names))


def card_html(att: AttachmentRecord) -> str:
    """One attachment as a card: name, kind, what intake did, a warning, thumbnails."""
    kind = t(f"card.kind.{att.kind.value}")
    head = (f'<div class="pm-card-head"><span class="pm-card-name">📎 {escape(att.original_name)}'
            f'</span> <span class="pm-card-kind">{escape(kind)}</span></div>')  # fmt: skip
    items = "".join(f"<li>{escape(line)}</li>" for line in facts(att))
    fields = removed_fields(att)
    detail = ""
    if fields:
        shown = ", ".join(fields[:FIELDS_SHOWN])
        more = f" +{len(fields) - FIELDS_SHOWN}" if len(fields) > FIELDS_SHOWN else ""
        detail = (f'<details class="pm-card-fields"><summary>{escape(t("card.fields"))}</summary>'
                  f"{escape(shown + more)}</details>")  # fmt: skip
    warn = ""
    if att.burned_in_annotation:
        warn = f'<p class="pm-card-warn" role="note">⚠️ {escape(t("card.burned_in"))}</p>'
    return (f'<div class="pm-card" data-kind="{att.kind.value}">{head}'
            f'<ul class="pm-card-facts">{items}</ul>{detail}{warn}{thumbnails_html(att)}</div>')  # fmt: skip


def _deidentified(att: AttachmentRecord, report: dict[str, Any]) -> str:
    if not att.deidentified:
        return t("card.deid.no")
    if att.kind is AttachmentKind.DICOM:
        return t("card.deid.dicom", replaced=len(_strings(report.get("replaced"))),
                 removed=len(_strings(report.get("removed"))),
                 private=_count(report.get("private_tags_removed")))  # fmt: skip
    if att.kind is AttachmentKind.PDF:
        counts = report.get("removed") if isinstance(report.get("removed"), dict) else {}
        found = [(str(k), _count(v)) for k, v in sorted(counts.items()) if _count(v)]
        if not found:
            return t("card.deid.pdf_none")
        return t("card.deid.pdf", counts=", ".join(f"{k} ×{n}" for k, n in found))
    removed = _strings(report.get("removed"))
    return t("card.deid.image", fields=", ".join(removed)) if removed else t("card.deid.image_none")


def _masked(report: dict[str, Any]) -> int:
    burned = report.get("burned_in_text")
    return _count(burned.get("text_lines_masked")) if isinstance(burned, dict) else 0


def _strings(value: object) -> list[str]:
    return [str(v) for v in value if v] if isinstance(value, list) else []


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
