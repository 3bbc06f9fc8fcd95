"""The image viewer: a consultation's images zoomed, panned, side by side, played and re-windowed.

What a clinician expects from a PACS viewer, inside the app: pick an image of the open
consultation (a second one shows beside it), zoom with the wheel or the buttons, drag to pan,
step or play through a multi-frame DICOM (cine), and see a CT in the soft tissue, lung, bone
or brain window. Zoom, pan and cine run in the browser (the panel's JS); windows are rendered
on the server from the de-identified values kept at intake (`model.intake.pixels`, stored by
`storage.pixels`), and sent as PNG. What the model was sent does not change.

Access goes the way of every attachment: `storage.user_can_access_attachment` (the caller's
own consultations; an admin's any), else "This attachment does not exist."; ids and presets are
checked at the edge (`app.edge`).

The consult tab adds the panel with two lines:

    viewer = build_viewer(db, auth)                 # where the panel goes, inside the layout
    viewer.wire(consultation, open_ev, send_ev)     # in its wire(): the picker follows the chat
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape

import gradio as gr

from app.auth import CLINICAL, Auth
from app.edge import optional_id, parse_choice, parse_id
from app.i18n import i18n, t
from model.intake.pixels import PRESETS, PixelVolume, from_npz, full_range, window_png
from storage import Database, NotFound, UserRecord, get_attachment_images, history
from storage.attachments import get_attachment_pixels, user_can_access_attachment

#: Window choices, in the order shown: the stored rendering, the CT presets, darkest..brightest.
PRESET_NAMES: tuple[str, ...] = ("own", *PRESETS, "full")
#: Cine speed: frames per second while playing.
CINE_FPS = 6
#: Zoom steps (buttons and wheel) and bounds.
ZOOM_STEP, ZOOM_MIN, ZOOM_MAX = 1.25, 0.25, 16.0

#: The panel's behaviour in the browser. Listeners sit on the panel's root element, so they
#: keep working when a new image or window replaces its content.
JS = f"""
const state = new WeakMap();
const get = (pane) => {{
  let s = state.get(pane);
  if (!s) {{ s = {{scale: 1, x: 0, y: 0, timer: null}}; state.set(pane, s); }}
  return s;
}};
const draw = (pane) => {{
  const s = get(pane);
  pane.querySelectorAll('.pm-frame').forEach((img) => {{
    img.style.transform = `translate(${{s.x}}px, ${{s.y}}px) scale(${{s.scale}})`;
  }});
  pane.dataset.scale = s.scale.toFixed(3);
}};
const zoom = (pane, factor) => {{
  const s = get(pane);
  s.scale = Math.min({ZOOM_MAX}, Math.max({ZOOM_MIN}, s.scale * factor));
  draw(pane);
}};
const show = (pane, i) => {{
  const frames = pane.querySelectorAll('.pm-frame');
  const n = frames.length;
  if (!n) return;
  i = ((i % n) + n) % n;
  frames.forEach((img, k) => {{ img.hidden = k !== i; }});
  pane.dataset.frame = String(i);
  const count = pane.querySelector('.pm-count');
  if (count) count.textContent = `${{i + 1}} / ${{n}}`;
  const label = pane.querySelector('.pm-label');
  if (label) label.textContent = frames[i].dataset.label || '';
}};
const play = (pane, button) => {{
  const s = get(pane);
  if (s.timer) {{
    clearInterval(s.timer); s.timer = null; pane.dataset.playing = 'false';
    if (button) button.setAttribute('aria-pressed', 'false');
    return;
  }}
  pane.dataset.playing = 'true';
  if (button) button.setAttribute('aria-pressed', 'true');
  s.timer = setInterval(() => {{
    if (!pane.isConnected) {{ clearInterval(s.timer); return; }}
    show(pane, Number(pane.dataset.frame || 0) + 1);
  }}, {1000 // CINE_FPS});
}};
element.addEventListener('click', (e) => {{
  const b = e.target.closest('button[data-act]');
  if (!b) return;
  const pane = b.closest('.pm-pane');
  const act = b.dataset.act;
  if (act === 'zoom-in') zoom(pane, {ZOOM_STEP});
  else if (act === 'zoom-out') zoom(pane, 1 / {ZOOM_STEP});
  else if (act === 'reset') {{ const s = get(pane); s.scale = 1; s.x = 0; s.y = 0; draw(pane); }}
  else if (act === 'prev') show(pane, Number(pane.dataset.frame || 0) - 1);
  else if (act === 'next') show(pane, Number(pane.dataset.frame || 0) + 1);
  else if (act === 'play') play(pane, b);
}});
element.addEventListener('wheel', (e) => {{
  const stage = e.target.closest('.pm-stage');
  if (!stage) return;
  e.preventDefault();
  zoom(stage.closest('.pm-pane'), e.deltaY < 0 ? {ZOOM_STEP} : 1 / {ZOOM_STEP});
}}, {{passive: false}});
let drag = null;
element.addEventListener('pointerdown', (e) => {{
  const stage = e.target.closest('.pm-stage');
  if (!stage || e.button !== 0) return;
  const pane = stage.closest('.pm-pane');
  const s = get(pane);
  drag = {{pane, x: e.clientX - s.x, y: e.clientY - s.y}};
  stage.setPointerCapture(e.pointerId);
  e.preventDefault();
}});
element.addEventListener('pointermove', (e) => {{
  if (!drag) return;
  const s = get(drag.pane);
  s.x = e.clientX - drag.x; s.y = e.clientY - drag.y;
  draw(drag.pane);
}});
const stop = () => {{ drag = null; }};
element.addEventListener('pointerup', stop);
element.addEventListener('pointercancel', stop);
element.addEventListener('keydown', (e) => {{
  const pane = e.target.closest('.pm-stage') && e.target.closest('.pm-pane');
  if (!pane) return;
  const keys = {{'+': () => zoom(pane, {ZOOM_STEP}), '=': () => zoom(pane, {ZOOM_STEP}),
                '-': () => zoom(pane, 1 / {ZOOM_STEP}),
                'ArrowRight': () => show(pane, Number(pane.dataset.frame || 0) + 1),
                'ArrowLeft': () => show(pane, Number(pane.dataset.frame || 0) - 1)}};
  if (keys[e.key]) {{ keys[e.key](); e.preventDefault(); }}
}});
"""

CSS = """
.pm-viewer { display: flex; gap: 8px; flex-wrap: wrap; }
.pm-pane { flex: 1 1 320px; margin: 0; min-width: 0; border: 1px solid var(--border-color-primary);
  border-radius: 6px; padding: 6px; }
.pm-stage { height: 420px; overflow: hidden; background: #000; display: flex; align-items: center;
  justify-content: center; cursor: grab; touch-action: none; border-radius: 4px; }
.pm-stage:active { cursor: grabbing; }
.pm-frame { width: 100%; height: 100%; object-fit: contain; transform-origin: center center;
  user-select: none; -webkit-user-drag: none; }
.pm-tools { display: flex; gap: 4px; align-items: center; flex-wrap: wrap; margin-top: 6px; }
.pm-tools button { min-width: 36px; padding: 2px 8px; border-radius: 4px;
  border: 1px solid var(--border-color-primary); background: var(--button-secondary-background-fill);
  color: var(--body-text-color); }
.pm-caption, .pm-note { font-size: 0.9em; margin: 4px 0 0; }
.pm-note { color: var(--body-text-color-subdued); }
"""


@dataclass(frozen=True)
class PaneView:
    """One side of the viewer: frames as (label, PNG bytes), what window, and a note."""

    frames: list[tuple[str, bytes]]
    preset: str
    note: str = ""


class ViewerHandlers:
    """The viewer's use cases as plain methods `(user, *inputs) -> outputs` (tests call them
    directly; `Viewer.wire` wraps each in `Auth.guard`)."""

    def __init__(self, db: Database):
        self.db = db

    def choices(self, user: UserRecord, cid: int | None):
        """The pickers list the images of the open consultation (none picked)."""
        found = optional_id(cid, "consultation")
        options = self.options(user, found) if found is not None else []
        update = gr.update(choices=options, value=None)
        return update, update, empty_html()

    def options(self, user: UserRecord, cid: int) -> list[tuple[str, int]]:
        """(label, attachment id) of each attachment with images in the consultation."""
        seen: dict[int, str] = {}
        for m in history(self.db, cid, user_id=user.id):
            for a in m.attachments:
                if a.images and a.id not in seen:
                    seen[a.id] = t("viewer.choice", name=a.original_name,
                                   kind=t(f"card.kind.{a.kind.value}"), seq=m.seq)  # fmt: skip
        return [(label, aid) for aid, label in seen.items()]

    def _visible(self, user: UserRecord, value: object) -> int:
        """The attachment id `value` names, if the user may see it; else "does not exist"."""
        aid = parse_id(value, "attachment")
        if not user_can_access_attachment(self.db, user.id, aid):
            raise NotFound("attachment not visible to the caller",
                           user_message="This attachment does not exist.")  # fmt: skip
        return aid

    def pane(self, user: UserRecord, attachment_id: object, preset: object) -> PaneView:
        """An attachment's frames in a window preset ("own": as stored and sent)."""
        aid = self._visible(user, attachment_id)
        name = parse_choice(preset, PRESET_NAMES, "window preset")
        images = get_attachment_images(self.db, aid, with_png=True)
        stored = [(img.label, img.png or b"") for img in images]
        if name == "own":
            return PaneView(stored, name)
        data = get_attachment_pixels(self.db, aid)
        volume = from_npz(data) if data is not None else None
        if volume is None or len(volume.values) != len(images):
            return PaneView(stored, "own", t("viewer.no_values"))
        if name in PRESETS and not volume.hounsfield:
            return PaneView(stored, "own", t("viewer.stored"))
        return PaneView(rewindowed(volume, name, [img.label for img in images]), name)

    def open_from_chat(self, user: UserRecord, clicked: str | None):
        """A thumbnail clicked in the chat (its attachment id): pick that image (if the user may
        see it) and open the panel."""
        aid = self._visible(user, clicked)
        # the view is rendered here too: a closed panel's pickers are not in the page yet, so
        # their change events would not fire
        return gr.update(value=aid), gr.update(open=True), self.show(user, aid, None, "own")

    def show(self, user: UserRecord, first: int | None, second: int | None, preset: str | None):
        """The panel's HTML: the picked image, and the second beside it if one is picked."""
        preset = preset or "own"
        picked = [a for a in (optional_id(first, "attachment"), optional_id(second, "attachment"))
                  if a is not None]  # fmt: skip
        if not picked:
            parse_choice(preset, PRESET_NAMES, "window preset")
            return empty_html()
        return viewer_html([self.pane(user, a, preset) for a in picked])


def rewindowed(volume: PixelVolume, preset: str, labels: list[str]) -> list[tuple[str, bytes]]:
    """Each kept frame in `preset` (a CT preset, or "full": darkest to brightest)."""
    center, width = PRESETS[preset] if preset in PRESETS else full_range(volume.values)
    return [(label, window_png(values, center, width, volume.invert))
            for label, values in zip(labels, volume.values, strict=True)]  # fmt: skip


def empty_html() -> str:
    return f'<p class="pm-note pm-empty">{escape(t("viewer.empty"))}</p>'


def _button(act: str, text: str, key: str, **attrs: str) -> str:
    extra = "".join(f' {k}="{v}"' for k, v in attrs.items())
    label = escape(t(key))
    return (f'<button type="button" data-act="{act}" aria-label="{label}" title="{label}"{extra}>'
            f"{text}</button>")  # fmt: skip


def pane_html(view: PaneView, index: int) -> str:
    """One pane: the frames stacked (one visible), its tools, its caption."""
    frames = "".join(
        f'<img class="pm-frame" data-index="{k}" data-label="{escape(label)}" alt="{escape(label)}"'
        f' draggable="false" src="data:image/png;base64,{base64.b64encode(png).decode()}"'
        f"{' hidden' if k else ''}>"
        for k, (label, png) in enumerate(view.frames)
    )
    n = len(view.frames)
    tools = [_button("zoom-in", "+", "viewer.zoom_in"), _button("zoom-out", "−", "viewer.zoom_out"),
             _button("reset", "1:1", "viewer.reset")]  # fmt: skip
    if n > 1:
        tools += [_button("prev", "‹", "viewer.previous"),
                  f'<span class="pm-count" aria-live="polite">1 / {n}</span>',
                  _button("next", "›", "viewer.next"),
                  _button("play", "▶ ❚❚", "viewer.play", **{"aria-pressed": "false"})]  # fmt: skip
    first = escape(view.frames[0][0]) if view.frames else ""
    preset = escape(t(f"viewer.preset.{view.preset}"))
    note = f'<p class="pm-note">{escape(view.note)}</p>' if view.note else ""
    return (f'<figure class="pm-pane" data-pane="{index}" data-frame="0" data-frames="{n}" '
            f'data-preset="{view.preset}" data-scale="1.000" data-playing="false">'
            f'<div class="pm-stage" tabindex="0">{frames}</div>'
            f'<div class="pm-tools">{"".join(tools)}</div>'
            f'<figcaption class="pm-caption"><span class="pm-label">{first}</span> · {preset}'
            f"</figcaption>{note}</figure>")  # fmt: skip


def viewer_html(views: list[PaneView]) -> str:
    """The panel's content: one pane per picked image, side by side."""
    return f'<div class="pm-viewer">{"".join(pane_html(v, i) for i, v in enumerate(views))}</div>'


#: A click on a thumbnail in the chat opens that image here instead of a raw PNG in a new tab:
#: the attachment id is kept in the page and the hidden `#viewer-open` button clicked (its event
#: reads the id back, `PICKED_JS`), and the panel scrolls into view. Installed once per page.
OPEN_FROM_CHAT_JS = """() => {
    if (window.pulsemindViewerClicks) return;
    window.pulsemindViewerClicks = true;
    document.addEventListener("click", (e) => {
        const link = e.target.closest && e.target.closest("#consult-chat .pm-thumbs a");
        const found = link && link.getAttribute("href").match(/\\/attachments\\/(\\d+)\\//);
        const button = document.querySelector("#viewer-open");
        if (!found || !button || e.ctrlKey || e.metaKey || e.shiftKey) return;
        e.preventDefault();
        window.pulsemindViewerPick = found[1];
        button.click();
        const panel = document.querySelector("#pm-viewer-panel");
        if (panel) panel.scrollIntoView({behavior: "smooth", block: "start"});
    }, true);
}"""
#: The clicked thumbnail's attachment id, as the open event's input.
PICKED_JS = "(_) => window.pulsemindViewerPick || null"


@dataclass
class Viewer:
    """The panel's components; `wire` connects them once the page's events exist."""

    handlers: ViewerHandlers
    guard: object
    panel: gr.Accordion
    opener: gr.Button
    picked: gr.Textbox
    first: gr.Dropdown
    second: gr.Dropdown
    preset: gr.Radio
    view: gr.HTML
    open_js: str = OPEN_FROM_CHAT_JS

    def wire(self, consultation: gr.components.Component, *after: object) -> None:
        """The pickers list `consultation`'s images when it changes and after each event in
        `after` (a turn sent with new files); picking an image or a window renders it."""
        private = {"api_visibility": "private", "show_progress": "hidden"}
        refresh = self.guard(self.handlers.choices)
        outputs = [self.first, self.second, self.view]
        consultation.change(refresh, [consultation], outputs, **private)
        for event in after:
            event.then(refresh, [consultation], outputs, **private)
        show = self.guard(self.handlers.show)
        for picker in (self.first, self.second, self.preset):
            picker.change(show, [self.first, self.second, self.preset], [self.view], **private)
        # a thumbnail clicked in the chat: that image, in the open panel (its .change renders)
        self.opener.click(self.guard(self.handlers.open_from_chat), [self.picked],
                          [self.first, self.panel, self.view], js=PICKED_JS,
                          **private)  # fmt: skip


def build_viewer(db: Database, auth: Auth, *, open: bool = True) -> Viewer:
    """The viewer panel (in an accordion, `open` or not), placed where it is called inside a
    Blocks layout."""
    # outside the accordion: a closed accordion's content is not in the page
    opener = gr.Button(i18n("viewer.open"), visible="hidden", elem_id="viewer-open")
    picked = gr.Textbox(visible="hidden", max_lines=1)  # a State's value never leaves the server
    with gr.Accordion(i18n("viewer.title"), open=open, elem_id="pm-viewer-panel") as panel:
        with gr.Row():
            # allow_custom_value: choices are per user; the server checks whatever id arrives.
            first = gr.Dropdown(label=i18n("viewer.image"), choices=[], value=None,
                                allow_custom_value=True, elem_id="viewer-first")  # fmt: skip
            second = gr.Dropdown(label=i18n("viewer.second"), choices=[], value=None,
                                 allow_custom_value=True, elem_id="viewer-second")  # fmt: skip
        preset = gr.Radio([(i18n(f"viewer.preset.{p}"), p) for p in PRESET_NAMES], value="own",
                          label=i18n("viewer.preset"), elem_id="viewer-preset")  # fmt: skip
        # empty until the open consultation's images are listed (in the reader's language)
        view = gr.HTML("", js_on_load=JS, css_template=CSS, elem_id="viewer-view",
                       apply_default_css=True)  # fmt: skip
    return Viewer(ViewerHandlers(db), auth.guard(*CLINICAL), panel, opener, picked, first, second,
                  preset, view)  # fmt: skip
