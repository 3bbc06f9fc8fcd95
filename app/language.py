"""Which language a request speaks (en or zh-CN), for the page and for messages made on the server.

One rule, used by the page and by every handler, so what the server says matches what the page
shows: the language switch (`?lang=en` / `?lang=zh-CN`, remembered in the `pulsemind-lang`
session cookie) wins, else the browser's `Accept-Language`, else English. Any Chinese tag
(zh, zh-CN, zh-TW, ...) reads as zh-CN: Simplified Chinese is the only Chinese there is.

- The page: Gradio's frontend picks its locale from `navigator.language` before the app's own
  scripts could run (`head=` is injected after the locale is set), so `LanguagePage`, an ASGI
  middleware in front of Gradio, rewrites the HTML of `/` on its way out: `<html lang>` and a
  first script that makes `navigator.language` the chosen language. Gradio then translates
  every component label from `app.i18n.I18N` and sets `<html lang>` itself.
- Messages made on the server (errors, statuses, notes in the chat): `Auth.guard` reads the
  request's language (`request_language`) and makes it current (`speaking`) while the handler
  runs; `app.i18n.t` reads it.

    with speaking(request_language(request)):
        t("consult.open_first")
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from starlette.datastructures import Headers, QueryParams
from starlette.requests import cookie_parser

#: The languages of the app, as BCP 47 tags (Gradio's locale names, `model.prompt` keys).
LANGUAGES = ("en", "zh-CN")
DEFAULT_LANGUAGE = "en"
#: The switch's choice, for the browser session (no Max-Age: it ends with the browser).
COOKIE = "pulsemind-lang"
#: The query parameter the switch's links set.
QUERY = "lang"
#: Accept-Language headers are a few dozen bytes; a longer one is not parsed further.
MAX_ACCEPT_LANGUAGE_CHARS = 512
#: The page's title where Gradio gives none (its login page).
PAGE_TITLE = "PulseMind"

_CURRENT: ContextVar[str] = ContextVar("pulsemind_language", default=DEFAULT_LANGUAGE)
T = TypeVar("T")


def supported(tag: object) -> str | None:
    """The app's language for a BCP 47 tag (`zh-Hans-CN` -> zh-CN, `en-GB` -> en), else None."""
    if not isinstance(tag, str):
        return None
    primary = tag.strip().lower().replace("_", "-").split("-")[0]
    return {"en": "en", "zh": "zh-CN"}.get(primary)


def from_accept_language(header: str | None) -> str | None:
    """The first supported language of an Accept-Language header, by quality (RFC 9110)."""
    ranked = []
    for i, part in enumerate((header or "")[:MAX_ACCEPT_LANGUAGE_CHARS].split(",")):
        tag, _, params = part.partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if q > 0 and (lang := supported(tag)):
            ranked.append((-q, i, lang))
    return min(ranked)[2] if ranked else None


def choose(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """The switch (`?lang=`, then its cookie) wins, else the browser's languages, else English."""
    return (
        supported(query)
        or supported(cookie)
        or from_accept_language(accept_language)
        or DEFAULT_LANGUAGE
    )


def request_language(request: object) -> str:
    """The language of a `gr.Request` or Starlette request (None, e.g. a direct call: English)."""
    headers = getattr(request, "headers", None) if request is not None else None
    if headers is None:
        return DEFAULT_LANGUAGE
    cookies = cookie_parser(headers.get("cookie", ""))
    query = getattr(request, "query_params", None)
    return choose(
        query.get(QUERY) if query is not None else None,
        cookies.get(COOKIE),
        headers.get("accept-language"),
    )


def scope_language(scope: dict) -> str:
    """The language of an ASGI request scope (for middleware that answers before Gradio)."""
    headers = Headers(scope=scope)
    query = QueryParams(scope.get("query_string", b""))
    cookies = cookie_parser(headers.get("cookie", ""))
    return choose(query.get(QUERY), cookies.get(COOKIE), headers.get("accept-language"))


def current_language() -> str:
    """The language of the request being handled (English outside one)."""
    return _CURRENT.get()


@contextmanager
def speaking(language: str) -> Iterator[str]:
    """Make `language` current within the block (`app.i18n.t` reads it)."""
    token = _CURRENT.set(supported(language) or DEFAULT_LANGUAGE)
    try:
        yield language
    finally:
        _CURRENT.reset(token)


def speaking_each(language: str, steps: Iterator[T]) -> Iterator[T]:
    """Iterate `steps` with `language` current in every step, closing `steps` when closed.

    Gradio runs each step of a generator handler in a worker thread under a fresh copy of the
    request's context, so a language made current in one step is gone in the next: it is made
    current again around each one.
    """
    try:
        while True:
            with speaking(language):
                try:
                    item = next(steps)
                except StopIteration:
                    return
            yield item
    finally:
        with speaking(language):
            steps.close()  # e.g. Stop: the handler's own cleanup records the partial answer


# --- the page --------------------------------------------------------------------------------


def page_script(language: str) -> str:
    """The first script of the page: Gradio's frontend reads its locale from navigator."""
    tag = json.dumps(language)
    return (
        "<script>(() => { const lang = " + tag + ";"
        " for (const name of ['language', 'languages']) {"
        " Object.defineProperty(navigator, name,"
        " {get: () => (name === 'language' ? lang : [lang]), configurable: true}); }"
        " document.documentElement.lang = lang; })();</script>"
    )


class LanguagePage:
    """ASGI middleware: the app's page (`GET /`) in the request's language.

    Sets `<html lang>`, makes the browser's locale the chosen language for Gradio's frontend
    (`page_script`), and remembers a `?lang=` choice in the `pulsemind-lang` cookie. Only the
    page's HTML is held and rewritten; everything else passes straight through.
    """

    PAGES = frozenset({"", "/"})

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") not in ("GET", "HEAD")
            or scope.get("path") not in self.PAGES
        ):
            await self.app(scope, receive, send)
            return
        language = scope_language(scope)
        chosen = supported(QueryParams(scope.get("query_string", b"")).get(QUERY))
        start: dict = {}
        body = bytearray()

        async def rewriting_send(message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body"):
                return
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            content_type = dict(start.get("headers", [])).get(b"content-type", b"")
            out = bytes(body)
            if start.get("status") == 200 and content_type.startswith(b"text/html"):
                out = localized_html(out.decode("utf-8"), language).encode("utf-8")
            if chosen:
                headers.append((b"set-cookie", f"{COOKIE}={chosen}; Path=/; SameSite=Lax".encode()))
            headers.append((b"content-length", str(len(out)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": out, "more_body": False})

        await self.app(scope, receive, rewriting_send)


def localized_html(page: str, language: str) -> str:
    """Gradio's page with `<html lang>` set and `page_script` first in `<head>`; a page without a
    title (Gradio's login page has none) gets the app's name, for tabs and screen readers."""
    page = page.replace('lang="en"', f'lang="{language}"', 1)
    head = "<head>" + page_script(language)
    if not re.search(r"<title>\s*[^<\s]", page):
        page = re.sub(r"<title>\s*</title>", "", page)
        head += f"<title>{PAGE_TITLE}</title>"
    return page.replace("<head>", head, 1)
