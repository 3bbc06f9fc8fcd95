"""What intake hands on: the images and text a model may see, and how they were made.

Kept apart from `model.intake.__init__` so the per-type readers (images, dicom, pdf) can build
results without importing the dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

from .passthrough import EncodedOriginal
from .pixels import PixelVolume

IntakeKind = Literal["image", "dicom", "pdf"]


@dataclass
class IntakeImage:
    """One image for the model: RGB or L, metadata-free, within the model's pixel budget."""

    image: Image.Image
    label: str  # e.g. "photo", "page 1", "frame 12 of 40", "CT slice"
    encoded: EncodedOriginal | None = None
    """The upload's own encoding, metadata stripped, when it decodes to exactly `image`
    (`model.intake.passthrough`): sent to the model instead of a re-encoding. Only image
    uploads whose pixels intake left alone have one; `matches` catches later changes."""


@dataclass
class IntakeResult:
    """Everything the model may receive from one upload, plus how it was derived."""

    kind: IntakeKind
    filename: str  # the name the user gave (display only; never logged)
    sha256: str  # hex digest of the original bytes
    mime: str
    size_bytes: int
    images: list[IntakeImage]
    text: str | None  # PDF text layer or DICOM technical summary (capped), or None
    page_count: int | None
    deidentified: bool  # identifiers removed (DICOM) or none possible (metadata-free image)
    deid_report: dict[str, Any]  # tag keywords acted on, profile, library; never values
    burned_in_annotation: bool  # DICOM BurnedInAnnotation YES (or suspected): pixels may name
    notes: list[str] = field(default_factory=list)  # human-readable, e.g. "text truncated"
    #: Greyscale DICOM not masked by OCR: the values a viewer re-windows (`model.intake.pixels`);
    #: never sent to the model, left out of `to_json`.
    pixels: PixelVolume | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary without pixel data (images as label and size)."""
        return {
            "kind": self.kind,
            "filename": self.filename,
            "sha256": self.sha256,
            "mime": self.mime,
            "size_bytes": self.size_bytes,
            "images": [
                {"label": im.label, "width": im.image.width, "height": im.image.height}
                for im in self.images
            ],
            "text": self.text,
            "page_count": self.page_count,
            "deidentified": self.deidentified,
            "deid_report": self.deid_report,
            "burned_in_annotation": self.burned_in_annotation,
            "notes": list(self.notes),
        }


@dataclass
class Derived:
    """What a per-type reader produced; the dispatcher adds name, hash, size and kind."""

    images: list[IntakeImage]
    mime: str
    text: str | None = None
    page_count: int | None = None
    deidentified: bool = True
    deid_report: dict[str, Any] = field(default_factory=dict)
    burned_in_annotation: bool = False
    notes: list[str] = field(default_factory=list)
    #: Original identifying values (DICOM); only for the dispatcher's leak check, never kept.
    identifying_tokens: frozenset[str] = frozenset()
    pixels: PixelVolume | None = None  # see IntakeResult.pixels
