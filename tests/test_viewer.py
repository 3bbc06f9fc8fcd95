"""The image viewer: pixel values kept at intake, windows rendered on the server, the panel.

Storage and rendering (real DICOM from tests/intake_builders.py, real SQLite): the .npz kept
beside the database holds the modality-LUT values and nothing of the header (no identifier in
its bytes or arrays, only the expected keys); the lung and bone presets give different PNGs,
each equal to a window computed here in numpy from the original file; a multi-frame CT yields
its kept frames, each re-windowed; an MR gets no CT preset, a masked (burned-in) image no
values; what the model is sent is byte-identical with and without the kept values; another
user's attachment, a malformed id and an unknown preset are "does not exist".

Browser (marked `browser`, Debian's chromium as in tests/test_browser.py): the panel in a
minimal Blocks of its own behind the app's login: open a CT, pick "Lung" (the image changes),
zoom (buttons and wheel), a second image side by side, cine advances frames.

    OMP_NUM_THREADS=1 python -m pytest tests/test_viewer.py -q
"""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pydicom
import pytest
from apphelpers import PASSWORD, make_users
from intake_builders import PHI_STRINGS, dicom_with, dicom_with_phi
from PIL import Image
from test_attachment_cards import multiframe_ct
from test_browser import CHROMIUM_ARGS, WAIT_MS, chromium  # noqa: F401 - fixture

from app.auth import Auth
from app.i18n import I18N
from app.viewer import PRESET_NAMES, ViewerHandlers, build_viewer
from app.workflow import to_new_attachment
from model.intake import intake_bytes
from model.intake.dicom import pick_frames
from model.intake.pixels import NPZ_KEYS, PRESETS
from model.openai_engine import to_openai_messages
from model.prompt import to_chat_messages
from model.serve import free_port
from storage import (
    NotFound,
    PermissionDenied,
    add_user_message,
    authenticate,
    create_consultation,
    get_attachment_image,
    get_user_by_name,
    history,
)
from storage.pixels import pixels_dir, read_pixels


def reference_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 LINEAR, written out again: the PNG must equal this."""
    y = (values.astype(np.float64) - (center - 0.5)) / (width - 1.0) + 0.5
    return np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)


def hounsfield(data: bytes) -> np.ndarray:
    """The original file's values through its rescale (frames, rows, cols)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    arr = ds.pixel_array.astype(np.float64)
    arr = arr * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    return arr if arr.ndim == 3 else arr[None]


def png_array(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def store(db, owner: str, *files: tuple[str, bytes]) -> tuple[int, list]:
    """The files as `owner`'s turn in a new consultation: (consultation id, attachments)."""
    user = get_user_by_name(db, owner)
    cid = create_consultation(db, user.id, "t").id
    atts = [to_new_attachment(intake_bytes(data, name)) for name, data in files]
    add_user_message(db, cid, user.id, "see attached", atts)
    return cid, history(db, cid, user_id=user.id)[0].attachments


@pytest.fixture
def users(db):
    make_users(db)
    return {name: get_user_by_name(db, name) for name in ("alice", "bob", "root")}


def test_kept_values_are_the_ct_numbers_without_identifiers(db, users):
    data = dicom_with_phi()
    _, (att,) = store(db, "alice", ("chest.dcm", data))
    folder = pixels_dir(db.url)
    assert folder == Path(str(db.url.database)).with_suffix(".pixels")  # beside the database
    (path,) = folder.rglob("*.npz")
    assert path.name == f"{att.sha256}.npz"
    raw = path.read_bytes()
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        assert set(npz.files) == NPZ_KEYS
        arrays = {k: npz[k] for k in npz.files}
    assert str(arrays["modality"]) == "CT" and not bool(arrays["invert"])
    np.testing.assert_array_equal(arrays["values"], hounsfield(data))  # modality LUT applied
    blobs = [raw, *(a.tobytes() for a in arrays.values()), *(str(a) for a in arrays.values())]
    for phi in PHI_STRINGS:
        for form in {phi, phi.upper()}:
            assert not any(form.encode() in (b if isinstance(b, bytes) else b.encode())
                           for b in blobs), form  # fmt: skip


def test_lung_and_bone_windows_match_numpy(db, users):
    data = dicom_with_phi()
    _, (att,) = store(db, "alice", ("chest.dcm", data))
    h = ViewerHandlers(db)
    hu = hounsfield(data)[0]
    rendered = {}
    for preset in ("lung", "bone"):
        view = h.pane(users["alice"], att.id, preset)
        assert view.preset == preset and not view.note
        ((label, png),) = view.frames
        rendered[preset] = png
        np.testing.assert_array_equal(png_array(png), reference_window(hu, *PRESETS[preset]))
    assert rendered["lung"] != rendered["bone"]
    own = h.pane(users["alice"], att.id, "own")  # as stored: the very PNG the chat shows
    assert own.frames[0][1] == get_attachment_image(db, att.id, 0).png
    html = h.show(users["alice"], att.id, None, "lung")
    assert base64.b64encode(rendered["lung"]).decode() in html


def test_multiframe_yields_its_frames_rewindowed(db, users):
    data = multiframe_ct(10)
    _, (att,) = store(db, "alice", ("cine.dcm", data))
    h = ViewerHandlers(db)
    kept = pick_frames(10, 4)  # what intake sends the model
    own = h.pane(users["alice"], att.id, "own")
    assert [label for label, _ in own.frames] == [f"frame {k + 1} of 10" for k in kept]
    lung = h.pane(users["alice"], att.id, "lung")
    hu = hounsfield(data)
    for (label, png), k in zip(lung.frames, kept, strict=True):
        assert label == f"frame {k + 1} of 10"
        np.testing.assert_array_equal(png_array(png), reference_window(hu[k], *PRESETS["lung"]))
    assert len({png for _, png in lung.frames}) == 4  # the frames differ
    html = h.show(users["alice"], att.id, None, "own")
    assert html.count('class="pm-frame"') == 4 and 'data-act="play"' in html


def test_presets_only_where_values_mean_them(db, users):
    _, (mr, masked) = store(db, "alice", ("mr.dcm", dicom_with("MR_small.dcm")),
                            ("us.dcm", dicom_with("MR_small.dcm", BurnedInAnnotation="YES",
                                                  SeriesNumber=7)))  # fmt: skip
    h, alice = ViewerHandlers(db), users["alice"]
    lung = h.pane(alice, mr.id, "lung")  # MR values are not Hounsfield units
    assert lung.preset == "own" and "CT values" in lung.note
    full = h.pane(alice, mr.id, "full")
    assert full.preset == "full" and full.frames[0][1] != h.pane(alice, mr.id, "own").frames[0][1]
    assert read_pixels(db.url, masked.sha256) is None  # pixels checked by OCR: no values kept
    assert "greyscale DICOM" in h.pane(alice, masked.id, "bone").note


def test_model_is_sent_the_same_images(db, users, tmp_path):
    """Keeping the values changes nothing the model is sent (byte for byte)."""
    from storage import Database, create_user

    sent = []
    for n, keep in enumerate((True, False)):
        other = Database.sqlite(tmp_path / f"{n}.db")
        other.upgrade()
        user = create_user(other, "alice", PASSWORD, "clinician")
        cid = create_consultation(other, user.id, "t").id
        results = [intake_bytes(d, name) for name, d in (("ct.dcm", dicom_with_phi()),
                                                        ("cine.dcm", multiframe_ct(10)))]  # fmt: skip
        assert all(r.pixels is not None for r in results)
        if not keep:
            results = [dataclasses.replace(r, pixels=None) for r in results]
        add_user_message(other, cid, user.id, "see", [to_new_attachment(r) for r in results])
        messages = to_openai_messages(
            to_chat_messages(history(other, cid, user_id=user.id, with_png=True)), 1280 * 28 * 28
        )
        sent.append([p["image_url"]["url"] for m in messages for p in m["content"]
                     if isinstance(p, dict) and p["type"] == "image_url"])  # fmt: skip
        assert (read_pixels(other.url, results[0].sha256) is not None) is keep
        other.dispose()
    assert len(sent[0]) == 5 and sent[0] == sent[1]


def test_only_the_owner_sees_and_bad_input_names_nothing(db, users):
    cid, (att,) = store(db, "alice", ("chest.dcm", dicom_with_phi()))
    h = ViewerHandlers(db)
    with pytest.raises(NotFound) as refused:
        h.pane(users["bob"], att.id, "lung")
    assert refused.value.user_message == "This attachment does not exist."
    with pytest.raises(NotFound):
        h.show(users["bob"], att.id, None, "own")
    with pytest.raises((NotFound, PermissionDenied)):
        h.options(users["bob"], cid)  # another's consultation lists nothing
    assert [aid for _, aid in h.options(users["alice"], cid)] == [att.id]
    assert h.pane(users["root"], att.id, "own").frames  # an admin reads any
    for bad_id in ("abc", "-1", "１", 10**30, True):
        with pytest.raises(NotFound):
            h.pane(users["alice"], bad_id, "own")
    for bad_preset in ("LUNG", "../own", None, 3, "window"):
        with pytest.raises(NotFound) as unknown:
            h.pane(users["alice"], att.id, bad_preset)
        assert unknown.value.user_message == "This window preset does not exist."
    assert set(PRESET_NAMES) == {"own", "soft_tissue", "lung", "bone", "brain", "full"}


# --- the panel in a real Chromium --------------------------------------------------------


@pytest.fixture
def viewer_app(db, users):
    """The viewer panel alone in a Blocks behind the app's login; yields (url, cid, ids)."""
    cid, atts = store(db, "alice", ("chest.dcm", dicom_with_phi()), ("cine.dcm", multiframe_ct(10)))
    auth = Auth(db)
    with gr.Blocks() as demo:
        consultation = gr.Textbox(label="consultation id", elem_id="test-consultation")
        viewer = build_viewer(db, auth)
        viewer.wire(consultation)
    port = free_port()
    # the password check alone (the app's Auth.login also throttles, behind its middleware)
    demo.launch(server_name="127.0.0.1", server_port=port, i18n=I18N,
                auth=lambda name, password: authenticate(db, name, password) is not None,
                prevent_thread_lock=True, quiet=True, ssr_mode=False)  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}", cid, [a.id for a in atts]
    finally:
        demo.close()


PANE = "#viewer-view .pm-pane"


def pick(page, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option", name=re.compile(re.escape(option))).click()


def frame_src(page, pane: int = 0) -> str:
    return page.evaluate("""([sel, i]) => { const p = document.querySelectorAll(sel)[i];
        const img = p && p.querySelector('.pm-frame:not([hidden])');
        return img ? img.getAttribute('src') : null; }""", [PANE, pane])  # fmt: skip


@pytest.mark.browser
def test_viewer_panel_rewindows_zooms_and_plays(chromium, viewer_app, tmp_path):  # noqa: F811
    url, cid, _ = viewer_app
    context = chromium.new_context(viewport={"width": 1300, "height": 1100})
    page = context.new_page()
    try:
        page.goto(url + "/")
        page.get_by_label("username").fill("alice")
        page.get_by_label("password").fill(PASSWORD)
        page.get_by_role("button", name="Login").click()
        box = page.locator("#test-consultation textarea")
        box.wait_for(state="visible", timeout=WAIT_MS)
        box.fill(str(cid))
        box.press("Enter")

        # open the CT: it shows as stored
        pick(page, "Image", "chest.dcm")
        page.locator(f"{PANE} .pm-frame").first.wait_for(state="visible", timeout=WAIT_MS)
        stored_src = frame_src(page)
        assert stored_src.startswith("data:image/png;base64,")

        # the lung window: the server renders a different image
        page.get_by_label("Lung").check()
        page.wait_for_function(f"() => document.querySelector('{PANE}')?.dataset.preset === 'lung'",
                               timeout=WAIT_MS)  # fmt: skip
        assert frame_src(page) != stored_src

        # zoom: buttons, then the wheel
        pane = page.locator(PANE).first
        pane.get_by_role("button", name="Zoom in").click()
        assert pane.get_attribute("data-scale") == "1.250"
        assert "scale(1.25)" in pane.locator(".pm-frame").first.get_attribute("style")
        pane.locator(".pm-stage").hover()
        page.mouse.wheel(0, -200)
        page.wait_for_function(f"() => Number(document.querySelector('{PANE}').dataset.scale) > 1.3",
                               timeout=WAIT_MS)  # fmt: skip
        page.screenshot(path=str(tmp_path / "viewer-lung-zoomed.png"))

        # the cine beside it: two panes; play advances its frames
        pick(page, "Second image, side by side", "cine.dcm")
        page.wait_for_function(f"() => document.querySelectorAll('{PANE}').length === 2",
                               timeout=WAIT_MS)  # fmt: skip
        cine = page.locator(PANE).nth(1)
        assert cine.get_attribute("data-frames") == "4"
        cine.get_by_role("button", name="Play / pause").click()
        seen = set()
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            seen.add(cine.get_attribute("data-frame"))
            time.sleep(0.05)
        assert len(seen) >= 3, f"cine frames seen: {seen}"
        cine.get_by_role("button", name="Play / pause").click()  # pause: the frame stays
        held = cine.get_attribute("data-frame")
        time.sleep(0.5)
        assert cine.get_attribute("data-frame") == held
        page.screenshot(path=str(tmp_path / "viewer-side-by-side.png"))
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"))
        raise
    finally:
        context.close()
