"""`pulsemind intake FILE... [--json]`: show what the model would receive for each file.

For every file: its kind, the images (label and size) that would be sent, the text (shortened
for display), the de-identification report and the notes; or the error a clinician would see.
Exit status 1 if any file was refused. Nothing printed comes from DICOM identifying tags:
the output is built from `IntakeResult.to_json()`, which holds none.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from .errors import IntakeError
from .limits import IntakeLimits

#: Text shown per file in the human-readable listing (the JSON form has all of it).
DISPLAY_TEXT_CHARS = 600


def intake_one(path: str, limits: IntakeLimits | None = None) -> dict:
    """{"file", "ok": True, ...IntakeResult.to_json()} or {"file", "ok": False, "error", ...}."""
    from . import intake_file  # the package imports this module's siblings; import late

    try:
        result = intake_file(path, limits=limits)
    except IntakeError as exc:
        return {
            "file": path,
            "ok": False,
            "error": exc.detail,
            "error_type": type(exc).__name__,
            "problem": exc.user_message,
        }
    return {"file": path, "ok": True, **result.to_json()}


def intake_main(
    paths: list[str],
    as_json: bool = False,
    *,
    limits: IntakeLimits | None = None,
    out: TextIO | None = None,
) -> int:
    """Print what intake makes of each path; 0 if all were accepted, else 1."""
    out = out or sys.stdout
    entries = [intake_one(p, limits) for p in paths]
    if as_json:
        out.write(json.dumps(entries, indent=2, ensure_ascii=False) + "\n")
    else:
        for entry in entries:
            out.write(format_entry(entry) + "\n")
    return 0 if all(e["ok"] for e in entries) else 1


def format_entry(entry: dict) -> str:
    """A few indented lines for one file."""
    if not entry["ok"]:
        return f"{entry['file']}: REFUSED ({entry['error_type']}) {entry['error']}"
    lines = [
        f"{entry['file']}: {entry['kind']} ({entry['mime']}, {entry['size_bytes']:,} bytes, "
        f"sha256 {entry['sha256'][:12]})"
    ]
    if entry.get("page_count"):
        lines.append(f"  pages: {entry['page_count']}")
    lines.append(f"  images sent: {len(entry['images'])}")
    for im in entry["images"]:
        lines.append(f"    - {im['label']}: {im['width']}x{im['height']}")
    text = entry.get("text")
    if text:
        shown = text if len(text) <= DISPLAY_TEXT_CHARS else text[:DISPLAY_TEXT_CHARS] + " [...]"
        lines.append(f"  text ({len(text):,} chars):")
        lines.extend(f"    | {line}" for line in shown.splitlines())
    else:
        lines.append("  text: none")
    report = entry.get("deid_report") or {}
    lines.append(
        f"  de-identified: {'yes' if entry['deidentified'] else 'no'}"
        f" ({report.get('profile', 'n/a')}"
        f"{', ' + report['library'] if report.get('library') else ''})"
    )
    for key in ("replaced", "removed", "removed_on_verify"):
        if report.get(key):
            lines.append(f"    {key.replace('_', ' ')}: {', '.join(report[key])}")
    if report.get("private_tags_removed"):
        lines.append(f"    private tags removed: {report['private_tags_removed']}")
    if (
        isinstance(report.get("removed"), list)
        and entry["kind"] == "image"
        and not report["removed"]
    ):
        lines.append("    (no metadata found)")
    lines.append(f"  burned-in annotation: {'FLAGGED' if entry['burned_in_annotation'] else 'no'}")
    if entry.get("notes"):
        lines.append("  notes:")
        lines.extend(f"    - {n}" for n in entry["notes"])
    return "\n".join(lines)
