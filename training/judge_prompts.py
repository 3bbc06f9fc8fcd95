"""What the judge reads and how its reply must look: the instructions in English and Chinese,
the prompt of one comparison, and the fixed verdict format (vLLM regex, JSON schema, parser).

Kept apart from the calling (training/judge.py) so the wording can be read and changed in one
place: a change here must bump `PROMPT_VERSION`, which is part of every cached verdict's key.

    judge_messages("Any fever?", "Drink water.", "Patient: cough", None, "zh-CN")  # 2 messages
    score_messages("Drink water.", "Patient: cough")  # absolute mode: one answer scored 1-5
    parse_verdict('{"proactiveness":"A","accuracy":"tie","usefulness":"B","language_quality":"A"}')
    render_context(chat_prompt)   # a TRL / export chat prompt as "Patient: ..." lines
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from storage.votes import DIMENSIONS

__all__ = [
    "DIMENSIONS",
    "LANGUAGES",
    "PROMPT_VERSION",
    "VERDICT_REGEX",
    "VERDICT_SCHEMA",
    "WINNERS",
    "Language",
    "Winner",
    "SCORE_REGEX",
    "SCORE_SCHEMA",
    "completion_text",
    "judge_messages",
    "parse_scores",
    "parse_verdict",
    "render_context",
    "score_messages",
]

Winner = Literal["a", "b", "tie"]
WINNERS: tuple[Winner, ...] = ("a", "b", "tie")
Language = Literal["en", "zh-CN"]
LANGUAGES: tuple[Language, ...] = ("en", "zh-CN")

#: Part of every cache key: bump it when the prompts change, so old verdicts are not reused.
PROMPT_VERSION = 1
#: Long texts are cut (answers and reference at the end, the context at its start, keeping
#: the latest turns) so a prompt fits a judge's context window.
MAX_ANSWER_CHARS = 8_000
MAX_CONTEXT_CHARS = 16_000
#: What the judge answers per dimension (its reply's spelling: "A", "B", "tie").
_REPLY_VALUES = ("A", "B", "tie")

#: The exact compact JSON object vLLM is constrained to (structured output, regex form).
VERDICT_REGEX = (
    r"\{"
    + ",".join(re.escape(f'"{d}":') + "\"(" + "|".join(_REPLY_VALUES) + ")\"" for d in DIMENSIONS)
    + r"\}"
)
#: The same object as a JSON schema (hosted APIs: `response_format`).
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {d: {"type": "string", "enum": list(_REPLY_VALUES)} for d in DIMENSIONS},
    "required": list(DIMENSIONS),
    "additionalProperties": False,
}

_SYSTEM = {
    "en": (
        "You are an experienced physician reviewing two answers, A and B, that an AI assistant "
        "could give at the same point of a medical consultation. Compare them on each of four "
        "dimensions independently:\n"
        "- proactiveness: does the answer ask for missing but clinically critical information "
        "(symptoms, history, test results) instead of guessing?\n"
        "- accuracy: is it medically sound, without factual errors or unsafe advice?\n"
        "- usefulness: is it clear and actionable for the patient?\n"
        "- language_quality: is it fluent, professional and easy to understand?\n"
        'For each dimension answer "A" if answer A is better, "B" if answer B is better, or '
        '"tie" if neither is clearly better. Judge the content, not the length; the order in '
        "which the answers are shown means nothing. If a reference doctor's reply is given, "
        "use it as a guide to what a good answer contains, not as the only right wording.\n"
        "Reply with this JSON object only:\n"
        '{"proactiveness":"A|B|tie","accuracy":"A|B|tie","usefulness":"A|B|tie",'
        '"language_quality":"A|B|tie"}'
    ),
    "zh-CN": (
        "你是一名经验丰富的医生，正在评审 AI 助手在同一次医疗问诊的同一时刻可能给出的两个回答 A 和 B。"
        "请在以下四个维度上分别独立比较：\n"
        "- proactiveness（主动性）：回答是否主动询问缺失但在临床上关键的信息（症状、病史、检查结果），"
        "而不是凭空猜测？\n"
        "- accuracy（准确性）：回答在医学上是否正确，没有事实错误或不安全的建议？\n"
        "- usefulness（实用性）：回答对患者是否清晰、可操作？\n"
        "- language_quality（语言质量）：回答是否流畅、专业、易于理解？\n"
        '每个维度中，若回答 A 更好填 "A"，若回答 B 更好填 "B"，若两者没有明显差别填 "tie"。'
        "请评判内容而非长度；两个回答的先后顺序没有任何含义。若给出了参考医生的回复，"
        "请把它作为好回答应包含内容的参考，而不是唯一正确的措辞。\n"
        "只回复下面这个 JSON 对象：\n"
        '{"proactiveness":"A|B|tie","accuracy":"A|B|tie","usefulness":"A|B|tie",'
        '"language_quality":"A|B|tie"}'
    ),
}
_HEADINGS = {
    "en": {
        "context": "## The consultation so far",
        "no_context": "(none: the answers reply to the patient's first message)",
        "reference": "## Reference doctor's reply",
        "a": "## Answer A",
        "b": "## Answer B",
        "patient": "Patient",
        "doctor": "Doctor",
        "image": "[image]",
        "cut": "[…]",
    },
    "zh-CN": {
        "context": "## 目前为止的问诊",
        "no_context": "（无：两个回答针对的是患者的第一条消息）",
        "reference": "## 参考医生的回复",
        "a": "## 回答 A",
        "b": "## 回答 B",
        "patient": "患者",
        "doctor": "医生",
        "image": "[图像]",
        "cut": "[…]",
    },
}


# --- the reply ---------------------------------------------------------------------------------


def parse_verdict(text: str | None) -> dict[str, Winner] | None:
    """The judge's reply as {dimension: "a"|"b"|"tie"}, or None if it is not a usable verdict.

    Takes the first {...} object in the reply (a judge without structured output may wrap it
    in prose or a code fence); every dimension must be there with A, B or tie (any case)."""
    if not text:
        return None
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    winners: dict[str, Winner] = {}
    for d in DIMENSIONS:
        value = obj.get(d)
        value = value.strip().lower() if isinstance(value, str) else None
        if value not in WINNERS:
            return None
        winners[d] = value  # type: ignore[assignment]
    return winners


# --- the prompt of one comparison ----------------------------------------------------------------------------------


def _cut_end(text: str, limit: int, mark: str) -> str:
    return text if len(text) <= limit else text[:limit] + mark


def _cut_start(text: str, limit: int, mark: str) -> str:
    return text if len(text) <= limit else mark + text[-limit:]


def judge_messages(
    a: str, b: str, context: str = "", reference: str | None = None, language: Language = "en"
) -> list[dict[str, str]]:
    """The chat messages of one judge call: the instructions, then context, reference, A, B."""
    h = _HEADINGS[language]
    parts = [h["context"], _cut_start(context.strip(), MAX_CONTEXT_CHARS, h["cut"])
             or h["no_context"]]  # fmt: skip
    if reference and reference.strip():
        parts += [h["reference"], _cut_end(reference.strip(), MAX_ANSWER_CHARS, h["cut"])]
    parts += [h["a"], _cut_end(a.strip(), MAX_ANSWER_CHARS, h["cut"])]
    parts += [h["b"], _cut_end(b.strip(), MAX_ANSWER_CHARS, h["cut"])]
    return [
        {"role": "system", "content": _SYSTEM[language]},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def _content_text(content: Any, image: str) -> str:
    if isinstance(content, str):
        return content
    out = []
    for part in content or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and part.get("text"):
            out.append(part["text"])
        elif kind in ("image", "image_url"):
            out.append(image)
    return " ".join(out)


def render_context(prompt: str | Sequence[Mapping[str, Any]], language: Language = "en") -> str:
    """A conversation (a chat prompt as TRL and `pulsemind export` write it, or plain text) as
    the judge's context text: "Patient: ..." / "Doctor: ..." lines, images as [image], the
    system prompt left out."""
    if isinstance(prompt, str):
        return prompt
    h = _HEADINGS[language]
    who = {"user": h["patient"], "assistant": h["doctor"]}
    lines = []
    for message in prompt:
        role = message.get("role")
        if role in who:
            lines.append(f"{who[role]}: {_content_text(message.get('content'), h['image'])}")
    return "\n".join(lines)


def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """A completion's text (TRL gives a string, or a list of assistant messages)."""
    if isinstance(completion, str):
        return completion
    return "\n".join(_content_text(m.get("content"), "") for m in completion)


# --- absolute mode: one answer scored 1-5 per dimension (judge-clinician agreement only) ---------
# Not used for rewards or the benchmark: the paper found clinicians agree with relative
# judgments far more often (86.1% vs 51.5%); `pulsemind eval agreement` measures exactly that.

#: The exact compact JSON object of scores vLLM is constrained to.
SCORE_REGEX = r"\{" + ",".join(re.escape(f'"{d}":') + "[1-5]" for d in DIMENSIONS) + r"\}"
SCORE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {d: {"type": "integer", "minimum": 1, "maximum": 5} for d in DIMENSIONS},
    "required": list(DIMENSIONS),
    "additionalProperties": False,
}
_SCORE_SYSTEM = {
    "en": (
        "You are an experienced physician reviewing one answer that an AI assistant gave at a "
        "point of a medical consultation. Score it from 1 (very poor) to 5 (excellent) on each "
        "of four dimensions independently:\n"
        "- proactiveness: does it ask for missing but clinically critical information?\n"
        "- accuracy: is it medically sound, without factual errors or unsafe advice?\n"
        "- usefulness: is it clear and actionable for the patient?\n"
        "- language_quality: is it fluent, professional and easy to understand?\n"
        "If a reference doctor's reply is given, use it as a guide, not as the only right "
        "wording. Reply with this JSON object only:\n"
        '{"proactiveness":1-5,"accuracy":1-5,"usefulness":1-5,"language_quality":1-5}'
    ),
    "zh-CN": (
        "你是一名经验丰富的医生，正在评审 AI 助手在一次医疗问诊中某一时刻给出的一个回答。"
        "请在以下四个维度上分别独立打分，1 分（很差）到 5 分（优秀）：\n"
        "- proactiveness（主动性）：是否主动询问缺失但在临床上关键的信息？\n"
        "- accuracy（准确性）：在医学上是否正确，没有事实错误或不安全的建议？\n"
        "- usefulness（实用性）：对患者是否清晰、可操作？\n"
        "- language_quality（语言质量）：是否流畅、专业、易于理解？\n"
        "若给出了参考医生的回复，请把它作为参考，而不是唯一正确的措辞。只回复下面这个 JSON 对象：\n"
        '{"proactiveness":1-5,"accuracy":1-5,"usefulness":1-5,"language_quality":1-5}'
    ),
}
_ANSWER_HEADING = {"en": "## The answer", "zh-CN": "## 回答"}


def score_messages(
    answer: str, context: str = "", reference: str | None = None, language: Language = "en"
) -> list[dict[str, str]]:
    """The chat messages of one absolute-mode call: instructions, context, reference, answer."""
    h = _HEADINGS[language]
    parts = [h["context"], _cut_start(context.strip(), MAX_CONTEXT_CHARS, h["cut"])
             or h["no_context"]]  # fmt: skip
    if reference and reference.strip():
        parts += [h["reference"], _cut_end(reference.strip(), MAX_ANSWER_CHARS, h["cut"])]
    parts += [_ANSWER_HEADING[language], _cut_end(answer.strip(), MAX_ANSWER_CHARS, h["cut"])]
    return [
        {"role": "system", "content": _SCORE_SYSTEM[language]},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def parse_scores(text: str | None) -> dict[str, int] | None:
    """The reply as {dimension: 1..5}, or None if it is not usable (first {...} object)."""
    if not text:
        return None
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    scores = {}
    for d in DIMENSIONS:
        value = obj.get(d)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            return None
        scores[d] = value
    return scores
