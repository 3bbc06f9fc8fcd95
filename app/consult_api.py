"""`/consult`: one consultation turn per HTTP call, for programs (gradio_client, scripts).

The browser's Enter is two events, `/send` (store the turn, clear the box) then `/answer`
(stream into the chat). A program wants one call that takes the question and streams the
answer, without the Chatbot's re-rendering on every update:

    from gradio_client import Client, handle_file
    client = Client(url, auth=(name, password))
    job = client.submit({"text": "Chest pain since yesterday", "files": [handle_file("ecg.png")]},
                        None, None, api_name="/consult")   # consultation id, model variant
    for update in job: print(update["text"])                # the answer so far
    job.result()  # {"consultation_id", "message_id", "text", "finish_reason", "error"}

Same rules as the tab: clinician or admin only, the consultation must be the caller's, uploads
pass intake first, the answer is stored however it ends. Files must be the caller's own
uploads to this server (gradio_client uploads `handle_file` values itself): a path anyone could
name on the server is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import gradio as gr

from app.auth import CLINICAL, Auth, UploadRegistry
from app.workflow import Answer, Consultations
from storage import InvalidInput, UserRecord


def build_consult_api(
    auth: Auth, flow: Consultations, uploads: UploadRegistry, concurrency: int
) -> None:
    """Register `/consult` in the current Blocks."""
    guard = auth.guard(*CLINICAL)

    @guard
    def consult(
        user: UserRecord,
        message: dict,
        consultation_id: int | None = None,
        variant: str | None = None,
    ) -> Iterator[dict]:
        """Ask in a consultation (None: a new one) and stream the answer as it is written.

        `message` is {"text": str, "files": [uploaded files]}. Each update is a dict with the
        consultation id and the answer text so far; the last one also has the stored message id,
        the finish reason (stop, length, cut_off, error, cancelled) and the error, if any.
        """
        if not isinstance(message, dict):
            raise InvalidInput('message must be {"text": ..., "files": [...]}.')
        files = []
        for f in message.get("files") or []:
            path = f.get("path") if isinstance(f, dict) else f
            if not isinstance(path, str) or not uploads.allowed(user.username, path):
                raise InvalidInput("Attach files by uploading them to this server first.")
            name = f.get("orig_name") if isinstance(f, dict) else None
            files.append((name or Path(path).name, path))
        text = str(message.get("text") or "")
        yield from stream_answer(flow, user, flow.ask(user, consultation_id, text, files, variant))

    gr.api(consult, api_name="consult", concurrency_limit=concurrency)


def stream_answer(flow: Consultations, user: UserRecord, answer: Answer) -> Iterator[dict]:
    """The answer's text as it grows, then how it ended (recorded first, even on Stop)."""
    with closing(flow.streamed(user, answer)) as texts:
        for text in texts:
            yield {"consultation_id": answer.consultation_id, "text": text}
    out = answer.outcome
    yield {
        "consultation_id": answer.consultation_id,
        "message_id": answer.recorded.id if answer.recorded else None,
        "text": out.text if out else "",
        "finish_reason": out.finish_reason if out else None,
        "error": out.error.user_message if out and out.error else None,
    }
