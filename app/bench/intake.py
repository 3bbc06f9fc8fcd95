"""Benchmark of attachment intake: time per file and bytes sent to the model vs naive.

For each file: intake time (median of a few repeats, in ms) and the size of what goes over
the wire to the model, measured on the engine's own path (`model.images.for_model` then
`to_data_url`, as `OpenAIEngine` sends it: the upload's own bytes with metadata stripped when
intake kept its pixels, else JPEG q90 for colour and PNG for greyscale, base64) against the
naive alternative of sending the original at full resolution as PNG (every frame of a
multi-frame DICOM, every page of a PDF at 200 DPI).

    pulsemind bench intake                 # built-in inputs: a 24 MP photo + pydicom samples
    pulsemind bench intake a.dcm b.jpg     # your own files

With no files it writes its own inputs to a temporary folder: a synthetic 24-megapixel JPEG
(gradients plus noise, EXIF-rotated), a greyscale radiograph-like JPEG within the model's
budget (pydicom's 512x512 CT saved as JPEG with EXIF: sent as it came, minus the EXIF) and
pydicom's bundled test files (CT, MR, a 30-frame ultrasound cine, JPEG baseline, JPEG 2000
and RLE compressed). No network.
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

from model.images import DEFAULT_MAX_PIXELS, for_model, to_data_url
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
#: The radiograph-like JPEG: a CT slice exported as a JPEG, as PACS viewers and phones do.
RADIOGRAPH_SOURCE, RADIOGRAPH_QUALITY = "693_J2KI.dcm", 90


@dataclass
class BenchRow:
    file: str
    kind: str
    input_bytes: int
    ms_median: float
    images: int
    sent_bytes: int  # what the engine sends for the intake images (decoded bytes)
    sent_b64: int  # the same, base64 (as it goes over the wire)
    passed_through: int  # images sent as the upload's own (stripped) bytes
    naive_b64: int  # full-resolution PNG of every frame/page, base64
    ratio: float  # naive / sent


def _naive_png_size(img: Image.Image) -> int:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return len(base64.b64encode(buf.getvalue()))


def sent_size(result: IntakeResult, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(bytes, base64 characters) the OpenAI engine sends for `result`'s images, made by the
    engine's own functions."""
    urls = [to_data_url(for_model(im), max_pixels).partition(",")[2] for im in result.images]
    return sum(len(base64.b64decode(u)) for u in urls), sum(len(u) for u in urls)


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
    files = [photo, _radiograph_jpeg(folder / "radiograph.jpg")]
    for name in DEFAULT_DICOM_FILES:
        src = get_testdata_file(name)
        if src is None:  # not shipped with this pydicom version
            continue
        dst = folder / name
        dst.write_bytes(Path(src).read_bytes())
        files.append(dst)
    return files


def _radiograph_jpeg(path: Path) -> Path:
    """A greyscale JPEG of a CT slice, with EXIF (as exported): within the model's budget."""
    import pydicom
    from pydicom.data import get_testdata_file

    from model.intake.images import stretch_to_l

    ds = pydicom.dcmread(get_testdata_file(RADIOGRAPH_SOURCE))
    exif = Image.Exif()
    exif[0x010F], exif[0x0132] = "Radiology workstation", "2024:01:02 03:04:05"  # Make, DateTime
    img = stretch_to_l(ds.pixel_array)
    img.save(path, format="JPEG", quality=RADIOGRAPH_QUALITY, exif=exif.tobytes())
    return path


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
        "encoding": "base64 of what the engine sends: the upload's own bytes when intake kept "
        "its pixels, else JPEG q90 (colour) / PNG (greyscale)",
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
    sent_bytes, sent = sent_size(result)
    naive_b64 = sum(_naive_png_size(im.image) for im in naive.images)
    return BenchRow(
        file=path.name,
        kind=result.kind,
        input_bytes=len(data),
        ms_median=round(statistics.median(times), 1),
        images=len(result.images),
        sent_bytes=sent_bytes,
        sent_b64=sent,
        passed_through=sum(1 for im in result.images if for_model(im) is not im.image),
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
        f"{'file':<28} {'kind':<6} {'input':>9} {'ms(med)':>8} {'imgs':>4} {'as-is':>5} "
        f"{'sent':>9} {'sent(b64)':>10} {'naive(b64)':>11} {'ratio':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in summary["rows"]:
        lines.append(
            f"{r['file'][:28]:<28} {r['kind']:<6} {_human(r['input_bytes']):>9} "
            f"{r['ms_median']:>8.1f} {r['images']:>4} {r['passed_through']:>5} "
            f"{_human(r['sent_bytes']):>9} {_human(r['sent_b64']):>10} "
            f"{_human(r['naive_b64']):>11} {r['ratio']:>6.1f}x"
        )
    for r in summary.get("refused", []):
        lines.append(f"{r['file'][:28]:<28} refused: {r['error']}")
    lines.append("-" * len(head))
    lines.append(
        f"overall: sent {_human(summary['total_sent_b64'])} instead of "
        f"{_human(summary['total_naive_b64'])} -> {summary['ratio']:.1f}x fewer bytes to the model "
        f"(median of {summary['repeats']} runs; {summary['encoding']}; as-is: images sent as "
        "the upload's own bytes, metadata stripped)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry (`pulsemind bench intake [FILE...]`)."""
    bench_intake([Path(f) for f in argv or []] or None)
    return 0
