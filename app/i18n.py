"""Every sentence the app shows people, in English and Chinese (zh-CN): one catalogue.

Two kinds of text, two paths:

- **Page text** (`PAGE`: labels, placeholders, buttons, tab names) is static: components get
  `i18n("consult.new")` and Gradio's frontend shows it in the page's language (`I18N`, passed to
  `gr.mount_gradio_app`; the language is chosen per request in `app.language`).
- **Server text** (`SERVER`: statuses, notes in the chat, the demo banner, the login message)
  and **error messages** are made on the server: `t("consult.open_first")` in the language of
  the request being handled (`app.language.speaking`, set by `Auth.guard`). Errors keep their
  English `user_message` as the source of truth; the edge translates it by looking it up here
  (`translate`: exact sentences, then templates such as "This {what} does not exist."), else by
  the error's class (`ERRORS`: each class's own `user_message` and its Chinese).

    t("consult.note.error", error="...")             # the current request's language
    translate("This consultation does not exist.", "zh-CN")   # '该会诊不存在。'

Page text must not hold `{` `}` (Gradio's frontend reads it as ICU message format). A new
sentence goes here with both languages; `tests/test_i18n.py` checks every entry.
"""

from __future__ import annotations

import re
from functools import cache

import gradio as gr

from app.language import DEFAULT_LANGUAGE, LANGUAGES, current_language, supported
from model.errors import (
    IntakeError,
    ModelDiedMidAnswer,
    ModelError,
    ModelRejectedInput,
    ModelTimeout,
    ModelUnreachable,
    PulseMindError,
)
from model.intake import errors as intake
from storage.errors import (
    Conflict,
    DatabaseBusy,
    DatabaseUnavailable,
    InvalidInput,
    NotFound,
    PermissionDenied,
    StorageError,
)

Entry = dict[str, str]

#: Static text of the page, translated by Gradio's frontend.
PAGE: dict[str, Entry] = {
    "app.logout": {"en": "Log out", "zh-CN": "退出登录"},
    "app.tab.consult": {"en": "Consult", "zh-CN": "会诊"},
    "annotate.empty": {
        "en": "### Nothing to annotate yet\n\nComparisons waiting for your review will appear "
        "here.",
        "zh-CN": "### 暂无待标注内容\n\n有需要您评审的对比任务时，会显示在这里。",
    },
    "consult.search": {"en": "Search titles", "zh-CN": "按标题搜索"},
    "consult.consultations": {"en": "Consultations", "zh-CN": "会诊记录"},
    "consult.delete": {"en": "Delete consultation", "zh-CN": "删除会诊"},
    "consult.new": {"en": "New consultation", "zh-CN": "新建会诊"},
    "consult.title": {"en": "Title", "zh-CN": "标题"},
    "consult.rename": {"en": "Rename", "zh-CN": "重命名"},
    "consult.model": {"en": "Model", "zh-CN": "模型"},
    "consult.report_text": {"en": "Report text", "zh-CN": "报告文本"},
    "consult.attachment": {"en": "Attachment", "zh-CN": "附件"},
    "consult.extracted_text": {"en": "Extracted text", "zh-CN": "提取的文本"},
    "consult.chat": {"en": "Consultation", "zh-CN": "会诊对话"},
    "consult.placeholder": {
        "en": "Describe the case; attach lab reports (PDF, photos), images, DICOM",
        "zh-CN": "请描述病例；可附上检验报告（PDF 或照片）、医学影像、DICOM 文件",
    },
    "consult.message": {"en": "Your message", "zh-CN": "您的消息"},
    "consult.stop": {"en": "Stop", "zh-CN": "停止"},
    "consult.retry": {"en": "Retry / regenerate", "zh-CN": "重试 / 重新生成"},
    "consult.answer": {"en": "Answer", "zh-CN": "回答"},
    "consult.version": {"en": "Version", "zh-CN": "版本"},
    "consult.comment": {"en": "Comment on this answer", "zh-CN": "对此回答的意见"},
    # Gradio's screen-reader status line asks for this key; its own catalogue lacks it (6.31)
    "common.complete": {"en": "Done", "zh-CN": "已完成"},
}

#: Text the server writes into the page or a message, in the request's language.
SERVER: dict[str, Entry] = {
    "app.logged_in_as": {"en": "Logged in as **{name}**", "zh-CN": "当前用户：**{name}**"},
    "login.message": {
        "en": "PulseMind — log in with your account.",
        "zh-CN": "PulseMind —— 请使用您的账户登录。",
    },
    "login.first_admin": {
        "en": "No users exist yet. Create the first admin with:",
        "zh-CN": "尚无任何用户。请用以下命令创建第一个管理员：",
    },
    "consult.demo_banner": {
        "en": "⚠️ **Demo model** — answers are random text, not for patient care.",
        "zh-CN": "⚠️ **演示模型** —— 回答是随机生成的文本，不可用于患者诊疗。",
    },
    "consult.demo_hint": {
        "en": "For operators: start the app with `--model-url` to use a real model.",
        "zh-CN": "运维提示：启动时加上 `--model-url` 参数即可使用真实模型。",
    },
    "consult.note.cut_off": {
        "en": "⚠️ *The answer was cut off: {error} Press **Retry** to ask again.*",
        "zh-CN": "⚠️ *回答被中断：{error} 请点击 **重试** 重新提问。*",
    },
    "consult.note.error": {
        "en": "⚠️ *{error} Press **Retry** to ask again.*",
        "zh-CN": "⚠️ *{error} 请点击 **重试** 重新提问。*",
    },
    "consult.note.cancelled": {"en": "*(stopped)*", "zh-CN": "*（已停止）*"},
    "consult.status.failed": {"en": "⚠️ {error}", "zh-CN": "⚠️ {error}"},
    "consult.did_not_finish": {"en": "The answer did not finish.", "zh-CN": "回答未能完成。"},
    "consult.open_first": {"en": "Open a consultation first.", "zh-CN": "请先打开一个会诊。"},
    "consult.attachment_choice": {
        "en": "{name} (message {seq})",
        "zh-CN": "{name}（第 {seq} 条消息）",
    },
    # app/edge.py, app/auth.py
    "edge.generic": {
        "en": "Something went wrong on the server (reference {ref}). What you saved before is "
        "kept; try again, and give the reference to your administrator if it happens again.",
        "zh-CN": "服务器出现异常（参考编号 {ref}）。您之前保存的内容都还在；请重试，"
        "如果再次出现，请将参考编号告知管理员。",
    },
    "edge.error_title": {"en": "Error", "zh-CN": "错误"},
    "edge.not_exist": {"en": "This {what} does not exist.", "zh-CN": "该{what}不存在。"},
    "auth.denied": {"en": "You are not allowed to do this.", "zh-CN": "您无权执行此操作。"},
    "auth.log_in": {"en": "Please log in.", "zh-CN": "请先登录。"},
    "auth.role_cannot": {
        "en": "Your role ({role}) cannot {action}.",
        "zh-CN": "您的角色（{role}）无权执行此操作。",
    },
    # app/request_guard.py, app/server.py
    "guard.not_uploaded": {
        "en": "Attach files by uploading them here first.",
        "zh-CN": "请先在本页上传文件，再将其作为附件发送。",
    },
    "guard.not_found": {"en": "Not found.", "zh-CN": "未找到。"},
    "guard.too_large": {"en": "This request is too large.", "zh-CN": "请求内容过大。"},
    # app/workflow.py, app/consult_api.py, storage/ (specific user_message= texts)
    "flow.empty_turn": {
        "en": "Type a message or attach a file.",
        "zh-CN": "请输入内容或添加附件。",
    },
    "flow.no_question": {
        "en": "There is no question to answer yet.",
        "zh-CN": "目前还没有需要回答的问题。",
    },
    "flow.already_answered": {
        "en": "The last message already has an answer; regenerate it instead.",
        "zh-CN": "最后一条消息已有回答；如需新的回答，请重新生成。",
    },
    "flow.upload_rejected": {
        "en": "Some files could not be used.",
        "zh-CN": "部分文件无法使用。",
    },
    "flow.no_variant": {"en": "No model variant is active.", "zh-CN": "当前没有可用的模型。"},
    "flow.unknown_variant": {
        "en": "No active model variant named {name}.",
        "zh-CN": "没有名为 {name} 的可用模型。",
    },
    "api.malformed": {
        "en": 'The message must be {"text": "...", "files": [uploaded files]}.',
        "zh-CN": '消息格式应为 {"text": "...", "files": [已上传的文件]}。',
    },
    # app/compare_api.py
    "api.compare_source": {
        "en": "Give one of: a message, a case id, a comparison turn id to continue (with a "
        "message), or your consultation id.",
        "zh-CN": "请只提供以下其中一项：一条消息、一个病例编号、要继续的对比轮次编号（附消息），"
        "或您自己的会诊编号。",
    },
    "api.bad_vote": {
        "en": "The vote must map proactiveness, accuracy, usefulness, language_quality and "
        "overall to a, b or tie (overall also both_bad); safety_flag_a and safety_flag_b "
        "are true or false; comment is text.",
        "zh-CN": "投票须为 proactiveness、accuracy、usefulness、language_quality 和 overall "
        "各选 a、b 或 tie（overall 还可选 both_bad）；safety_flag_a 和 safety_flag_b 为 true "
        "或 false；comment 为文本。",
    },
    "api.bad_side": {
        "en": 'The side must be "a" or "b".',
        "zh-CN": '回答一侧须为 "a" 或 "b"。',
    },
    "storage.too_many_files": {
        "en": "At most {n} files per message.",
        "zh-CN": "每条消息最多可附 {n} 个文件。",
    },
    "storage.empty": {"en": "The {field} must not be empty.", "zh-CN": "{field}不能为空。"},
    "storage.too_long": {
        "en": "The {field} is too long (at most {n} characters).",
        "zh-CN": "{field}过长（最多 {n} 个字符）。",
    },
    "storage.invalid": {"en": "Invalid {field}.", "zh-CN": "{field}无效。"},
    "storage.username_taken": {"en": "This username is taken.", "zh-CN": "该用户名已被占用。"},
    "storage.password_short": {
        "en": "The password must have at least {n} characters.",
        "zh-CN": "密码至少需要 {n} 个字符。",
    },
    "storage.password_long": {
        "en": "The password must have at most {n} characters.",
        "zh-CN": "密码最多 {n} 个字符。",
    },
}

#: The Chinese of each error class's `user_message` (its English is the class's own text).
ERRORS: dict[type[PulseMindError], str] = {
    PulseMindError: "出现了问题。",
    StorageError: "数据库无法完成此请求。",
    NotFound: "该内容不存在（或已被删除）。",
    PermissionDenied: "您无权访问此内容。",
    Conflict: "该内容已存在。",
    InvalidInput: "部分输入无效。",
    DatabaseBusy: "数据库正忙，没有任何内容丢失；请稍后重试。",
    DatabaseUnavailable: "暂时无法连接数据库。您之前保存的内容都不会丢失；请稍后重试，"
    "如果问题持续，请联系管理员。",
    ModelError: "模型未能给出回答。",
    ModelUnreachable: "无法连接模型服务器。对话已保存，请稍后重试。",
    ModelTimeout: "模型服务器响应超时。对话已保存，请重试。",
    ModelDiedMidAnswer: "模型服务器在回答中途停止。已保留部分回答，请重试。",
    ModelRejectedInput: "模型拒绝了此请求。",
    IntakeError: "此文件无法使用。",
    intake.UnsupportedFileType: f"不支持此类文件。可接受的类型：{intake.ACCEPTED_TYPES}。",
    intake.EmptyFile: "文件为空（0 字节），请重新上传。",
    intake.FileTooLarge: "文件过大。",
    intake.ImageTooLarge: "图像像素过多，无法安全打开。",
    intake.AnimatedImage: "不接受动图；请上传静态图像（PNG 或 JPEG）。",
    intake.OddImageShape: "图像过于细长，模型无法读取。",
    intake.CorruptFile: "文件已损坏或不完整，无法读取。",
    intake.NotDicom: "文件扩展名是 DICOM，但内容并不是 DICOM。",
    intake.DicomWithoutImage: "此 DICOM 文件不包含图像。",
    intake.DeidentificationFailed: "无法去除此文件中的患者身份信息，因此未使用该文件。",
    intake.EncryptedPdf: "此 PDF 设有密码保护。请另存一份无密码的副本后再上传。",
    intake.TooManyPages: "PDF 页数过多。",
    intake.TooManyFiles: "一条消息中的文件过多。",
    intake.UnreadableFile: "无法读取该文件。",
}

#: Words that fill templates ("This {what} does not exist.", "Your role ({role}) ...").
NOUNS: dict[str, str] = {
    "consultation": "会诊",
    "message": "消息",
    "report": "报告",
    "attachment": "附件",
    "image": "图像",
    "answer": "回答",
    "title": "标题",
    "variant": "模型",
    "variant name": "模型名称",
    "clinician": "临床医生",
    "annotator": "标注员",
    "admin": "管理员",
    "role": "角色",
    "case": "病例",
    "turn": "对比轮次",
}


def _error_entries() -> dict[str, Entry]:
    return {
        f"error.{cls.__name__}": {"en": cls.user_message, "zh-CN": zh} for cls, zh in ERRORS.items()
    }


#: Every entry: page text, server text, errors by class.
CATALOGUE: dict[str, Entry] = {**PAGE, **SERVER, **_error_entries()}

#: Gradio's translations for the page (`gr.mount_gradio_app(..., i18n=I18N)`).
I18N = gr.I18n(**{lang: {k: e[lang] for k, e in PAGE.items()} for lang in LANGUAGES})


def i18n(key: str) -> gr.i18n.I18nData:
    """A component's static text, shown in the page's language (KeyError if not catalogued)."""
    if key not in PAGE:
        raise KeyError(f"{key!r} is not page text in app.i18n.PAGE")
    return I18N(key)


def t(key: str, language: str | None = None, **fields: object) -> str:
    """A catalogue entry in `language` (default: the current request's), fields filled in."""
    lang = supported(language) or current_language()
    return CATALOGUE[key][lang].format(**fields)


#: Entries whose English an error or a stored answer may carry (what `translate` looks up).
MESSAGE_KEYS = ("edge.", "auth.", "guard.", "flow.", "api.", "storage.", "error.",
                "consult.open_first")  # fmt: skip

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")
_FIELD = re.compile(r"\{(\w+)\}")


@cache
def _templates() -> list[tuple[re.Pattern, str]]:
    """(regex of the English text, key) for entries with fields, longest first."""
    out = []
    for key, entry in CATALOGUE.items():
        en = entry["en"]
        if not key.startswith(MESSAGE_KEYS):
            continue
        if not _FIELD.search(en):
            continue
        parts = _FIELD.split(en)  # literal, name, literal, name, ...
        regex = "".join(
            re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts)
        )
        out.append((re.compile(f"^{regex}$", re.S), key))
    return sorted(out, key=lambda item: -len(item[0].pattern))


@cache
def _sentences() -> dict[str, str]:
    """English text -> key, for entries without fields."""
    return {
        e["en"]: k
        for k, e in CATALOGUE.items()
        if k.startswith(MESSAGE_KEYS) and not _FIELD.search(e["en"])
    }


def split_bilingual(text: str) -> tuple[str, str] | None:
    """("English", "中文") of a message written as "English / 中文", else None."""
    for m in re.finditer(" / ", text):
        left, right = text[: m.start()], text[m.end() :]
        if not _CJK.search(left) and _CJK.search(right):
            return left, right
    return None


def translate(english: str, language: str | None = None) -> str | None:
    """A catalogued English sentence in `language` (default: the current request's); None if
    it is not in the catalogue. Template fields that are catalogued nouns are translated too."""
    lang = supported(language) or current_language()
    if lang == "en":
        return english
    if english in _sentences():
        return CATALOGUE[_sentences()[english]][lang]
    for regex, key in _templates():
        m = regex.match(english)
        if m:
            fields = {k: NOUNS.get(v, v) for k, v in m.groupdict().items()}
            return CATALOGUE[key][lang].format(**fields)
    return None


def error_text(exc: BaseException, english: str, language: str | None = None) -> str:
    """What a person reading `language` sees for `exc`, whose English message is `english`.

    A catalogued sentence is translated; a message already written in both languages
    ("English / 中文") gives its half; a bad file keeps its name in front. Otherwise the
    Chinese of the error's class (`ERRORS`, or a catalogued class message) is shown with the
    English specifics after it, so nothing the English said is lost.
    """
    lang = supported(language) or current_language()
    both = split_bilingual(english)
    if both is not None:
        return both[0] if lang == "en" else both[1]
    if lang == DEFAULT_LANGUAGE or _CJK.search(english):
        return english
    if isinstance(exc, IntakeError) and exc.filename and english == str(exc):
        return f"{exc.filename}：{_in_class_words(exc, exc.detail, lang)}"
    return _in_class_words(exc, english, lang)


def _in_class_words(exc: BaseException, english: str, lang: str) -> str:
    found = translate(english, lang)
    if found is not None:
        return found
    for cls in type(exc).__mro__:
        general = ERRORS.get(cls) or translate(getattr(cls, "user_message", None) or "", lang)
        if general:
            return general if english == cls.user_message else f"{general}（{english}）"
    return english
