"""The Gradio Blocks: one page, a tab per workflow. Tabs only render; handlers live per tab."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from app.auth import Auth
from app.config import AppConfig
from app.consult_api import build_consult_api
from app.consult_tab import build_consult_tab
from app.workflow import Consultations
from storage import Database

CSS_PATH = Path(__file__).resolve().parents[1] / "assets" / "app.css"


def build_ui(
    config: AppConfig, db: Database, auth: Auth, flow: Consultations
) -> gr.Blocks:
    with gr.Blocks(title="PulseMind", analytics_enabled=False) as blocks:
        with gr.Row():
            gr.Markdown("## PulseMind")
            whoami = gr.Markdown(elem_id="whoami")
            gr.Button("Log out", link="/logout", size="sm", scale=0)
        with gr.Tabs():
            with gr.Tab("Consult", id="consult"):
                load_consult = build_consult_tab(config, db, auth, flow)

        def who(request: gr.Request) -> str:
            return f"Logged in as **{request.username}**" if request.username else ""

        blocks.load(who, None, whoami, api_visibility="private")
        load_consult(blocks)
        build_consult_api(auth, flow, config.concurrency)
    return blocks
