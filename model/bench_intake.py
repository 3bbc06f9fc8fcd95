"""Benchmark of attachment intake: time per file and bytes sent to the model vs naive.

For each file: intake time (median of a few repeats, in ms) and the size of what goes over
the wire to the model (each image base64-encoded: PNG for DICOM and greyscale, JPEG quality
90 for photos, see `encoded_size`) against the naive alternative of sending the original at
full resolution as PNG (every frame of a multi-frame DICOM, every page of a PDF at 200 DPI).

    pulsemind bench intake                 # built-in inputs: a 24 MP photo + pydicom samples
    pulsemind bench intake a.dcm b.jpg     # your own files

With no files it writes its own inputs to a temporary folder: a synthetic 24-megapixel JPEG
(gradients plus noise, EXIF-rotated) and pydicom's bundled test files (CT, MR, a 30-frame
ultrasound cine, JPEG baseline, JPEG 2000 and RLE compressed). No network.
"""

from __future__ import annotations

import base64
import io
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from model.intake import IntakeError, IntakeLimits, IntakeResult, intake_bytes

#: pydicom's bundled samples used by default (shipped in its wheel: no download).
DEFAULT_DICOM_FILES = (
    "CT_small.dcm",  # CT, 128x128, uncompressed
    "MR_small.dcm",  # MR, 64x64, window in header
    "693_J2KI.dcm",  # CT 512x512, JPEG 2000
    "examples_ybr_color.dcm",  # US cine, 30 frames, JPEG baseline YBR
    "SC_rgb_jpeg_dcmtk.dcm",  # secondary capture, JPEG baseline
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "MR_small_RLE.dcm",  # RLE lossless
)
#: Synthetic photo size: a 24-megapixel phone/DSLR photo.
PHOTO_SIZE = (6000, 4000)
#: JPEG quality of photos sent to the model (same as model.images.JPEG_QUALITY).
PHOTO_JPEG_QUALITY = 90


@dataclass
class BenchRow:
    file: str
    kind: str
    input_bytes: int
    ms_median: float
    images: int
    sent_b64: int  # what we send: intake images, encoded, base64
    naive_b64: int  # full-resolution PNG of every frame/page, base64
    ratio: float  # naive / sent


def encoded_size(img: Image.Image, *, photo: bool) -> int:
    """Base64 length of `img` as sent: JPEG q90 for photos, PNG for DICOM and greyscale.

    Mirrors `model.images.encode_image` (kept local so the benchmark measures the choice
    explicitly): greyscale keeps every grey level in PNG; colour photos go as JPEG.
    """
    buf = io.BytesIO()
    if photo and img.mode == "RGB":
        img.save(buf, format="JPEG", quality=PHOTO_JPEG_QUALITY)
    else:
        img.save(buf, format="PNG")
    return len(base64.b64encode(buf.getvalue()))


def _naive_png_size(img: Image.Image) -> int:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return len(base64.b64encode(buf.getvalue()))


def _sent_size(result: IntakeResult) -> int:
    photo = result.kind == "image" and result.mime == "image/jpeg"
    return sum(encoded_size(im.image, photo=photo) for im in result.images)


def _naive_limits(limits: IntakeLimits) -> IntakeLimits:
    """Limits that keep everything: full resolution, every frame, every page."""
    return IntakeLimits(
        max_file_bytes=limits.max_file_bytes,
        max_image_pixels=limits.max_image_pixels,
        model_max_pixels=limits.max_image_pixels,
        max_pdf_pages=limits.max_pdf_pages,
        pdf_pages_rendered=limits.max_pdf_pages,
        max_text_chars=limits.max_text_chars,
        dicom_max_frames=10**6,
    )


def build_default_inputs(folder: Path, seed: int = 0) -> list[Path]:
    """Write the synthetic photo and copy pydicom's samples into `folder`."""
    from pydicom.data import get_testdata_file

    w, h = PHOTO_SIZE
    rng = np.random.default_rng(seed)
    gx = np.linspace(0, 200, w, dtype=np.float32)[None, :]
    gy = np.linspace(0, 200, h, dtype=np.float32)[:, None]
    base = np.stack([gx + 0 * gy, gy + 0 * gx, (gx + gy) / 2], axis=-1)
    noise = rng.integers(0, 40, size=(h, w, 3), dtype=np.uint8)
    arr = (base.astype(np.uint8) + noise).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees, as phones write portrait shots
    photo = folder / "photo_24mp.jpg"
    Image.fromarray(arr).save(photo, format="JPEG", quality=92, exif=exif.tobytes())
    files = [photo]
    for name in DEFAULT_DICOM_FILES:
        src = get_testdata_file(name)
        if src is None:  # not shipped with this pydicom version
            continue
        dst = folder / name
        dst.write_bytes(Path(src).read_bytes())
        files.append(dst)
    return files


def bench_intake(
    files: list[Path] | None = None,
    *,
    repeats: int = 3,
    limits: IntakeLimits | None = None,
    show: bool = True,
) -> dict:
    """Time intake per file and compare bytes sent with naive full-resolution PNGs."""
    limits = limits or IntakeLimits()
    with tempfile.TemporaryDirectory(prefix="pulsemind-bench-") as tmp:
        paths = [Path(f) for f in files] if files else build_default_inputs(Path(tmp))
        rows, refused = [], []
        for p in tqdm(paths, desc="intake", disable=not show):
            try:
                rows.append(_bench_file(p, repeats, limits))
            except IntakeError as exc:
                refused.append({"file": p.name, "error": exc.detail})
    total_sent = sum(r.sent_b64 for r in rows)
    total_naive = sum(r.naive_b64 for r in rows)
    summary = {
        "rows": [asdict(r) for r in rows],
        "refused": refused,
        "total_sent_b64": total_sent,
        "total_naive_b64": total_naive,
        "ratio": (total_naive / total_sent) if total_sent else 0.0,
        "repeats": repeats,
        "encoding": "base64 of JPEG q90 (photos) / PNG (DICOM, greyscale, pages)",
    }
    if show:
        print(format_table(summary))
    return summary


def _bench_file(path: Path, repeats: int, limits: IntakeLimits) -> BenchRow:
    data = path.read_bytes()
    times = []
    result = None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = intake_bytes(data, path.name, limits=limits)
        times.append((time.perf_counter() - t0) * 1000)
    assert result is not None
    naive = intake_bytes(data, path.name, limits=_naive_limits(limits))
    sent = _sent_size(result)
    naive_b64 = sum(_naive_png_size(im.image) for im in naive.images)
    return BenchRow(
        file=path.name,
        kind=result.kind,
        input_bytes=len(data),
        ms_median=round(statistics.median(times), 1),
        images=len(result.images),
        sent_b64=sent,
        naive_b64=naive_b64,
        ratio=round(naive_b64 / sent, 2) if sent else 0.0,
    )


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def format_table(summary: dict) -> str:
    head = (
        f"{'file':<28} {'kind':<6} {'input':>9} {'ms(med)':>8} {'imgs':>4} "
        f"{'sent(b64)':>10} {'naive(b64)':>11} {'ratio':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in summary["rows"]:
        lines.append(
            f"{r['file'][:28]:<28} {r['kind']:<6} {_human(r['input_bytes']):>9} "
            f"{r['ms_median']:>8.1f} {r['images']:>4} {_human(r['sent_b64']):>10} "
            f"{_human(r['naive_b64']):>11} {r['ratio']:>6.1f}x"
        )
    for r in summary.get("refused", []):
        lines.append(f"{r['file'][:28]:<28} refused: {r['error']}")
    lines.append("-" * len(head))
    lines.append(
        f"overall: sent {_human(summary['total_sent_b64'])} instead of "
        f"{_human(summary['total_naive_b64'])} -> {summary['ratio']:.1f}x fewer bytes to the model "
        f"(median of {summary['repeats']} runs; {summary['encoding']})"
    )
    return "\n".join(lines)


def bench_intake_main(files: list[Path] | None = None) -> int:
    """CLI entry (`pulsemind bench intake [FILE...]`)."""
    bench_intake(files)
    return 0
