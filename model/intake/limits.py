"""Limits on what one upload may cost, each with the reason it exists.

Every limit is checked as early as possible (size before reading, header dimensions before
decoding, page count before rendering) so that a hostile or simply huge file is refused
cheaply with a message that says which limit it hit.
"""

from __future__ import annotations

from dataclasses import dataclass

#: File types a clinician may upload, as listed in error messages.
ACCEPTED_TYPES = "PNG, JPEG, WebP or TIFF images, DICOM files (.dcm) and PDF documents"


@dataclass
class IntakeLimits:
    """Per-upload limits; the app builds one and passes it to every intake call."""

    # One turn becomes one prompt; the model takes at most ~30 images per prompt and every file
    # costs intake time while the clinician waits.
    max_files_per_turn: int = 10
    # Checked before the bytes are read: bounds memory and upload time for one file.
    max_file_bytes: int = 50 * 2**20
    # Decompression-bomb guard on the DECODED size, read from the header before decoding:
    # a 100-MP PNG can be a few KB on disk and several GB in memory once decoded.
    max_image_pixels: int = 50_000_000
    # Pixel budget of the model (Qwen2.5-VL default max_pixels = 1280 patches of 28x28);
    # the server would shrink anything larger, so we do it once here (aspect kept, no upscale).
    model_max_pixels: int = 1280 * 28 * 28
    # A PDF with more pages than this is refused before anything is rendered: it is not a
    # lab report, and opening every page of a PDF bomb costs memory and time.
    max_pdf_pages: int = 200
    # Pages rendered as images for the model (each costs up to `model_max_pixels` of tokens).
    pdf_pages_rendered: int = 8
    # Text-layer characters passed on: longer reports crowd out the conversation.
    max_text_chars: int = 20000
    # Multi-frame DICOM (cine, volumes): a few evenly spaced frames incl. the middle one stand
    # for the series; 40 frames would eat the image budget of a whole consultation.
    dicom_max_frames: int = 4
    # Qwen2.5-VL rejects images whose long side exceeds 200x the short side.
    max_aspect_ratio: float = 200.0

    def __post_init__(self) -> None:
        for name in (
            "max_files_per_turn",
            "max_file_bytes",
            "max_image_pixels",
            "model_max_pixels",
            "max_pdf_pages",
            "pdf_pages_rendered",
            "max_text_chars",
            "dicom_max_frames",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"IntakeLimits.{name} must be at least 1")
        if self.model_max_pixels > self.max_image_pixels:
            raise ValueError(
                "IntakeLimits.model_max_pixels must not exceed max_image_pixels "
                "(raise max_image_pixels or lower model_max_pixels)"
            )
        if self.max_aspect_ratio < 1:
            raise ValueError("IntakeLimits.max_aspect_ratio must be at least 1")
