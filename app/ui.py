"""The Gradio Blocks: one page, a tab per workflow. Tabs only render; handlers live per tab.

Each role lands on its own screen, decided on the server when the page loads (`land`):
clinicians and admins see Consult; an annotator sees a plain "nothing to annotate yet" page
(until Compare exists) and none of the Consult tab's page-load handlers run for them, so no
control shows a role error. Only admins see Gradio's "Use via API" link. Hiding is cosmetic:
every handler still checks the caller's role (`Auth.guard`).

Every label is page text from `app.i18n` (the page follows the browser's language, or the
switch's choice); the switch is two links, `?lang=en` and `?lang=zh-CN` (`app.language`).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from app.auth import CLINICAL, Auth
from app.compare import Comparisons
from app.compare_api import build_compare_api
from app.config import AppConfig
from app.consult_api import build_consult_api
from app.consult_tab import build_consult_tab
from app.edge import to_user_errors
from app.i18n import i18n, t
from app.language import QUERY, request_language
from app.workflow import Consultations
from storage import Database, UserRecord, UserRole

CSS_PATH = Path(__file__).resolve().parents[1] / "assets" / "app.css"

#: The language switch: each language named in itself, the same in both pages.
LANGUAGE_SWITCH = (
    '<nav class="language-switch" aria-label="Language / 语言">'
    f'<a href="?{QUERY}=en" lang="en" hreflang="en">English</a>'
    '<span aria-hidden="true"> / </span>'
    f'<a href="?{QUERY}=zh-CN" lang="zh-CN" hreflang="zh-CN">中文</a></nav>'
)


class _AfterRoleCheck:
    """What the Consult tab's wiring gets as its Blocks: its page-load handlers (`load`) run
    after `gate`, which lets only clinicians and admins through, so an annotator's page never
    runs them (and shows no role errors). Everything else is the Blocks itself."""

    def __init__(self, blocks: gr.Blocks, gate) -> None:
        self._blocks, self._gate = blocks, gate

    def load(self, fn, *args, **kwargs):
        return self._gate.success(fn, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._blocks, name)


def build_ui(
    config: AppConfig, db: Database, auth: Auth, flow: Consultations,
    comparisons: Comparisons | None = None,
) -> gr.Blocks:
    with gr.Blocks(title="PulseMind", analytics_enabled=False) as blocks:
        with gr.Row(elem_id="app-header"):
            gr.Markdown("## PulseMind")
            whoami = gr.Markdown(elem_id="whoami")
            gr.HTML(LANGUAGE_SWITCH, elem_id="language-switch", padding=False, scale=0,
                    min_width=130)  # fmt: skip
            gr.Button(i18n("app.logout"), link="/logout", size="sm", scale=0)
        # present (visible) for admins only: assets/app.css shows Gradio's API link then
        admin_mark = gr.HTML("", visible=False, elem_id="admin-mark", padding=False)
        with gr.Column(visible=False, elem_id="annotate-empty") as annotate_page:
            gr.Markdown(i18n("annotate.empty"))
        with gr.Tabs(visible=False) as tabs:
            with gr.Tab(i18n("app.tab.consult"), id="consult", visible=False) as consult_tab:
                load_consult = build_consult_tab(config, db, auth, flow, comparisons)

        def land(user: UserRecord) -> tuple:
            """Who is here, and the screen for their role."""
            clinical = user.role in CLINICAL
            return (
                t("app.logged_in_as", name=user.username),
                gr.update(visible=clinical),
                gr.update(visible=clinical),
                gr.update(visible=user.role is UserRole.ANNOTATOR),
                gr.update(visible=user.role is UserRole.ADMIN),
            )

        def clinical_only(request: gr.Request) -> None:
            """Stops the Consult tab's page-load chain, quietly, for other roles."""
            with to_user_errors(request_language(request)):
                user = auth.user(request)
            if user.role not in CLINICAL:
                raise gr.Error("", visible=False, print_exception=False)

        landing = blocks.load(auth.guard(*UserRole)(land), None,
                              [whoami, tabs, consult_tab, annotate_page, admin_mark],
                              api_visibility="private")  # fmt: skip
        # show_progress hidden: Gradio announces no "error" to screen readers for the quiet stop
        gate = landing.success(clinical_only, None, None, api_visibility="private",
                               show_progress="hidden")  # fmt: skip
        load_consult(_AfterRoleCheck(blocks, gate))
        build_consult_api(auth, flow, config.concurrency)
        if comparisons is not None:
            build_compare_api(auth, comparisons, config.concurrency)
    return blocks
