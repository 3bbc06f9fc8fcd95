"""Admin tab: user accounts, model variants and training-data exports, for admins only.

Handlers are thin, as in the Consult tab: `AdminHandlers` holds the use cases as plain methods
`(user, *inputs)` over `storage` (users), `app.variants` (a variant's adapter is loaded into
its vLLM server before it is registered; nothing is registered if the server refuses) and
`training.export`; `build_admin_tab` lays out the components and wires each method, wrapped by
`Auth.guard(UserRole.ADMIN)`, under an `api_name` (`/admin_*`), so the same checks hold for the
browser and for programs. Every input is checked here before it reaches storage or a server:
values of the wrong type, huge strings and unknown roles get a plain message (`app.edge`).

Rules kept here: an admin cannot disable their own account, nor the last active admin (checked
before the change and again after it, undone if another admin was disabled at the same moment).
Server paths an admin types (an adapter folder) are the admin's business: adapters live on the
model server's machine. An export is written under the app's data folder
(`DATA/exports/YYYY-MM-DD/KIND-HHMMSS-XXXXXX`, a Hugging Face dataset) and offered as a .zip
that only the admin who asked can download (`app.downloads`).
"""

from __future__ import annotations

import json
import math
import re
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

import gradio as gr
import pandas as pd
from loguru import logger

from app.auth import Auth
from app.config import AppConfig
from app.downloads import Downloads
from app.i18n import i18n, t
from app.variants import VariantSpec, add_variant, set_active
from model.lora import AdapterLoadFailed
from storage import (
    Conflict,
    Database,
    InvalidInput,
    UserRecord,
    UserRole,
    create_user,
    get_user_by_name,
    list_users,
    list_variants,
    record_audit,
    set_password,
    set_user_active,
)
from storage.models import NAME_LENGTH, PATH_LENGTH, URL_LENGTH
from storage.users import MAX_PASSWORD_LENGTH
from storage.variants import MAX_NOTES_CHARS

ADMIN = (UserRole.ADMIN,)
ROLE_CHOICES = [(i18n(f"admin.role.{r.value}"), r.value) for r in UserRole]
KINDS = ("sft", "pairs", "crpo")
KIND_CHOICES = [(i18n(f"admin.kind.{k}"), k) for k in KINDS]
#: Sampling settings an admin may give a variant: (page key, lowest, highest, integer).
#: The ranges are the OpenAI API's (vLLM follows it); a seed is a 64-bit integer.
SAMPLING = {
    "temperature": ("admin.temperature", 0.0, 2.0, False),
    "top_p": ("admin.top_p", 0.01, 1.0, False),
    "max_tokens": ("admin.max_tokens", 1, 1_000_000, True),
    "seed": ("admin.seed", 0, 2**63 - 1, True),
}
#: A typed number longer than this is no sampling setting (and no float() of a megabyte).
MAX_NUMBER_CHARS = 40
_INTEGER = re.compile(r"-?[0-9]+")
#: Typed text is capped before anything reads it (a megabyte "path" is refused, not stat'ed).
MAX_USERNAME_CHARS = 200
#: What a refusal from the model server may say and still be shown: the server's own words
#: are shown only if they read like a sentence, never like Python or a stack.
_NOT_FOR_PEOPLE = re.compile(r"Traceback|File \"|line \d+|\w+Error\b|\w+Exception\b|<\w+")


def _fail(key: str, **fields: object) -> InvalidInput:
    """A refusal whose message is catalogue text in the request's language."""
    return InvalidInput(key, user_message=t(key, **fields))


def _text(value: object, field_key: str, max_chars: int, *, optional: bool = False) -> str | None:
    """A typed text value: str, at most `max_chars`, no NUL; blank is None when optional."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > max_chars or "\x00" in value:
        raise _fail("admin.bad_text", field=t(field_key), n=max_chars)
    value = value.strip()
    if not value and optional:
        return None
    if not value:
        raise InvalidInput(field_key, user_message=t("storage.empty", field=t(field_key)))
    return value


def _number(value: object, name: str) -> float | int | None:
    """A sampling setting (`SAMPLING[name]`): a number in range, or None when left empty."""
    key, low, high, integer = SAMPLING[name]
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    bad = _fail("admin.bad_number", field=t(key), low=low, high=high)
    if isinstance(value, bool):
        raise bad
    if isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_NUMBER_CHARS:
            raise bad
        try:
            value = int(text) if integer and _INTEGER.fullmatch(text) else float(text)
        except ValueError:
            raise bad from None
    if not isinstance(value, int | float) or not math.isfinite(value) or not low <= value <= high:
        raise bad
    if integer:
        if not float(value).is_integer():
            raise bad
        return int(value)
    return float(value)


def _flag(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise _fail("admin.bad_flag", field=field)
    return value


def _yes(value: bool) -> str:
    return t("admin.yes") if value else t("admin.no")


def _when(at: datetime) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


class AdminHandlers:
    """The Admin tab's use cases as plain methods `(user, *inputs) -> outputs`; every caller
    is an admin (`build_admin_tab` wraps each in `Auth.guard(UserRole.ADMIN)`)."""

    def __init__(self, db: Database, data_dir: str | Path, downloads: Downloads):
        self.db, self.data_dir, self.downloads = db, Path(data_dir), downloads

    # --- users ---------------------------------------------------------------------------

    def _users_out(self) -> tuple[pd.DataFrame, dict]:
        users = list_users(self.db)
        table = pd.DataFrame(
            [[u.username, t(f"admin.role.{u.role.value}"), _yes(u.active), _when(u.created_at)]
             for u in users],
            columns=[t(f"admin.col.{c}") for c in ("username", "role", "active", "created")],
        )  # fmt: skip
        return table, gr.update(choices=[u.username for u in users])

    def _target(self, name: object) -> UserRecord:
        name = _text(name, "admin.user", MAX_USERNAME_CHARS, optional=True)
        if name is None:
            raise _fail("admin.pick_user")
        target = get_user_by_name(self.db, name)
        if target is None:
            raise _fail("admin.no_user", name=name)
        return target

    def list_users(self, user: UserRecord):
        """The users table and the user picker's choices."""
        return self._users_out()

    def add_user(self, user: UserRecord, name: str, role: str, password: str):
        name = _text(name, "admin.username", MAX_USERNAME_CHARS)
        if role not in [r.value for r in UserRole]:
            raise _fail("admin.bad_role")
        password = _text(password, "admin.password", MAX_PASSWORD_LENGTH)
        added = create_user(self.db, name, password, role)
        record_audit(self.db, "admin.add_user", user_id=user.id, target_type="user",
                     target_id=added.id, detail={"role": added.role.value})  # fmt: skip
        message = t("admin.user_added", name=added.username, role=t(f"admin.role.{role}"))
        return (message, *self._users_out(), "", "")

    def _set_active(self, user: UserRecord, name: str, active: bool):
        target = self._target(name)
        if not active and target.id == user.id:
            raise _fail("admin.not_yourself")
        try:  # storage keeps one active admin, even when two disable each other at once
            set_user_active(self.db, target.id, active)
        except Conflict as exc:
            raise _fail("admin.last_admin") from exc
        record_audit(self.db, "admin.enable_user" if active else "admin.disable_user",
                     user_id=user.id, target_type="user", target_id=target.id)  # fmt: skip
        key = "admin.user_enabled" if active else "admin.user_disabled"
        return (t(key, name=target.username), self._users_out()[0])

    def disable_user(self, user: UserRecord, name: str):
        """Disable an account: its sessions stop working and it cannot log in."""
        return self._set_active(user, name, False)

    def enable_user(self, user: UserRecord, name: str):
        return self._set_active(user, name, True)

    def reset_password(self, user: UserRecord, name: str, password: str):
        target = self._target(name)
        password = _text(password, "admin.new_password", MAX_PASSWORD_LENGTH)
        set_password(self.db, target.id, password)
        record_audit(self.db, "admin.reset_password", user_id=user.id, target_type="user",
                     target_id=target.id)  # fmt: skip
        return t("admin.password_reset", name=target.username), ""

    # --- model variants ------------------------------------------------------------------

    def _variants_out(self) -> tuple[pd.DataFrame, dict, dict]:
        variants = list_variants(self.db)
        names = {v.id: v.name for v in variants}
        columns = ("name", "endpoint", "served_model", "adapter", "parent", "active", "sampling",
                   "notes", "created")  # fmt: skip
        table = pd.DataFrame(
            [[v.name, v.endpoint, v.served_model_name, v.adapter_path or "",
              names.get(v.parent_id, ""), _yes(v.active),
              json.dumps(v.sampling_defaults or {}, sort_keys=True), v.notes or "",
              _when(v.created_at)] for v in variants],
            columns=[t(f"admin.col.{c}") for c in columns],
        )  # fmt: skip
        choices = [v.name for v in variants]
        return table, gr.update(choices=choices), gr.update(choices=choices)

    def list_variants(self, user: UserRecord):
        """The variants table and the variant and parent pickers' choices."""
        return self._variants_out()

    def add_variant(self, user: UserRecord, name: str, endpoint: str, served_model: str,
                    adapter: str | None, parent: str | None, temperature: str | None,
                    top_p: str | None, max_tokens: str | None, seed: str | None,
                    notes: str | None):  # fmt: skip
        """Register a variant as `pulsemind variant add` does (an adapter is loaded first)."""
        spec = VariantSpec(
            name=_text(name, "admin.variant_name", NAME_LENGTH),
            endpoint=_text(endpoint, "admin.endpoint", URL_LENGTH),
            served_model_name=_text(served_model, "admin.served_model", PATH_LENGTH),
            adapter_path=_text(adapter, "admin.adapter", PATH_LENGTH, optional=True),
            parent=_text(parent, "admin.parent", NAME_LENGTH, optional=True),
            notes=_text(notes, "admin.notes", MAX_NOTES_CHARS, optional=True),
        )  # fmt: skip
        given = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                 "seed": seed}  # fmt: skip
        spec.sampling = {k: v for k, v in ((k, _number(v, k)) for k, v in given.items())
                         if v is not None}  # fmt: skip
        try:
            added = add_variant(self.db, spec)
        except AdapterLoadFailed as exc:
            if _NOT_FOR_PEOPLE.search(exc.user_message):  # the server's words are not a sentence
                logger.info("adapter refused: {}", exc.detail)
                raise AdapterLoadFailed(exc.detail, t("admin.adapter_refused")) from exc
            raise
        record_audit(self.db, "admin.add_variant", user_id=user.id, target_type="variant",
                     target_id=added.id, detail={"adapter": bool(added.adapter_path)})  # fmt: skip
        message = (t("admin.variant_added_adapter", name=added.name, served=added.served_model_name)
                   if added.adapter_path else t("admin.variant_added", name=added.name))  # fmt: skip
        return (message, *self._variants_out())

    def _set_variant(self, user: UserRecord, name: str, active: bool):
        name = _text(name, "admin.variant", NAME_LENGTH, optional=True)
        if name is None:
            raise _fail("admin.pick_variant")
        variant = set_active(self.db, name, active)
        record_audit(self.db, "admin.activate_variant" if active else "admin.deactivate_variant",
                     user_id=user.id, target_type="variant", target_id=variant.id)  # fmt: skip
        key = "admin.variant_active" if active else "admin.variant_inactive"
        return (t(key, name=variant.name), self._variants_out()[0])

    def activate_variant(self, user: UserRecord, name: str):
        """Offer a variant again (its adapter is loaded again if its server lost it)."""
        return self._set_variant(user, name, True)

    def deactivate_variant(self, user: UserRecord, name: str):
        return self._set_variant(user, name, False)

    # --- exports -------------------------------------------------------------------------

    def export_data(self, user: UserRecord, kind: str, include_flagged: bool,
                    progress=gr.Progress()):  # fmt: skip  # noqa: B008 - Gradio's progress hook
        """Write a training dataset under the data folder; offer it as a .zip (row count shown)."""
        from training.export import ExportConfig, NothingToExport, export_dataset

        if kind not in KINDS:
            raise _fail("admin.bad_kind")
        flagged = _flag(include_flagged, t("admin.include_flagged"))
        now = datetime.now(UTC)
        out = (self.data_dir / "exports" / f"{now:%Y-%m-%d}"
               / f"{kind}-{now:%H%M%S}-{secrets.token_hex(3)}")  # fmt: skip
        progress(0.05, desc=t("admin.export"))
        try:
            rows = export_dataset(self.db, ExportConfig(kind=kind, out=out, include_flagged=flagged))
        except NothingToExport as exc:
            raise _fail("admin.nothing_to_export", kind=kind,
                        flagged="" if flagged else t("admin.flagged_left_out")) from exc  # fmt: skip
        progress(0.8, desc=".zip")
        folder = self.downloads.folder()
        archive = shutil.make_archive(str(folder / f"pulsemind-{out.name}"), "zip",
                                      root_dir=out.parent, base_dir=out.name)  # fmt: skip
        record_audit(self.db, "admin.export", user_id=user.id, target_type="export",
                     target_id=out.name, detail={"kind": kind, "rows": rows,
                                                 "include_flagged": flagged})  # fmt: skip
        logger.info("export {} by user id={}: {} rows", kind, user.id, rows)
        message = t("admin.exported", rows=rows, kind=kind, folder=str(out))
        return message, self.downloads.offer(user, [Path(archive)])[0]


def build_admin_tab(config: AppConfig, db: Database, auth: Auth, tab: gr.Tab,
                    downloads: Downloads) -> None:  # fmt: skip
    """Lay out the Admin tab (inside `tab`) and wire its handlers; they load when it opens."""
    h = AdminHandlers(db, config.data_dir, downloads)
    guard = auth.guard(*ADMIN)

    gr.Markdown(i18n("admin.users"))
    users = gr.Dataframe(label=i18n("admin.users_table"), interactive=False, wrap=True)
    refresh = gr.Button(i18n("admin.refresh"), size="sm")
    with gr.Row(equal_height=True):
        new_name = gr.Textbox(label=i18n("admin.username"), max_lines=1)
        new_role = gr.Dropdown(label=i18n("admin.role"), choices=ROLE_CHOICES, value="clinician",
                               allow_custom_value=True)  # fmt: skip
        new_password = gr.Textbox(label=i18n("admin.password"), type="password", max_lines=1)
        add_user_btn = gr.Button(i18n("admin.add_user"), variant="primary", scale=0)
    with gr.Row(equal_height=True):
        pick_user = gr.Dropdown(label=i18n("admin.user"), choices=[], allow_custom_value=True)
        disable_btn = gr.Button(i18n("admin.disable"), scale=0)
        enable_btn = gr.Button(i18n("admin.enable"), scale=0)
        reset_to = gr.Textbox(label=i18n("admin.new_password"), type="password", max_lines=1)
        reset_btn = gr.Button(i18n("admin.reset_password"), scale=0)
    users_status = gr.Markdown(elem_id="admin-users-status")

    gr.Markdown(i18n("admin.variants"))
    variants = gr.Dataframe(label=i18n("admin.variants_table"), interactive=False, wrap=True)
    with gr.Row():
        v_name = gr.Textbox(label=i18n("admin.variant_name"), max_lines=1)
        v_endpoint = gr.Textbox(label=i18n("admin.endpoint"), max_lines=1)
        v_model = gr.Textbox(label=i18n("admin.served_model"), max_lines=1)
    with gr.Row():
        v_adapter = gr.Textbox(label=i18n("admin.adapter"), max_lines=1)
        v_parent = gr.Dropdown(label=i18n("admin.parent"), choices=[], allow_custom_value=True)
    with gr.Row():
        # text boxes, not gr.Number: empty means "the server's default" (a Number shows 0),
        # and the handler checks the range and says it in the caller's language
        v_temperature, v_top_p, v_max_tokens, v_seed = (
            gr.Textbox(label=i18n(SAMPLING[name][0]), placeholder=example, max_lines=1)
            for name, example in (("temperature", "0.7"), ("top_p", "0.9"),
                                  ("max_tokens", "512"), ("seed", "0"))
        )  # fmt: skip
    v_notes = gr.Textbox(label=i18n("admin.notes"), max_lines=3)
    add_variant_btn = gr.Button(i18n("admin.add_variant"), variant="primary")
    with gr.Row(equal_height=True):
        pick_variant = gr.Dropdown(label=i18n("admin.variant"), choices=[],
                                   allow_custom_value=True)  # fmt: skip
        activate_btn = gr.Button(i18n("admin.activate"), scale=0)
        deactivate_btn = gr.Button(i18n("admin.deactivate"), scale=0)
    variants_status = gr.Markdown(elem_id="admin-variants-status")

    gr.Markdown(i18n("admin.exports"))
    with gr.Row(equal_height=True):
        kind = gr.Dropdown(label=i18n("admin.kind"), choices=KIND_CHOICES, value="sft",
                           allow_custom_value=True)  # fmt: skip
        include_flagged = gr.Checkbox(label=i18n("admin.include_flagged"), value=False)
        export_btn = gr.Button(i18n("admin.export"), variant="primary", scale=0)
    export_status = gr.Markdown(elem_id="admin-export-status")
    export_file = gr.File(label=i18n("admin.download"), interactive=False)

    user_table = [users, pick_user]
    variant_table = [variants, pick_variant, v_parent]
    opened = tab.select(guard(h.list_users), None, user_table, api_name="admin_users")
    opened.then(guard(h.list_variants), None, variant_table, api_name="admin_variants")
    private = {"api_visibility": "private"}
    refresh.click(guard(h.list_users), None, user_table, **private).then(
        guard(h.list_variants), None, variant_table, **private)
    add_user_btn.click(guard(h.add_user), [new_name, new_role, new_password],
                       [users_status, *user_table, new_name, new_password],
                       api_name="admin_add_user")  # fmt: skip
    disable_btn.click(guard(h.disable_user), [pick_user], [users_status, users],
                      api_name="admin_disable_user")  # fmt: skip
    enable_btn.click(guard(h.enable_user), [pick_user], [users_status, users],
                     api_name="admin_enable_user")  # fmt: skip
    reset_btn.click(guard(h.reset_password), [pick_user, reset_to], [users_status, reset_to],
                    api_name="admin_reset_password")  # fmt: skip
    add_variant_btn.click(guard(h.add_variant),
                          [v_name, v_endpoint, v_model, v_adapter, v_parent, v_temperature,
                           v_top_p, v_max_tokens, v_seed, v_notes],
                          [variants_status, *variant_table], api_name="admin_add_variant")  # fmt: skip
    activate_btn.click(guard(h.activate_variant), [pick_variant], [variants_status, variants],
                       api_name="admin_activate_variant")  # fmt: skip
    deactivate_btn.click(guard(h.deactivate_variant), [pick_variant], [variants_status, variants],
                         api_name="admin_deactivate_variant")  # fmt: skip
    export_btn.click(guard(h.export_data), [kind, include_flagged], [export_status, export_file],
                     api_name="admin_export")  # fmt: skip
