"""The app in English and Chinese: the catalogue, the language a request speaks, the page in a
real Chromium, and each role's landing screen.

Unit parts: every catalogue entry exists in both languages with the same fields; every error
class has its Chinese; error messages and ids are translated at the edge; no component of the
page carries an English-only string; the system prompt follows the language.

Server parts (the launched app on the embedded demo model, through `gradio_client` and HTTP): a
malformed id with `Accept-Language: zh-CN` comes back in Chinese, the request guard's refusals
follow the header or the switch's cookie, and a streamed answer's failure status is Chinese.

Browser parts (marked `browser`, Debian's chromium, as in tests/test_browser.py): the page for a
Chromium whose locale is zh-CN (login form, labels, `<html lang="zh-CN">`, a Chinese turn typed,
answered and rendered), the switch to English and back, and an annotator's page (no Consult
tab, only Compare, no error badge anywhere). Screenshots go to tests/artifacts/:

    OMP_NUM_THREADS=1 python -m pytest tests/test_i18n.py -q
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from apphelpers import PASSWORD, login, running_app
from gradio.i18n import I18nData
from gradio_client import Client
from gradio_client.exceptions import AppError
from test_browser import (
    BOTS,
    USERS,
    WAIT_MS,
    alnum,
    chromium,  # noqa: F401 - fixture
    demo_app,  # noqa: F401 - fixture
    wait_for_answer,
)

import model.errors
import storage.errors
from app.auth import Auth
from app.config import AppConfig
from app.edge import Denied, to_user_errors
from app.i18n import CATALOGUE, ERRORS, I18N, PAGE, SERVER, error_text, t, translate
from app.language import COOKIE, choose, from_accept_language, speaking
from app.ui import build_ui
from app.workflow import Consultations, UploadRejected
from model.engines import EngineRegistry
from model.intake import errors as intake_errors
from model.prompt import SYSTEM_PROMPTS
from model.serve import free_port
from storage import (
    Database,
    MessageRole,
    NotFound,
    ensure_model_variant,
    get_user_by_name,
    history,
    list_audit,
    list_consultations,
)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
#: A clinician's first turn, in Chinese.
ZH_MESSAGE = "患者男性，65岁，胸痛一天，心电图见附件。"
_FIELD = re.compile(r"\{(\w+)\}")
_CJK = re.compile(r"[\u3400-\u9fff]")
#: What a component shows in Gradio's config: only these props hold words for people.
TEXT_PROPS = ("label", "placeholder", "info", "value")
#: Component values that are not words: the brand, the language switch (each language named
#: in itself), emoji.
NOT_WORDS = {"## PulseMind"}


def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# --- the catalogue ---------------------------------------------------------------------------


def test_every_entry_in_both_languages():
    assert set(I18N.translations_dict) == {"en", "zh-CN"}
    for key, entry in CATALOGUE.items():
        assert set(entry) == {"en", "zh-CN"}, key
        en, zh = entry["en"], entry["zh-CN"]
        assert en.strip() and zh.strip(), key
        # the same fields (the Chinese may leave one out: auth.role_cannot names no action)
        assert set(_FIELD.findall(zh)) <= set(_FIELD.findall(en)), key
        assert len(set(_FIELD.findall(en)) - set(_FIELD.findall(zh))) <= 1, key
        if re.search("[A-Za-z]{3}", _FIELD.sub("", en)) and key != "common.complete":
            assert _CJK.search(zh), f"{key}: the Chinese is not Chinese: {zh!r}"
    for key, entry in PAGE.items():  # Gradio's frontend reads page text as ICU messages
        assert "{" not in entry["en"] + entry["zh-CN"], key
        assert I18N.translations_dict["zh-CN"][key] == entry["zh-CN"]


def _subclasses(cls: type) -> set[type]:
    return {cls} | {s for sub in cls.__subclasses__() for s in _subclasses(sub)}


def test_every_error_class_has_its_chinese():
    """A new error class in model/ or storage/ must bring its Chinese (app.i18n.ERRORS)."""
    modules = {model.errors.__name__, storage.errors.__name__, intake_errors.__name__}
    classes = {c for c in _subclasses(model.errors.PulseMindError) if c.__module__ in modules}
    assert classes - set(ERRORS) == set()
    for cls in classes:
        assert CATALOGUE[f"error.{cls.__name__}"]["en"] == cls.user_message  # English: the class


def test_errors_translated_at_the_edge():
    from app.edge import parse_id

    with pytest.raises(NotFound) as exc:
        parse_id("abc", "consultation")
    assert error_text(exc.value, exc.value.user_message, "zh-CN") == "该会诊不存在。"
    assert (
        error_text(exc.value, exc.value.user_message, "en") == "This consultation does not exist."
    )
    role = Denied("Your role (annotator) cannot send.")
    assert error_text(role, str(role), "zh-CN") == "您的角色（标注员）无权执行此操作。"
    # a message already written as "English / 中文" gives the reader's half
    both = NotFound("x", user_message="This consultation was deleted. / 此会诊已删除。")
    assert error_text(both, both.user_message, "en") == "This consultation was deleted."
    assert error_text(both, both.user_message, "zh-CN") == "此会诊已删除。"
    # a bad file keeps its name; uncatalogued specifics follow the class's Chinese
    pdf = intake_errors.EncryptedPdf(filename="lab.pdf")
    assert error_text(pdf, str(pdf), "zh-CN") == f"lab.pdf：{ERRORS[intake_errors.EncryptedPdf]}"
    rejected = UploadRejected(["a.png: The image is too long and thin."])
    assert error_text(rejected, str(rejected), "zh-CN") == (
        "部分文件无法使用。（a.png: The image is too long and thin.）"
    )
    # the generic message keeps its reference
    generic = t("edge.generic", "en", ref="ab12cd34")
    assert "ab12cd34" in translate(generic, "zh-CN") and _CJK.search(translate(generic, "zh-CN"))
    # to_user_errors: the gr.Error in the current request's language
    import gradio as gr

    with speaking("zh-CN"), pytest.raises(gr.Error) as shown:
        with to_user_errors():
            raise storage.errors.DatabaseBusy("locked")
    assert shown.value.message == ERRORS[storage.errors.DatabaseBusy]
    assert shown.value.title == "错误"


def test_language_choice():
    assert choose(None, None, None) == "en"
    assert choose(None, None, "zh-CN,zh;q=0.9,en;q=0.8") == "zh-CN"
    assert choose(None, None, "fr-FR,fr;q=0.9,zh-TW;q=0.5,en;q=0.4") == "zh-CN"
    assert choose(None, None, "en-GB;q=0.5, zh;q=0.8") == "zh-CN"
    assert choose(None, None, "de, fr") == "en"
    assert choose(None, "en", "zh-CN") == "en"  # the switch's cookie beats the browser
    assert choose("zh-CN", "en", "en") == "zh-CN"  # ?lang= beats the cookie
    assert choose("xx", "zh-CN", "en") == "zh-CN"  # an unknown ?lang= is ignored
    assert from_accept_language("zh;q=0, en") == "en"


def test_no_english_only_string_in_the_page(db, tmp_path):
    """Every label, placeholder, button and static text of the page (the Consult tab's
    included) is page text from app.i18n, not a bare English string."""
    config = AppConfig(data_dir=str(tmp_path / "data"))
    flow = Consultations(db, EngineRegistry())
    try:
        blocks = build_ui(config, db, Auth(db), flow)
        components = blocks.get_config_file()["components"]
    finally:
        flow.close()
    found, english = 0, []
    for c in components:
        props = c.get("props", {})
        if c.get("type") == "api":  # gr.api's parameters: not on the page
            continue
        if c.get("type") == "html" and props.get("elem_id") == "language-switch":
            continue
        for prop in TEXT_PROPS:
            value = props.get(prop)
            if prop == "value" and c.get("type") not in ("button", "markdown", "html"):
                continue
            if isinstance(value, I18nData | str) and str(value).startswith("__i18n__"):
                found += 1
                assert json.loads(str(value).removeprefix("__i18n__"))["key"] in PAGE
            elif isinstance(value, str) and re.search("[A-Za-z]", value) and value not in NOT_WORDS:
                english.append(f"{c.get('type')} {props.get('elem_id') or ''} {prop}={value!r}")
    assert english == [], "English-only strings on the page (put them in app/i18n.py PAGE)"
    assert found >= 15  # the Consult tab's labels, placeholders and buttons were seen


def test_system_prompt_follows_the_language(db, demo_model_dir, tmp_path):
    from storage import add_user_message, create_consultation, create_user

    ensure_model_variant(db, "demo", "embedded", str(demo_model_dir))
    alice = create_user(db, "alice", PASSWORD, "clinician")
    cid = create_consultation(db, alice.id, "胸痛").id
    add_user_message(db, cid, alice.id, ZH_MESSAGE, [])
    with Consultations(db, EngineRegistry()) as flow:
        for language in ("zh-CN", "en"):
            answer = flow.answer(alice, cid, language=language)  # lazy: nothing runs yet
            assert answer.stream.messages[0].text == SYSTEM_PROMPTS[language]


# --- server messages -------------------------------------------------------------------------


@pytest.fixture
def app_url(demo_model_dir, tmp_path):
    from apphelpers import make_users

    db = Database.sqlite(tmp_path / "pulsemind.db")
    db.upgrade()
    make_users(db)
    config = AppConfig(data_dir=str(tmp_path / "data"), demo_model_dir=str(demo_model_dir))
    with running_app(config, db) as url:
        yield url, db


def test_server_messages_in_the_request_language(app_url):
    url, db = app_url
    zh = Client(url, auth=("alice", PASSWORD), verbose=False, headers={"Accept-Language": "zh-CN"})
    with pytest.raises(AppError) as refused:
        zh.predict("abc", api_name="/open_consultation")  # a malformed id
    assert "该会诊不存在。" in str(refused.value)
    en = Client(url, auth=("alice", PASSWORD), verbose=False)  # no Accept-Language: English
    with pytest.raises(AppError, match="This consultation does not exist."):
        en.predict("abc", api_name="/open_consultation")
    ann = Client(url, auth=("ann", PASSWORD), verbose=False, headers={"Accept-Language": "zh"})
    with pytest.raises(AppError, match="您的角色（标注员）无权执行此操作。"):
        ann.predict(None, api_name="/open_consultation")

    # the request guard answers before Gradio: header, then the switch's cookie
    r = httpx.post(f"{url}/gradio_api/nowhere", headers={"Accept-Language": "zh-CN"}, timeout=30)
    assert r.status_code == 404 and r.json() == {"error": "未找到。"}
    client = login(url, "alice")
    client.cookies.set(COOKIE, "zh-CN")
    r = client.post("/gradio_api/nowhere", headers={"Accept-Language": "en"})
    assert r.json() == {"error": "未找到。"}
    client.cookies.set(COOKIE, "en")
    assert client.post("/gradio_api/nowhere").json() == {"error": "Not found."}
    client.close()


def test_streamed_failure_in_chinese(app_url):
    """A generator handler speaks the request's language in every step: the status and the
    note in the chat after the model server could not be reached are Chinese."""
    url, db = app_url
    down = f"http://127.0.0.1:{free_port('127.0.0.1')}/v1"  # nothing listens there
    ensure_model_variant(db, "down", down, "tiny")
    zh = Client(url, auth=("alice", PASSWORD), verbose=False, headers={"Accept-Language": "zh-CN"})
    sent = zh.predict({"text": ZH_MESSAGE, "files": []}, None, api_name="/send")
    cid = next(c.id for c in list_consultations(db, get_user_by_name(db, "alice").id))
    assert sent is not None
    chat, status = zh.predict(cid, "down", api_name="/answer")
    assert status == "⚠️ " + ERRORS[model.errors.ModelUnreachable]
    last = chat[-1]["content"]
    text = last if isinstance(last, str) else "".join(p.get("text", "") for p in last)
    assert ERRORS[model.errors.ModelUnreachable] in text and "请点击 **重试**" in text


# --- the page in Chromium ----------------------------------------------------------------------


def _shot(page, name: str) -> None:
    page.screenshot(path=str(artifacts() / name))


@pytest.mark.browser
def test_chinese_page_and_turn(chromium, demo_app):  # noqa: F811 - fixtures
    url, db = demo_app
    alice = get_user_by_name(db, "alice")
    context = chromium.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(url + "/")
        assert page.evaluate("document.documentElement.lang") == "zh-CN"
        page.get_by_label("用户名").fill("alice")  # Gradio's login form, in Chinese
        page.get_by_label("密码").fill(PASSWORD)
        page.get_by_role("button", name="登录").click()
        page.get_by_text("演示模型", exact=True).wait_for(state="visible", timeout=WAIT_MS)
        assert page.evaluate("document.documentElement.lang") == "zh-CN"
        body = page.locator("body").inner_text()
        for key in ("consult.consultations", "consult.new", "consult.rename", "consult.model",
                    "consult.stop", "consult.retry", "app.logout"):  # fmt: skip
            assert PAGE[key]["zh-CN"] in body, key
        assert "New consultation" not in body and "Consultations" not in body
        assert SERVER["app.logged_in_as"]["zh-CN"].split("*")[0] in body  # made on the server
        assert "不可用于患者诊疗" in body  # the banner speaks to clinicians...
        hint = page.locator(".operator-hint")
        assert "--model-url" in hint.inner_text()  # ...the operator's hint beside it, smaller
        assert hint.evaluate("e => parseFloat(getComputedStyle(e).fontSize)") < page.get_by_text(
            "演示模型", exact=True
        ).evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
        textarea = page.locator("#consult-input textarea")
        assert textarea.get_attribute("placeholder") == PAGE["consult.placeholder"]["zh-CN"]
        fonts = page.evaluate(
            "getComputedStyle(document.querySelector('#consult-chat')).fontFamily"
        )
        assert "Noto Sans CJK SC" in fonts and "Microsoft YaHei" in fonts

        textarea.fill(ZH_MESSAGE)
        textarea.press("Enter")
        page.locator(USERS).last.wait_for(state="visible", timeout=WAIT_MS)
        assert ZH_MESSAGE in page.locator(USERS).last.inner_text()
        cid, answer, _ = wait_for_answer(page, db, alice.id)
        msgs = history(db, cid, user_id=alice.id)
        assert [m.role for m in msgs] == [MessageRole.USER, MessageRole.ASSISTANT]
        assert msgs[0].text == ZH_MESSAGE
        assert alnum(page.locator(BOTS).last.inner_text()) == alnum(answer)
        # the page's glyphs come from a CJK font, not boxes
        assert page.evaluate("document.fonts.check('16px \"Noto Sans CJK SC\"', '胸痛')")
        _shot(page, "i18n-zh-consult.png")
    except BaseException:
        _shot(page, "i18n-zh-failure.png")
        raise
    finally:
        context.close()


@pytest.mark.browser
def test_switch_to_english_and_back(chromium, demo_app):  # noqa: F811 - fixtures
    url, _ = demo_app
    context = chromium.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    assert context.request.post(url + "/login", form={"username": "alice", "password": PASSWORD}).ok
    page = context.new_page()
    try:
        page.goto(url + "/")
        page.get_by_role("button", name="新建会诊").wait_for(timeout=WAIT_MS)
        page.get_by_role("link", name="English").click()
        page.get_by_role("button", name="New consultation").wait_for(timeout=WAIT_MS)
        page.get_by_text("Demo model", exact=True).wait_for(timeout=WAIT_MS)
        assert page.evaluate("document.documentElement.lang") == "en"
        assert "Logged in as" in page.locator("#whoami").inner_text()  # server text follows
        cookie = {c["name"]: c["value"] for c in context.cookies()}
        assert cookie[COOKIE] == "en"
        _shot(page, "i18n-switched-en.png")

        page.goto(url + "/")  # the choice holds for the session, whatever the browser says
        page.get_by_role("button", name="New consultation").wait_for(timeout=WAIT_MS)
        assert page.evaluate("document.documentElement.lang") == "en"

        page.get_by_role("link", name="中文").click()
        page.get_by_role("button", name="新建会诊").wait_for(timeout=WAIT_MS)
        page.get_by_text("演示模型", exact=True).wait_for(timeout=WAIT_MS)
        assert page.evaluate("document.documentElement.lang") == "zh-CN"
        assert "当前用户" in page.locator("#whoami").inner_text()
        assert {c["name"]: c["value"] for c in context.cookies()}[COOKIE] == "zh-CN"
        _shot(page, "i18n-switched-back-zh.png")
    except BaseException:
        _shot(page, "i18n-switch-failure.png")
        raise
    finally:
        context.close()


#: Anything Gradio marks as an error: status badges, toasts.
ERROR_MARKS = '[data-testid="status-tracker"] .error, span.error, .toast-body, .toast-wrap .error'


@pytest.mark.browser
def test_annotator_lands_on_their_own_page(chromium, demo_app):  # noqa: F811 - fixtures
    url, db = demo_app
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    assert context.request.post(url + "/login", form={"username": "ann", "password": PASSWORD}).ok
    page = context.new_page()
    try:
        page.goto(url + "/")
        # Compare is the annotator's only tab (one variant here: the tab says two are needed)
        page.get_by_role("button", name="Start comparison").first.wait_for(timeout=WAIT_MS)
        assert page.get_by_role("tab", name="Compare", exact=True).count() == 1
        assert "ann" in page.locator("#whoami").inner_text()
        time.sleep(2)  # the page-load chain has ended (the Consult handlers would run now)
        assert page.locator("#consult-chat").count() == 0
        assert page.get_by_role("tab", name="Consult", exact=True).count() == 0
        assert page.get_by_text("New consultation").count() == 0
        assert page.locator(ERROR_MARKS).count() == 0
        assert "Error" not in page.locator("body").inner_text()
        assert not page.locator("footer").is_visible()  # "Use via API": admins only
        ann = get_user_by_name(db, "ann")
        assert list_audit(db, user_id=ann.id, outcome="denied") == []  # nothing was refused
        _shot(page, "i18n-annotator-landing.png")

        # the same page in Chinese
        page.get_by_role("link", name="中文").click()
        page.get_by_role("button", name="开始对比").first.wait_for(timeout=WAIT_MS)
        time.sleep(2)
        assert (
            page.locator(ERROR_MARKS).count() == 0
            and "错误" not in page.locator("body").inner_text()
        )
        _shot(page, "i18n-annotator-landing-zh.png")
    except BaseException:
        _shot(page, "i18n-annotator-failure.png")
        raise
    finally:
        context.close()

    # an admin sees Consult and the API link
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    assert context.request.post(url + "/login", form={"username": "root", "password": PASSWORD}).ok
    page = context.new_page()
    try:
        page.goto(url + "/")
        page.get_by_role("button", name="New consultation").wait_for(timeout=WAIT_MS)
        page.get_by_role("button", name="Use via API").wait_for(state="visible", timeout=WAIT_MS)
        assert page.get_by_role("tab", name="Compare", exact=True).count() == 1
    finally:
        context.close()
