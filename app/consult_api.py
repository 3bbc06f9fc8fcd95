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

from app.auth import CLINICAL, Auth
from app.edge import optional_id
from app.language import current_language
from app.workflow import Answer, Consultations
from storage import InvalidInput, UserRecord

#: What a program that sent something other than {"text": str, "files": [...]} is told.
MALFORMED = 'The message must be {"text": "...", "files": [uploaded files]}.'


def build_consult_api(auth: Auth, flow: Consultations, concurrency: int) -> None:
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
        if not isinstance(message, dict) or not isinstance(message.get("files") or [], list):
            raise InvalidInput("malformed message", user_message=MALFORMED)
        files = [(display_name(f), file_path(f)) for f in message.get("files") or []]
        text = message.get("text") or ""
        if not isinstance(text, str) or not (variant is None or isinstance(variant, str)):
            raise InvalidInput("malformed message", user_message=MALFORMED)
        cid = optional_id(consultation_id, "consultation")
        # flow.ask takes only the caller's own uploads (storage.access.Uploads)
        answer = flow.ask(user, cid, text, files, variant, language=current_language())
        yield from stream_answer(flow, user, answer)

    gr.api(consult, api_name="consult", concurrency_limit=concurrency)


def file_path(f: object) -> object:
    """The server path a file value names (a FileData dict or a plain path); checked later."""
    return f.get("path") if isinstance(f, dict) else f


def display_name(f: object) -> str:
    """The name the user gave the file (never a server path)."""
    name = f.get("orig_name") if isinstance(f, dict) else None
    if isinstance(name, str) and name.strip():
        return name
    path = file_path(f)
    return Path(path).name if isinstance(path, str) else "file"


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
