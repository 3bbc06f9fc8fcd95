"""What the model is sent for an upload: never bigger than it came while it fits the budget.

Each test follows the real data path: intake -> `to_new_attachment` -> SQLite -> `history`
-> `model.prompt.to_chat_messages` -> `to_openai_messages` (the OpenAI engine's request),
then parses the bytes in the data URL: size, markers/chunks, metadata, pixels.

    OMP_NUM_THREADS=1 python -m pytest tests/test_sent_images.py -q
"""

from __future__ import annotations

import base64
import io
import struct

import numpy as np
import pydicom
import pytest
from intake_builders import bundled, image_bytes, photo_with_exif
from PIL import Image, PngImagePlugin

from app.workflow import to_new_attachment
from model.images import (
    DEFAULT_MAX_PIXELS,
    EncodedImage,
    encode_image,
    for_model,
    from_stored,
    stored_image,
)
from model.intake import intake_bytes
from model.intake.images import stretch_to_l
from model.intake.passthrough import strip_jpeg
from model.openai_engine import to_openai_messages
from model.prompt import to_chat_messages, user_turn
from storage import Database, add_user_message, create_consultation, create_user, history

GPS_IFD, MAKE, DATETIME = 0x8825, 0x010F, 0x0132


def radiograph_jpeg(quality: int = 85) -> bytes:
    """pydicom's 512x512 CT slice as a greyscale JPEG with EXIF (camera, GPS) and a comment."""
    ds = pydicom.dcmread(bundled("693_J2KI.dcm"))
    exif = Image.Exif()
    exif[MAKE], exif[DATETIME] = "Radiology workstation", "2024:01:02 03:04:05"
    exif.get_ifd(GPS_IFD)[2] = (52.0, 31.0, 12.0)  # GPSLatitude
    return image_bytes(stretch_to_l(ds.pixel_array), "JPEG", quality=quality,
                       exif=exif.tobytes(), comment=b"Patient: DOE^JANE")  # fmt: skip


def screenshot_png() -> bytes:
    """An RGB PNG (flat colours, like a screenshot) with text, time and a private chunk."""
    arr = np.full((300, 400, 3), 245, np.uint8)
    arr[40:260, 30:370] = (30, 90, 160)
    arr[120:180, 60:340] = (250, 250, 250)
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Dr DOE^JANE")
    info.add_itxt("Comment", "MRN 1234567")
    info.add(b"tIME", struct.pack(">HBBBBB", 2024, 1, 2, 3, 4, 5))
    info.add(b"prVt", b"private vendor data")
    return image_bytes(Image.fromarray(arr), "PNG", pnginfo=info)


def sent_through_storage(tmp_path, name: str, data: bytes, max_pixels=DEFAULT_MAX_PIXELS):
    """(intake result, the image bytes in the engine's request) after a round trip via SQLite."""
    result = intake_bytes(data, name)
    db = Database.sqlite(tmp_path / "s.db")
    db.upgrade()
    user = create_user(db, "alice", "correct horse battery", "clinician")
    cid = create_consultation(db, user.id, "t").id
    add_user_message(db, cid, user.id, "see attached", [to_new_attachment(result)])
    messages = to_chat_messages(history(db, cid, user_id=user.id, with_png=True))
    db.dispose()
    (part,) = [p for m in to_openai_messages(messages, max_pixels)[1:] for p in m["content"]
               if isinstance(p, dict) and p["type"] == "image_url"]  # fmt: skip
    header, _, b64 = part["image_url"]["url"].partition(",")
    return result, header, base64.b64decode(b64)


def jpeg_markers(data: bytes) -> list[int]:
    """The JPEG's segment markers up to the first scan."""
    out, pos = [], 2
    while data[pos] == 0xFF and data[pos + 1] != 0xDA:
        out.append(data[pos + 1])
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return out


def png_chunk_types(data: bytes) -> list[bytes]:
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return out


def test_a_small_jpeg_goes_as_it_came_without_metadata(tmp_path):
    original = radiograph_jpeg()
    result, header, sent = sent_through_storage(tmp_path, "xray.jpg", original)
    assert header == "data:image/jpeg;base64"
    assert len(sent) <= len(original)
    # what was sent before: the greyscale pixels re-encoded as PNG
    before = io.BytesIO()
    result.images[0].image.save(before, format="PNG", optimize=True)
    assert len(sent) < len(before.getvalue())
    markers = jpeg_markers(sent)
    assert not [m for m in markers if 0xE0 <= m <= 0xEF or m == 0xFE], [hex(m) for m in markers]
    with Image.open(io.BytesIO(sent)) as img:
        assert not img.getexif() and "comment" not in img.info and "exif" not in img.info
        assert np.array_equal(np.asarray(img), np.asarray(result.images[0].image))
    assert b"DOE" not in sent and b"Radiology" not in sent


def test_a_small_png_goes_as_it_came_with_critical_chunks_only(tmp_path):
    original = screenshot_png()
    result, header, sent = sent_through_storage(tmp_path, "labs.png", original)
    assert header == "data:image/png;base64"
    assert len(sent) <= len(original)
    assert png_chunk_types(sent) == [b"IHDR", b"IDAT", b"IEND"]
    assert b"DOE" not in sent and b"1234567" not in sent and b"private" not in sent
    with Image.open(io.BytesIO(sent)) as img:
        assert np.array_equal(np.asarray(img), np.asarray(result.images[0].image))


def test_the_first_turn_sends_what_later_turns_send_from_storage():
    for name, data in [("xray.jpg", radiograph_jpeg()), ("labs.png", screenshot_png())]:
        im = intake_bytes(data, name).images[0]
        now, later = for_model(im), _from_storage(im)
        assert isinstance(now, EncodedImage) and now == later
        assert to_openai_messages([user_turn("q", [], [now])]) == to_openai_messages(
            [user_turn("q", [], [later])]
        )


def test_an_image_over_the_budget_is_still_downscaled(tmp_path):
    big = image_bytes(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (2000, 3000, 3), np.uint8)),
        "JPEG", quality=90,
    )  # fmt: skip
    result, header, sent = sent_through_storage(tmp_path, "big.jpg", big)
    assert result.images[0].encoded is None  # intake scaled it: its own bytes are not it
    with Image.open(io.BytesIO(sent)) as img:
        assert img.width * img.height <= DEFAULT_MAX_PIXELS and img.width < 3000
    # within intake's budget but over a smaller engine budget: decoded and scaled to it
    _, _, small = sent_through_storage(tmp_path / "b", "xray.jpg", radiograph_jpeg(), 100_000)
    with Image.open(io.BytesIO(small)) as img:
        assert img.width * img.height <= 100_000


def test_changed_pixels_are_never_sent_as_the_original(tmp_path):
    rotated = intake_bytes(photo_with_exif(orientation=6), "p.jpg").images[0]
    assert rotated.encoded is None  # EXIF rotation applied: the file's pixels are not these
    im = intake_bytes(radiograph_jpeg(), "xray.jpg").images[0]
    assert isinstance(for_model(im), EncodedImage)
    im.image.paste(0, (10, 10, 200, 40))  # as masking printed text in place would
    assert for_model(im) is im.image
    assert not isinstance(_from_storage(im), EncodedImage)


@pytest.mark.parametrize(
    "options",
    [{}, {"progressive": True}, {"restart_marker_rows": 2}, {"subsampling": 0, "quality": 95}],
)
def test_stripping_a_jpeg_keeps_every_pixel(options):
    arr = np.random.default_rng(1).integers(0, 255, (96, 128, 3), np.uint8)
    exif = Image.Exif()
    exif[MAKE] = "camera"
    data = image_bytes(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), comment=b"c",
                       icc_profile=b"\0" * 64, **options)  # fmt: skip
    stripped = strip_jpeg(data)
    assert stripped is not None and len(stripped) < len(data)
    with Image.open(io.BytesIO(data)) as a, Image.open(io.BytesIO(stripped)) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert not b.getexif() and "icc_profile" not in b.info


def test_a_phone_mpo_sends_its_first_image_only():
    frames = [Image.new("RGB", (200, 150), c) for c in ((200, 30, 30), (30, 200, 30))]
    buf = io.BytesIO()
    frames[0].save(buf, format="MPO", save_all=True, append_images=frames[1:])
    data = buf.getvalue()
    im = intake_bytes(data, "phone.jpg").images[0]
    mime, sent = encode_image(for_model(im))
    assert mime == "image/jpeg" and len(sent) < len(data) // 2 + 64
    with Image.open(io.BytesIO(sent)) as img:
        assert img.format == "JPEG" and getattr(img, "n_frames", 1) == 1


def _from_storage(im):
    """What a later turn sends for `im`: through storage's record of it."""
    from storage import ImageRecord

    png, sent_mime, sent = stored_image(im)
    return from_stored(ImageRecord(1, 1, 0, im.label, im.image.width, im.image.height, png,
                                   sent_mime, sent))  # fmt: skip
