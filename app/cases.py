"""Case files: `pulsemind cases load FILE [--name SET]`, whole or nothing.

Three formats (docs/design.md, "Case files"):

- PulseMind JSONL, one consultation per line:
  `{"id": "c1", "cate1": "...", "cate2": "...", "turns": [{"patient": "...",
  "images": ["imgs/ecg.png"], "doctor": "..."}, ...]}`; image paths are relative to the file;
  only the last turn may lack `doctor`.
- CMtMedQA JSON (Zhongjing), a list of `{id, cate1, cate2, instruction, output,
  history: [[patient, doctor], ...]}`: the history's pairs, then (instruction, output).
- MedDiagnose-style JSON, a list of `{id, cate1, cate2, dialogue: [{"role": "patient" |
  "doctor", "text": "...", "images": ["md-1/a.jpg"]}, ...]}` with an images folder (default
  `images/` beside the file): consecutive messages of one side are one turn.

Every line or record is checked and every image taken in (`model.intake`: de-identified,
scaled) before anything is stored; a problem is reported naming its line or record (up to
`MAX_REPORTED_PROBLEMS` of them) and nothing is stored. Then `storage.import_case_set`
writes the set in one transaction.

    record = load_case_file(db, Path("cases.jsonl"), name="demo")
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from app.workflow import to_new_attachment
from model.errors import PulseMindError
from model.intake import IntakeError, IntakeLimits, intake_bytes
from storage import CaseFormat, CaseSetRecord, Database, NewCase, NewCaseTurn, import_case_set
from storage.i18n import bilingual

#: A case file is read into memory; CMtMedQA's full training split is ~150 MB.
MAX_CASE_FILE_BYTES = 1 << 30
#: Problems listed in one refusal (a wholly wrong file would list every line).
MAX_REPORTED_PROBLEMS = 20
JSONL_KEYS = {"id", "cate1", "cate2", "turns"}
TURN_KEYS = {"patient", "images", "doctor"}
#: MedDiagnose-style: the roles a dialogue message may have, and the default images folder.
DIALOGUE_ROLES = ("patient", "doctor")
IMAGES_FOLDER = "images"
#: `--format` names (the command line's) of the stored formats.
FORMAT_NAMES = {"jsonl": CaseFormat.PULSEMIND_JSONL, "cmtmedqa": CaseFormat.CMTMEDQA,
                "meddiagnose": CaseFormat.MEDDIAGNOSE}  # fmt: skip

WHERE = {
    "line": {"en": "Line {n}", "zh-CN": "第 {n} 行"},
    "record": {"en": "Record {n}", "zh-CN": "第 {n} 条记录"},
    "file": {"en": "The file", "zh-CN": "文件"},
}
PROBLEMS = {
    "json": {"en": "is not valid JSON ({error}).", "zh-CN": "不是有效的 JSON（{error}）。"},
    "object": {"en": "must be a JSON object.", "zh-CN": "必须是 JSON 对象。"},
    "unknown_keys": {"en": "has unknown field(s) {keys}.", "zh-CN": "含有未知字段 {keys}。"},
    "text_field": {"en": "{field} must be text.", "zh-CN": "{field} 必须是文本。"},
    "turns": {"en": "needs a non-empty list \"turns\".", "zh-CN": "需要非空列表 \"turns\"。"},
    "turn": {"en": "turn {t} must be an object with \"patient\".",
             "zh-CN": "第 {t} 轮必须是含 \"patient\" 的对象。"},
    "patient": {"en": "turn {t}: \"patient\" must be non-empty text.",
                "zh-CN": "第 {t} 轮：\"patient\" 必须是非空文本。"},
    "doctor": {"en": "turn {t}: \"doctor\" must be non-empty text (only the last turn may lack it).",
               "zh-CN": "第 {t} 轮：\"doctor\" 必须是非空文本（只有最后一轮可以没有）。"},
    "images": {"en": "turn {t}: \"images\" must be a list of paths.",
               "zh-CN": "第 {t} 轮：\"images\" 必须是路径列表。"},
    "image_path": {"en": "turn {t}: image {path!r} must be a path inside the file's folder "
                         "(MedDiagnose: the images folder).",
                   "zh-CN": "第 {t} 轮：图像 {path!r} 必须是文件所在文件夹（MedDiagnose：图像文件夹）内的路径。"},
    "image_missing": {"en": "turn {t}: image {path!r} cannot be read ({error}).",
                      "zh-CN": "第 {t} 轮：无法读取图像 {path!r}（{error}）。"},
    "image_refused": {"en": "turn {t}: image {path!r} cannot be used: {error}",
                      "zh-CN": "第 {t} 轮：图像 {path!r} 无法使用：{error}"},
    "list": {"en": "must be a JSON list of records (CMtMedQA, MedDiagnose).",
             "zh-CN": "必须是记录组成的 JSON 列表（CMtMedQA、MedDiagnose）。"},
    "instruction": {"en": "\"instruction\" must be non-empty text.",
                    "zh-CN": "\"instruction\" 必须是非空文本。"},
    "output": {"en": "\"output\" must be non-empty text.", "zh-CN": "\"output\" 必须是非空文本。"},
    "history": {"en": "\"history\" must be a list of [patient, doctor] text pairs (pair {t} is not).",
                "zh-CN": "\"history\" 必须是 [患者, 医生] 文本对的列表（第 {t} 对不是）。"},
    "dialogue": {"en": "needs a non-empty list \"dialogue\" of messages.",
                 "zh-CN": "需要非空的消息列表 \"dialogue\"。"},
    "message": {"en": "message {m} must be an object with \"role\" (patient or doctor) and "
                      "\"text\".",
                "zh-CN": "第 {m} 条消息必须是含 \"role\"（patient 或 doctor）和 \"text\" 的对象。"},
    "first_patient": {"en": "the dialogue must start with the patient.",
                      "zh-CN": "对话必须以患者开始。"},
    "doctor_images": {"en": "message {m}: only the patient's messages may carry images.",
                      "zh-CN": "第 {m} 条消息：只有患者的消息可以带图像。"},
    "format": {"en": "has an unknown format {format!r}; use one of {known}.",
               "zh-CN": "格式 {format!r} 未知；请使用 {known} 之一。"},
    "empty": {"en": "holds no cases.", "zh-CN": "中没有病例。"},
    "too_big": {"en": "is larger than {limit} MiB.", "zh-CN": "大于 {limit} MiB。"},
    "unreadable": {"en": "cannot be read ({error}).", "zh-CN": "无法读取（{error}）。"},
}
NOTHING_STORED = {"en": "Nothing was stored.", "zh-CN": "未保存任何内容。"}


class CaseFileError(PulseMindError):
    """A case file that cannot be loaded; `problems` names each line or record (bilingual)."""

    user_message = "The case file cannot be loaded."

    def __init__(self, problems: list[str]):
        shown = problems[:MAX_REPORTED_PROBLEMS]
        cut = ["…"] if len(problems) > len(shown) else []  # reading stopped there
        super().__init__("; ".join(shown + cut))
        self.problems = problems
        self.user_message = "\n".join([*shown, *cut, bilingual(NOTHING_STORED)])


class _Problem(Exception):
    def __init__(self, key: str, **fields: object):
        super().__init__(key)
        self.key, self.fields = key, fields


def _describe(where: str, n: int | None, problem: _Problem) -> str:
    place = WHERE[where]
    entry = PROBLEMS[problem.key]
    return " / ".join(f"{place[lang].format(n=n)}{': ' if lang == 'en' else '：'}"
                      f"{entry[lang].format(**problem.fields)}" for lang in ("en", "zh-CN"))  # fmt: skip


def _text(value: object, key: str, **fields: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Problem(key, **fields)
    return value


def _optional_label(record: dict, field: str) -> str | None:
    value = record.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Problem("text_field", field=field)
    return str(value)


class _Reader:
    """Turns parsed records into `NewCase`s, taking each image in on the way."""

    def __init__(self, folder: Path, limits: IntakeLimits):
        self.folder, self.limits = folder.resolve(), limits

    def image(self, path: object, t: int):
        if not isinstance(path, str) or not path.strip() or Path(path).is_absolute():
            raise _Problem("image_path", t=t, path=path)
        target = (self.folder / path).resolve()
        if not target.is_relative_to(self.folder):
            raise _Problem("image_path", t=t, path=path)
        try:
            data = target.read_bytes()
        except OSError as exc:
            raise _Problem("image_missing", t=t, path=path, error=exc.strerror or type(exc).__name__) from None
        try:
            return to_new_attachment(intake_bytes(data, Path(path).name, limits=self.limits))
        except IntakeError as exc:
            raise _Problem("image_refused", t=t, path=path, error=exc.detail) from None

    def jsonl_case(self, record: object) -> NewCase:
        if not isinstance(record, dict):
            raise _Problem("object")
        unknown = sorted(set(record) - JSONL_KEYS)
        if unknown:
            raise _Problem("unknown_keys", keys=", ".join(unknown))
        turns = record.get("turns")
        if not isinstance(turns, list) or not turns:
            raise _Problem("turns")
        new_turns = []
        for t, turn in enumerate(turns, start=1):
            if not isinstance(turn, dict) or "patient" not in turn or set(turn) - TURN_KEYS:
                raise _Problem("turn", t=t)
            images = turn.get("images") or []
            if not isinstance(images, list):
                raise _Problem("images", t=t)
            attachments = [self.image(p, t) for p in images]
            patient = turn["patient"]
            if not isinstance(patient, str) or not (patient.strip() or attachments):
                raise _Problem("patient", t=t)
            doctor = turn.get("doctor")
            if doctor is not None or t < len(turns):
                doctor = _text(doctor, "doctor", t=t)
            new_turns.append(NewCaseTurn(patient, doctor, attachments))
        return NewCase(new_turns, _optional_label(record, "id"), _optional_label(record, "cate1"),
                       _optional_label(record, "cate2"))  # fmt: skip

    def meddiagnose_case(self, record: object) -> NewCase:
        """A MedDiagnose-style dialogue: runs of patient messages, each answered by the run of
        doctor messages after it (joined by a blank line); images on patient messages only."""
        if not isinstance(record, dict):
            raise _Problem("object")
        dialogue = record.get("dialogue")
        if not isinstance(dialogue, list) or not dialogue:
            raise _Problem("dialogue")
        runs: list[tuple[str, list[str], list]] = []  # (role, texts, image paths)
        for m, message in enumerate(dialogue, start=1):
            if (not isinstance(message, dict) or message.get("role") not in DIALOGUE_ROLES
                    or not isinstance(message.get("text", ""), str)):  # fmt: skip
                raise _Problem("message", m=m)
            images = message.get("images") or []
            if not isinstance(images, list):
                raise _Problem("images", t=len(runs) // 2 + 1)
            if images and message["role"] == "doctor":
                raise _Problem("doctor_images", m=m)
            if not runs or runs[-1][0] != message["role"]:
                runs.append((message["role"], [], []))
            text = message.get("text", "").strip()
            if text:
                runs[-1][1].append(text)
            runs[-1][2].extend(images)
        if runs[0][0] != "patient":
            raise _Problem("first_patient")
        turns = []
        for t, start in enumerate(range(0, len(runs), 2), start=1):
            _, texts, images = runs[start]
            attachments = [self.image(p, t) for p in images]
            patient = "\n\n".join(texts)
            if not (patient or attachments):
                raise _Problem("patient", t=t)
            doctor = "\n\n".join(runs[start + 1][1]) if start + 1 < len(runs) else None
            if doctor is not None or start + 1 < len(runs):
                doctor = _text(doctor, "doctor", t=t)
            turns.append(NewCaseTurn(patient, doctor, attachments))
        return NewCase(turns, _optional_label(record, "id"), _optional_label(record, "cate1"),
                       _optional_label(record, "cate2"))  # fmt: skip

    @staticmethod
    def cmtmedqa_case(record: object) -> NewCase:
        if not isinstance(record, dict):
            raise _Problem("object")
        instruction = _text(record.get("instruction"), "instruction")
        output = _text(record.get("output"), "output")
        history = record.get("history") or []
        if not isinstance(history, list):
            raise _Problem("history", t=1)
        turns = []
        for t, pair in enumerate(history, start=1):
            if (not isinstance(pair, list | tuple) or len(pair) != 2
                    or not all(isinstance(x, str) and x.strip() for x in pair)):  # fmt: skip
                raise _Problem("history", t=t)
            turns.append(NewCaseTurn(pair[0], pair[1]))
        turns.append(NewCaseTurn(instruction, output))
        return NewCase(turns, _optional_label(record, "id"), _optional_label(record, "cate1"),
                       _optional_label(record, "cate2"))  # fmt: skip


def _jsonl_records(text: str) -> Iterator[tuple[int, object | _Problem]]:
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as exc:
            yield n, _Problem("json", error=f"column {exc.colno}: {exc.msg}")


def read_case_file(
    path: str | Path,
    *,
    format: CaseFormat | str | None = None,
    limits: IntakeLimits | None = None,
    progress: bool = False,
    images: str | Path | None = None,
) -> tuple[CaseFormat, list[NewCase], str]:
    """(format, cases, sha256) of a case file; CaseFileError lists what is wrong.

    `format` None: told from the content (a JSON list of records with "dialogue" is
    MedDiagnose-style, another JSON list CMtMedQA, else JSONL); a `FORMAT_NAMES` name or a
    `CaseFormat`. `images`: the MedDiagnose images folder (default `images/` beside the
    file). The sha256 is the file's; for MedDiagnose it also covers the images, in order.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CASE_FILE_BYTES:
            raise CaseFileError([_describe("file", None, _Problem("too_big", limit=MAX_CASE_FILE_BYTES >> 20))])
        data = path.read_bytes()
        text = data.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        error = getattr(exc, "strerror", None) or type(exc).__name__
        raise CaseFileError([_describe("file", None, _Problem("unreadable", error=error))]) from None
    sha256 = hashlib.sha256(data).hexdigest()
    json_list = format is None and text.lstrip().startswith("[")
    try:
        format = (CaseFormat.CMTMEDQA if json_list else CaseFormat.PULSEMIND_JSONL
                  if format is None else FORMAT_NAMES.get(str(format)) or CaseFormat(format))  # fmt: skip
    except ValueError:
        known = ", ".join(FORMAT_NAMES)
        raise CaseFileError([_describe("file", None, _Problem("format", format=format, known=known))]) from None
    limits = limits or IntakeLimits()
    reader = _Reader(path.parent, limits)
    cases: list[NewCase] = []
    problems: list[str] = []
    if format in (CaseFormat.CMTMEDQA, CaseFormat.MEDDIAGNOSE):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            error = f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
            raise CaseFileError([_describe("file", None, _Problem("json", error=error))]) from None
        if not isinstance(records, list):
            raise CaseFileError([_describe("file", None, _Problem("list"))])
        if json_list and records and isinstance(records[0], dict) and "dialogue" in records[0]:
            format = CaseFormat.MEDDIAGNOSE
        build = reader.cmtmedqa_case
        if format is CaseFormat.MEDDIAGNOSE:
            folder = Path(images) if images is not None else path.parent / IMAGES_FOLDER
            build = _Reader(folder, limits).meddiagnose_case
        numbered, where, total = enumerate(records, start=1), "record", len(records)
    else:
        numbered, where, build = _jsonl_records(text), "line", reader.jsonl_case
        total = text.count("\n") + 1
    for n, record in tqdm(numbered, desc="cases", unit="case", total=total, disable=not progress):
        try:
            if isinstance(record, _Problem):
                raise record
            cases.append(build(record))
        except _Problem as problem:
            problems.append(_describe(where, n, problem))
            if len(problems) > MAX_REPORTED_PROBLEMS:
                break  # enough to act on; the rest would repeat
    if not problems and not cases:
        problems.append(_describe("file", None, _Problem("empty")))
    if problems:
        raise CaseFileError(problems)
    if format is CaseFormat.MEDDIAGNOSE:  # the same file with other images is another data set
        files = "".join(a.sha256 for c in cases for t in c.turns for a in t.attachments)
        sha256 = hashlib.sha256(data + files.encode()).hexdigest()
    return format, cases, sha256


def load_case_file(
    db: Database,
    path: str | Path,
    *,
    name: str | None = None,
    format: CaseFormat | str | None = None,
    user_id: int | None = None,
    limits: IntakeLimits | None = None,
    progress: bool = False,
    images: str | Path | None = None,
) -> CaseSetRecord:
    """Read the file and store it as the case set `name` (default: the file's stem), whole or
    not at all. CaseFileError for a bad file; storage errors (a taken name) as raised."""
    case_format, cases, sha256 = read_case_file(path, format=format, limits=limits,
                                                progress=progress, images=images)  # fmt: skip
    return import_case_set(db, name or Path(path).stem, case_format, sha256, cases, user_id=user_id)


def case_summary(cases: list[NewCase]) -> dict[str, Any]:
    """Counts of a case list (what the command prints)."""
    return {"cases": len(cases), "turns": sum(len(c.turns) for c in cases),
            "files": sum(len(t.attachments) for c in cases for t in c.turns)}  # fmt: skip
