"""Helpers for tests that drive the launched app: start it on a free port, log in, make files."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from app.config import AppConfig
from app.consult_tab import chat_text as text_of  # noqa: F401 - re-exported for tests
from app.server import serve_in_thread
from storage import Database, create_user

PASSWORD = "correct horse battery"
USERS = {"alice": "clinician", "bob": "clinician", "ann": "annotator", "root": "admin"}


def make_users(db: Database) -> None:
    for name, role in USERS.items():
        create_user(db, name, PASSWORD, role)


def running_app(config: AppConfig, db: Database):
    """The real app (FastAPI + Gradio) under uvicorn in a thread on a free port; yields its URL."""
    if config.port == AppConfig.port:  # the default 7860 may be taken: use a free port
        config = dataclasses.replace(config, port=0)
    return serve_in_thread(config, db)


def login(url: str, user: str, password: str = PASSWORD) -> httpx.Client:
    """An HTTP client holding the user's session cookie (Gradio's /login form)."""
    c = httpx.Client(base_url=url, timeout=30)
    r = c.post("/login", data={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return c


def png_file(path: Path, seed: int, size=(640, 480)) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def lab_report_pdf(path: Path) -> Path:
    """A two-page lab report with a text layer (written with fpdf2)."""
    from fpdf import FPDF

    pdf = FPDF()
    for page in range(2):
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.cell(0, 10, f"Laboratory report page {page + 1}", new_x="LMARGIN", new_y="NEXT")
        pdf.cell(0, 10, "Hemoglobin 13.2 g/dL (ref 12-16)", new_x="LMARGIN", new_y="NEXT")
        pdf.cell(0, 10, "Troponin I 0.02 ng/mL", new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path


def png_bytes_of(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def demo_case_file(folder: Path) -> Path:
    """A one-case JSONL case file (Chinese, two patient turns, an image on the first)."""
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    png_file(folder / "imgs" / "rash.png", 5, size=(160, 120))
    cases = folder / "cases.jsonl"
    cases.write_text(json.dumps({"id": "c1", "cate1": "皮肤科", "turns": [
        {"patient": "手臂上起了红疹，很痒。", "images": ["imgs/rash.png"], "doctor": "多久了？"},
        {"patient": "三天了。"}]}, ensure_ascii=False) + "\n", "utf-8")  # fmt: skip
    return cases

