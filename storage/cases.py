"""Case sets: imported consultations (patient turns with the reference doctor's answers).

A case set is one file read by `pulsemind cases load` (app/cases.py parses it and takes its
images through intake). It is stored whole or not at all: `import_case_set` checks every case
first, then writes the set, its cases, their turns and their files in one transaction.
Files are attachments like any upload (stored once per sha256, de-identified derivatives
only). Annotators and admins read cases; comparisons start from them (storage/compare.py).

    record = import_case_set(db, "cmtmedqa-test", "cmtmedqa", file_sha256, cases)
    case = get_case(db, case_id, user_id=annotator.id, with_png=True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from loguru import logger
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.access import active_user, may_read_cases
from storage.attachments import SHA256_PATTERN, attachments_by_id, store_attachment
from storage.checks import as_enum, bounded_text
from storage.db import Database
from storage.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from storage.i18n import bilingual
from storage.messages import MAX_ATTACHMENTS_PER_MESSAGE, MAX_MESSAGE_CHARS
from storage.models import (
    CATEGORY_LENGTH,
    NAME_LENGTH,
    SOURCE_ID_LENGTH,
    Attachment,
    Case,
    CaseFormat,
    CaseSet,
    CaseTurn,
    CaseTurnAttachment,
    UserRole,
)
from storage.records import (
    AttachmentRecord,
    CaseRecord,
    CaseSetRecord,
    CaseTurnRecord,
    NewCase,
    from_row,
)

#: Cases in one set. CMtMedQA's training split has ~68,000 dialogues; a bigger file is
#: probably not a case file.
MAX_CASES_PER_SET = 200_000
#: Turns of one case (the paper's longest consultations run past 20 turns).
MAX_TURNS_PER_CASE = 200

MESSAGES = {
    "name_taken": {
        "en": "A case set named {name!r} exists already; choose another name.",
        "zh-CN": "已存在名为 {name!r} 的病例集，请换一个名称。",
    },
    "bad_case": {
        "en": "Case {position}: {problem}",
        "zh-CN": "病例 {position}：{problem}",
    },
    "no_cases": {"en": "The file holds no cases.", "zh-CN": "文件中没有病例。"},
    "too_many_cases": {
        "en": "At most {limit} cases per set.",
        "zh-CN": "每个病例集最多 {limit} 个病例。",
    },
    "not_found": {"en": "This case does not exist.", "zh-CN": "该病例不存在。"},
}


def _record(case: Case, turns: Sequence[CaseTurnRecord] = ()) -> CaseRecord:
    return from_row(CaseRecord, case, turns=tuple(turns))


def _check_case(case: NewCase, position: int) -> None:
    """InvalidInput naming the case (by position in the file) and what is wrong with it."""

    def bad(problem: str) -> InvalidInput:
        return InvalidInput(
            f"case {position}: {problem}",
            user_message=bilingual(MESSAGES["bad_case"], position=position, problem=problem),
        )

    if not isinstance(case, NewCase):
        raise bad("not a NewCase")
    if not case.turns or len(case.turns) > MAX_TURNS_PER_CASE:
        raise bad(f"a case has 1 to {MAX_TURNS_PER_CASE} turns")
    for field, value, limit in (("source id", case.source_id, SOURCE_ID_LENGTH),
                                ("cate1", case.cate1, CATEGORY_LENGTH),
                                ("cate2", case.cate2, CATEGORY_LENGTH)):  # fmt: skip
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise bad(f"{field} must be text of at most {limit} characters")
    last = len(case.turns) - 1
    for i, turn in enumerate(case.turns):
        try:
            bounded_text(turn.patient_text, "patient text", MAX_MESSAGE_CHARS,
                         allow_empty=bool(turn.attachments))  # fmt: skip
            if turn.reference_answer is None:
                if i != last:
                    raise InvalidInput("only the last turn may lack the doctor's answer")
            else:
                bounded_text(turn.reference_answer, "doctor's answer", MAX_MESSAGE_CHARS)
        except InvalidInput as exc:
            raise bad(f"turn {i + 1}: {exc.detail}") from None
        if len(turn.attachments) > MAX_ATTACHMENTS_PER_MESSAGE:
            raise bad(f"turn {i + 1}: more than {MAX_ATTACHMENTS_PER_MESSAGE} files")


def import_case_set(
    db: Database,
    name: str,
    format: CaseFormat | str,
    file_sha256: str,
    cases: Sequence[NewCase],
    *,
    user_id: int | None = None,
) -> CaseSetRecord:
    """Store a whole case set in one transaction, or nothing (InvalidInput names the case).

    `user_id`: the admin importing it (None: the command line, run by the operator).
    Conflict if a set of that name exists.
    """
    name = bounded_text(name, "case set name", NAME_LENGTH).strip()
    case_format = as_enum(CaseFormat, format, "case format")
    if not isinstance(file_sha256, str) or not SHA256_PATTERN.fullmatch(file_sha256):
        raise InvalidInput("file_sha256 must be 64 lower-case hex digits")
    if not cases:
        raise InvalidInput("no cases", user_message=bilingual(MESSAGES["no_cases"]))
    if len(cases) > MAX_CASES_PER_SET:
        raise InvalidInput(f"{len(cases)} cases", user_message=bilingual(
            MESSAGES["too_many_cases"], limit=MAX_CASES_PER_SET))  # fmt: skip
    for position, case in enumerate(cases, start=1):
        _check_case(case, position)
    taken = Conflict(f"case set {name!r} exists",
                     user_message=bilingual(MESSAGES["name_taken"], name=name))  # fmt: skip
    reused = 0
    try:
        with db.transaction() as session:
            if user_id is not None and active_user(session, user_id).role is not UserRole.ADMIN:
                raise PermissionDenied(f"user {user_id} may not import cases")
            if session.scalar(select(CaseSet.id).where(CaseSet.name == name)) is not None:
                raise taken
            case_set = CaseSet(name=name, format=case_format, file_sha256=file_sha256,
                               case_count=len(cases), created_by_id=user_id)  # fmt: skip
            session.add(case_set)
            session.flush()
            for position, new in enumerate(cases, start=1):
                reused += _store_case(session, case_set.id, position, new)
            record = from_row(CaseSetRecord, case_set)
    except IntegrityError as exc:  # another import of the same name won the race (PostgreSQL)
        raise taken from exc
    logger.info("case set id={} imported: {} cases, format {}, {} files reused",
                record.id, record.case_count, case_format.value, reused)  # fmt: skip
    return record


def _store_case(session: Session, case_set_id: int, position: int, new: NewCase) -> int:
    """Write one case with its turns and files; returns how many files were stored before."""
    case = Case(case_set_id=case_set_id, position=position, source_id=new.source_id,
                cate1=new.cate1, cate2=new.cate2)  # fmt: skip
    session.add(case)
    session.flush()
    reused = 0
    for turn_position, new_turn in enumerate(new.turns, start=1):
        turn = CaseTurn(case_id=case.id, position=turn_position, patient_text=new_turn.patient_text,
                        reference_answer=new_turn.reference_answer)  # fmt: skip
        session.add(turn)
        session.flush()
        for file_position, new_attachment in enumerate(new_turn.attachments):
            attachment, created = store_attachment(session, new_attachment)
            reused += not created
            session.add(CaseTurnAttachment(case_turn_id=turn.id, attachment_id=attachment.id,
                                           position=file_position))  # fmt: skip
    return reused


def list_case_sets(db: Database) -> list[CaseSetRecord]:
    """Every case set, in the order they were imported."""
    with db.transaction(write=False) as session:
        return [from_row(CaseSetRecord, s) for s in session.scalars(select(CaseSet).order_by(CaseSet.id))]


def get_case_set_by_name(db: Database, name: str) -> CaseSetRecord | None:
    with db.transaction(write=False) as session:
        found = session.scalar(select(CaseSet).where(CaseSet.name == name))
        return from_row(CaseSetRecord, found) if found is not None else None


def list_cases(db: Database, case_set_id: int, *, user_id: int | None = None) -> list[CaseRecord]:
    """The cases of a set in file order, without their turns (annotators and admins)."""
    with db.transaction(write=False) as session:
        if user_id is not None:
            may_read_cases(session, user_id)
        query = select(Case).where(Case.case_set_id == case_set_id).order_by(Case.position)
        return [_record(c) for c in session.scalars(query)]


def count_cases(db: Database) -> tuple[int, int]:
    """(case sets, cases) stored: for checks that an import stored all or nothing."""
    with db.transaction(write=False) as session:
        return (session.scalar(select(func.count()).select_from(CaseSet)) or 0,
                session.scalar(select(func.count()).select_from(Case)) or 0)  # fmt: skip


def get_case(
    db: Database, case_id: int, *, user_id: int | None = None, with_png: bool = False
) -> CaseRecord:
    """A case with its turns and their files (image bytes only `with_png`).

    With `user_id`, checks that the user may read cases; without, the caller is trusted.
    """
    with db.transaction(write=False) as session:
        if user_id is not None:
            may_read_cases(session, user_id)
        return load_case(session, case_id, with_png=with_png)


def load_case(session: Session, case_id: int, *, with_png: bool) -> CaseRecord:
    """The case with its turns, in the caller's transaction (no access check)."""
    case = session.get(Case, case_id)
    if case is None:
        raise NotFound(f"case {case_id} does not exist",
                       user_message=bilingual(MESSAGES["not_found"]))  # fmt: skip
    turns = list(session.scalars(
        select(CaseTurn).where(CaseTurn.case_id == case_id).order_by(CaseTurn.position)))  # fmt: skip
    links = session.execute(
        select(CaseTurnAttachment.case_turn_id, CaseTurnAttachment.attachment_id)
        .where(CaseTurnAttachment.case_turn_id.in_([t.id for t in turns]))
        .order_by(CaseTurnAttachment.case_turn_id, CaseTurnAttachment.position)
    ).all()
    loaded = attachments_by_id(session, [a for _, a in links], with_png=with_png)
    files: dict[int, list[AttachmentRecord]] = {}
    for turn_id, attachment_id in links:
        placed = files.setdefault(turn_id, [])
        placed.append(replace(loaded[attachment_id], position=len(placed)))
    return _record(case, [from_row(CaseTurnRecord, t, attachments=tuple(files.get(t.id, ())))
                          for t in turns])  # fmt: skip


def case_attachment_ids(session: Session, case_turn_id: int) -> list[tuple[int, str]]:
    """(attachment id, sha256) of a case turn's files, in order."""
    return list(session.execute(
        select(Attachment.id, Attachment.sha256)
        .join(CaseTurnAttachment, CaseTurnAttachment.attachment_id == Attachment.id)
        .where(CaseTurnAttachment.case_turn_id == case_turn_id)
        .order_by(CaseTurnAttachment.position)
    ).tuples())  # fmt: skip
