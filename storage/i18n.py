"""User-visible sentences in English and Chinese, until the app chooses a language per user.

Each module that speaks to annotators or clinicians keeps its own catalogue,
`{key: {"en": ..., "zh-CN": ...}}`; `bilingual` renders an entry as "English / 中文", the form
every such message takes for now (the app will pick one language per user later).

    MESSAGES = {"voted": {"en": "Vote saved.", "zh-CN": "投票已保存。"}}
    bilingual(MESSAGES["voted"])                    # 'Vote saved. / 投票已保存。'
"""

from __future__ import annotations

LANGUAGES = ("en", "zh-CN")


def bilingual(entry: dict[str, str], **fields: object) -> str:
    """The entry in every language, joined by " / ", with `fields` filled in (str.format)."""
    return " / ".join(entry[language].format(**fields) for language in LANGUAGES)
