"""Patient identifiers in a PDF's text: find them, so that intake can remove them from the text
and paint them out of the page images.

Lab reports, discharge letters and prescriptions print who the patient is, and not always
after a label: in a table cell, a greeting, a footer, a signature. The pages' text is read as
one text by the project's recognizer, `model.intake.phi.find_identifiers` (labelled fields,
patterns, addresses, institutions, names in running text, and every recurrence of what it
found, across pages too); its spans are handed back per page.

Found values are returned as `tokens` for intake's final leak check; they are never logged. A
page without a text layer (a scan) cannot be checked this way: intake says so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .phi import find_identifiers as find_in_text
from .phi import identifying_tokens

#: What replaces a value in the text; the page images get a black box instead.
REDACTED = "[REDACTED]"
#: Between pages when they are read as one text: a blank line ends any labelled field.
_PAGE_BREAK = "\n\n"


@dataclass
class Findings:
    """Spans to remove per page (char indices into that page's text) and what they were."""

    spans: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    tokens: set[str] = field(default_factory=set)


def find_identifiers(pages: dict[int, str]) -> Findings:
    """Identifier spans in each page's text, the pages read together (a name printed on page
    1 is removed from page 3 too)."""
    found = Findings(spans={page: [] for page in pages})
    starts: list[tuple[int, int, int]] = []  # (page, start in the joined text, length)
    at = 0
    for page, text in sorted(pages.items()):
        starts.append((page, at, len(text)))
        at += len(text) + len(_PAGE_BREAK)
    joined = _PAGE_BREAK.join(text for _, text in sorted(pages.items()))
    identifiers = find_in_text(joined)
    for ident in identifiers:
        found.counts[ident.kind] += 1
        for page, start, length in starts:
            s, e = max(ident.start, start), min(ident.end, start + length)
            if e > s:
                found.spans[page].append((s - start, e - start))
    found.tokens = identifying_tokens(identifiers)
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
