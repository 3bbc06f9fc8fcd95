"""The Gradio Blocks: one page, a tab per workflow. Tabs only render; handlers live per tab.

Each role lands on its own screen, decided on the server when the page loads (`land`):
clinicians see Consult; annotators see Compare (blind side-by-side votes, `app.compare_tab`);
admins see both and land on Consult. A tab's page-load handlers run only for the roles that see
it (a quiet gate per tab), so no control shows a role error. Without model variants
(`comparisons` None) the Compare tab says so. Only admins see Gradio's "Use via API" link.
Annotators and admins also see Leaderboard, admins Admin (`staff_tabs`, chained on the
landing; those tabs compute when opened).
Hiding is cosmetic: every handler still checks the caller's role (`Auth.guard`).

Every label is page text from `app.i18n` (the page follows the browser's language, or the
switch's choice); the switch is two links, `?lang=en` and `?lang=zh-CN` (`app.language`).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from app.admin_tab import build_admin_tab
from app.auth import CLINICAL, Auth
from app.compare import Comparisons
from app.compare_api import build_compare_api
from app.compare_tab import build_compare_tab
from app.config import AppConfig
from app.consult_api import build_consult_api
from app.consult_tab import build_consult_tab
from app.downloads import Downloads
from app.edge import to_user_errors
from app.eval_tab import build_eval_tab
from app.i18n import i18n, t
from app.language import QUERY, request_language
from app.leaderboard_tab import build_leaderboard_tab
from app.retrain import Retrain
from app.retrain_tab import build_retrain_tab
from app.workflow import Consultations
from storage import Database, UserRecord, UserRole
from storage.access import ANNOTATING_ROLES

CSS_PATH = Path(__file__).resolve().parents[1] / "assets" / "app.css"

#: The language switch: each language named in itself, the same in both pages.
LANGUAGE_SWITCH = (
    '<nav class="language-switch" aria-label="Language / 语言">'
    f'<a href="?{QUERY}=en" lang="en" hreflang="en">English</a>'
    '<span aria-hidden="true"> / </span>'
    f'<a href="?{QUERY}=zh-CN" lang="zh-CN" hreflang="zh-CN">中文</a></nav>'
)


class _AfterRoleCheck:
    """What a tab's wiring gets as its Blocks: its page-load handlers (`load`) run after
    `gate`, which lets only the tab's roles through (Consult: clinicians and admins; Compare:
    annotators and admins), so no page runs another role's handlers (and shows no role
    errors). Everything else is the Blocks itself."""

    def __init__(self, blocks: gr.Blocks, gate) -> None:
        self._blocks, self._gate = blocks, gate

    def load(self, fn, *args, **kwargs):
        return self._gate.success(fn, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._blocks, name)


def build_ui(
    config: AppConfig, db: Database, auth: Auth, flow: Consultations,
    comparisons: Comparisons | None = None, retrain: Retrain | None = None,
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
        with gr.Tabs(visible=False) as tabs:
            with gr.Tab(i18n("app.tab.consult"), id="consult", visible=False) as consult_tab:
                load_consult = build_consult_tab(config, db, auth, flow, comparisons)
            with gr.Tab(i18n("compare.tab"), id="compare", visible=False) as compare_tab:
                load_compare = build_compare_tab(config, db, auth, comparisons)
            # files made for one caller (exports, CSVs): theirs to download only
            downloads = Downloads(flow.uploads)
            with gr.Tab(i18n("leaderboard.tab"), id="leaderboard", visible=False) as board_tab:
                board_admin_only = build_leaderboard_tab(db, auth, board_tab, downloads)
            with gr.Tab(i18n("admin.tab"), id="admin", visible=False) as admin_tab:
                build_admin_tab(config, db, auth, admin_tab, downloads)
            with gr.Tab(i18n("retrain.tab"), id="retrain", visible=False) as retrain_tab:
                if retrain is not None:
                    build_retrain_tab(db, auth, retrain, retrain_tab)
            with gr.Tab(i18n("eval.tab"), id="eval", visible=False) as eval_tab:
                build_eval_tab(db, auth, eval_tab, downloads)

        def land(user: UserRecord) -> tuple:
            """Who is here, and the screen for their role."""
            clinical = user.role in CLINICAL
            return (
                t("app.logged_in_as", name=user.username),
                gr.update(visible=True, selected="consult" if clinical else "compare"),
                gr.update(visible=clinical),
                gr.update(visible=user.role in ANNOTATING_ROLES),
                gr.update(visible=user.role is UserRole.ADMIN),
            )

        def clinical_only(request: gr.Request) -> None:
            """Stops the Consult tab's page-load chain, quietly, for other roles."""
            with to_user_errors(request_language(request)):
                user = auth.user(request)
            if user.role not in CLINICAL:
                raise gr.Error("", visible=False, print_exception=False)

        def annotating_only(request: gr.Request) -> None:
            """Stops the Compare tab's page-load chain, quietly, for clinicians."""
            with to_user_errors(request_language(request)):
                user = auth.user(request)
            if user.role not in ANNOTATING_ROLES:
                raise gr.Error("", visible=False, print_exception=False)

        landing = blocks.load(auth.guard(*UserRole)(land), None,
                              [whoami, tabs, consult_tab, compare_tab, admin_mark],
                              api_visibility="private")  # fmt: skip
        # show_progress hidden: Gradio announces no "error" to screen readers for the quiet stop
        gate = landing.success(clinical_only, None, None, api_visibility="private",
                               show_progress="hidden")  # fmt: skip
        load_consult(_AfterRoleCheck(blocks, gate))
        compare_gate = landing.success(annotating_only, None, None, api_visibility="private",
                                       show_progress="hidden")  # fmt: skip
        load_compare(_AfterRoleCheck(blocks, compare_gate))

        def staff_tabs(user: UserRecord) -> tuple:
            """Leaderboard for annotators and admins, Admin (and the leaderboard's per-annotator
            tables) for admins; their handlers check the role too."""
            admin = user.role is UserRole.ADMIN
            return (gr.update(visible=user.role in ANNOTATING_ROLES), gr.update(visible=admin),
                    gr.update(visible=admin), gr.update(visible=admin and retrain is not None),
                    gr.update(visible=admin))

        landing.success(auth.guard(*UserRole)(staff_tabs), None,
                        [board_tab, admin_tab, board_admin_only, retrain_tab, eval_tab],
                        api_visibility="private", show_progress="hidden")  # fmt: skip
        build_consult_api(auth, flow, config.concurrency)
        if comparisons is not None:
            build_compare_api(auth, comparisons, config.concurrency)
    return blocks
