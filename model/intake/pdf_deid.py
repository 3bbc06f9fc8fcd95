"""Patient identifiers in a PDF's text: find them, so that intake can remove them from the text
and paint them out of the page images.

Lab reports, discharge letters and prescriptions print who the patient is. The rules cover
what such documents print of the HIPAA Safe Harbor identifiers:

- labelled fields ("Patient:", "Name:", "DOB:", "MRN:", "Address:", "Phone:", "Insurance
  No:" ...): the value after the label, up to the end of the line or the next label;
- anywhere: e-mail addresses, phone numbers, social security numbers and full dates;
- then every other occurrence of a name or number found in a labelled field ("Dear Jane",
  "Doe, J."), as whole words.

Found values are returned as `identifying_tokens` for intake's final leak check; they are
never logged. A page without a text layer (a scan) cannot be checked this way: intake says so.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from .deid import as_token, token_pattern

#: What replaces a value in the text; the page images get a black box instead.
REDACTED = "[REDACTED]"

_NAME_LABELS = (
    r"patient(?:'s)?(?:\s+(?:full\s+)?name)?", r"(?:full\s+|first\s+|last\s+|given\s+|family\s+)?name",
    r"surname", r"next\s+of\s+kin", r"guardian", r"mother", r"father", r"spouse",
)  # fmt: skip
_ID_LABELS = (
    r"mrn", r"medical\s+record(?:\s+(?:number|no\.?|#))?", r"(?:patient|hospital|record|visit|"
    r"encounter|member|insurance|policy|account|health(?:\s+card)?|nhs|chart)\s*(?:id|number|no\.?|#)",
    r"ssn", r"social\s+security(?:\s+(?:number|no\.?))?", r"accession(?:\s+(?:number|no\.?))?",
    r"id",
)  # fmt: skip
_DATE_LABELS = (r"dob", r"d\.o\.b\.?", r"date\s+of\s+birth", r"birth\s*date", r"born")
_CONTACT_LABELS = (
    r"address", r"street", r"city", r"zip(?:\s*code)?", r"post\s*code", r"phone", r"tel(?:ephone)?",
    r"mobile", r"cell", r"fax", r"e-?mail",
)  # fmt: skip
#: A label, then ":" or "#": "Patient: Doe, Jane", "MRN: 123 DOB: 01/02/1960".
_LABEL = re.compile(
    r"(?:^|(?<=\s)|(?<=[|;,]))(?P<label>"
    + "|".join(f"(?P<{kind}>{'|'.join(alts)})" for kind, alts in (
        ("name", _NAME_LABELS), ("id", _ID_LABELS), ("dob", _DATE_LABELS),
        ("contact", _CONTACT_LABELS)))
    + r")\s*[:#]\s*",
    re.IGNORECASE | re.MULTILINE,
)  # fmt: skip
#: Where a field starts: line start, a tab, two spaces, a separator. Generic labels ("Name:",
#: "ID:", "Patient:") count only there, not mid-phrase ("Test name: Hemoglobin").
_FIELD_START = re.compile(r"(?:^|\n|\t|\s\s|[|;,]\s?)$")


def _is_label(m: re.Match, text: str) -> bool:
    generic = m.group("name") or m.group("label").strip().lower() == "id"
    return not generic or bool(_FIELD_START.search(text[max(0, m.start() - 2) : m.start()]))


_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
#: Identifiers recognisable without a label.
_PATTERNS = {
    "email": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    "ssn": re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)"),
    "phone": re.compile(r"(?<![\d.])(?:\+\d{1,3}[\s.-]?)?\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}(?![\d.])"),
    "date": re.compile(
        rf"(?<![\d.])(?:\d{{1,2}}/\d{{1,2}}/(?:\d{{4}}|\d{{2}})|\d{{1,2}}-\d{{1,2}}-(?:\d{{4}}|\d{{2}})"
        rf"|\d{{1,2}}\.\d{{1,2}}\.\d{{4}}|\d{{4}}-\d{{2}}-\d{{2}}"
        rf"|\d{{1,2}}\s+{_MONTH}\s+\d{{4}}|{_MONTH}\s+\d{{1,2}},?\s+\d{{4}})(?!\d|\.\d)",
        re.IGNORECASE,
    ),
}  # fmt: skip


@dataclass
class Findings:
    """Spans to remove per page (char indices into that page's text) and what they were."""

    spans: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    tokens: set[str] = field(default_factory=set)


def find_identifiers(pages: dict[int, str]) -> Findings:
    """Identifier spans in each page's text (labelled fields, patterns, then their echoes)."""
    found = Findings()
    for page, text in pages.items():
        spans = found.spans.setdefault(page, [])
        labels = [m for m in _LABEL.finditer(text) if _is_label(m, text)]
        for m, nxt in zip(labels, [*labels[1:], None], strict=False):  # None: the last
            start = m.end()
            line_end = text.find("\n", start)
            line_end = len(text) if line_end < 0 else line_end
            end = nxt.start() if nxt is not None and nxt.start() < line_end else line_end
            value = text[start:end].strip(" \t\r,;|")
            if not value:
                continue
            s = text.index(value, start)
            spans.append((s, s + len(value)))
            kind = next(k for k in ("name", "id", "dob", "contact") if m.group(k))
            found.counts[kind] += 1
            parts = re.split(r"[\s,]+", value) if kind == "name" else []
            found.tokens.update(t for p in (value, *parts) if (t := as_token(p)))
        for kind, pattern in _PATTERNS.items():
            for m in pattern.finditer(text):
                spans.append(m.span())
                found.counts[kind] += 1
    echoes = token_pattern(found.tokens)
    if echoes is not None:
        for page, text in pages.items():
            for m in echoes.finditer(text):
                found.spans[page].append(m.span())
    for page in found.spans:
        found.spans[page] = _merge(found.spans[page])
    return found


def redact(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with each (merged, sorted) span replaced by REDACTED."""
    out, at = [], 0
    for s, e in spans:
        out.append(text[at:s])
        out.append(REDACTED)
        at = e
    out.append(text[at:])
    return "".join(out)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged
