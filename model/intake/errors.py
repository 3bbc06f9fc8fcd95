"""Why an upload was refused: one `IntakeError` subclass per reason.

`user_message` (class) says what kind of problem it is; `detail` (instance) is the specific
sentence shown to the clinician, e.g. "This PDF has 5000 pages; at most 200 are accepted.".
Neither ever holds a value read from inside the file (a DICOM header can name the patient);
`filename` is the name the user gave, for display next to the message.
"""

from __future__ import annotations

from model.errors import IntakeError

from .limits import ACCEPTED_TYPES


class UnsupportedFileType(IntakeError):
    user_message = f"This type of file is not accepted. Accepted: {ACCEPTED_TYPES}."


class EmptyFile(IntakeError):
    user_message = "The file is empty (0 bytes). Upload it again."


class FileTooLarge(IntakeError):
    user_message = "The file is too large."


class ImageTooLarge(IntakeError):
    """Decoded size over the limit (decompression-bomb guard), found from the header."""

    user_message = "The image has too many pixels to open safely."


class AnimatedImage(IntakeError):
    user_message = "Animated images are not accepted; upload a still image (PNG or JPEG)."


class OddImageShape(IntakeError):
    user_message = "The image is too long and thin for the model to read."


class CorruptFile(IntakeError):
    user_message = "The file is damaged or incomplete and cannot be read."


class NotDicom(IntakeError):
    """Named like a DICOM file (.dcm) but its content is something else."""

    user_message = "The file is named like a DICOM file but is not one."


class DicomWithoutImage(IntakeError):
    """A valid DICOM object that carries no image (structured report, RT plan, waveform...)."""

    user_message = "This DICOM file holds no image."


class DeidentificationFailed(IntakeError):
    """Fail closed: a file whose patient identifiers could not be removed is not used at all."""

    user_message = "Patient identifiers could not be removed from this file, so it was not used."


class EncryptedPdf(IntakeError):
    user_message = "The PDF is password-protected. Save an unprotected copy and upload that."


class TooManyPages(IntakeError):
    user_message = "The PDF has too many pages."


class TooManyFiles(IntakeError):
    user_message = "Too many files in one message."


class UnreadableFile(IntakeError):
    """The file could not be read from disk (missing, permissions)."""

    user_message = "The file could not be read."


__all__ = [
    "AnimatedImage",
    "CorruptFile",
    "DeidentificationFailed",
    "DicomWithoutImage",
    "EmptyFile",
    "EncryptedPdf",
    "FileTooLarge",
    "ImageTooLarge",
    "IntakeError",
    "NotDicom",
    "OddImageShape",
    "TooManyFiles",
    "TooManyPages",
    "UnreadableFile",
    "UnsupportedFileType",
]
