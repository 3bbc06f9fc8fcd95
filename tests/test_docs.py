"""The README and the code point only at files inside the repository (a clone has nothing
beside it), and every `docs/...` file they name exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["README.md", "pyproject.toml", "scripts", "app", "model", "storage", "tests", "docs"]


def _files():
    for name in SCANNED:
        path = ROOT / name
        paths = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for p in paths:
            if "__pycache__" not in p.parts and p.suffix not in (".pyc", ".png", ".jpg"):
                yield p


def test_no_pointer_leaves_the_repository_and_named_docs_exist():
    outside, missing = [], []
    me = Path(__file__).resolve()
    for p in _files():
        text = p.read_text(errors="ignore")
        if p.resolve() != me and re.search(r"\.\./shared|\bshared/(DESIGN|ENVIRONMENT|STYLE)", text):
            outside.append(str(p.relative_to(ROOT)))
        for doc in re.findall(r"\bdocs/[\w.-]+\.md\b", text):
            if not (ROOT / doc).is_file():
                missing.append(f"{p.relative_to(ROOT)} -> {doc}")
    assert not outside, f"pointers outside the repository in {outside}"
    assert not missing, f"docs named but missing: {missing}"
