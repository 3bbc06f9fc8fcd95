"""Identifier rules that need no word list: labelled fields and patterns, English and Chinese.

Part of the recognizer in `model.intake.phi` (read that first). Each rule yields `Hit`s: a span
of the text, its kind, and whether its value is a person's name (whose parts are then looked
for elsewhere). The rules:

- labelled fields, English ("Patient:", "Name:", "DOB:", "MRN:", "Address:", "Signed by:" ...)
  and Chinese (姓名, 病历号, 住院号, 身份证号, 电话, 住址, 出生日期, 医保卡号, 单位, 医师 ...):
  the value after the label, up to the end of the line or the next label (Chinese names and
  numbers stop at the first comma or space);
- patterns found anywhere: e-mail, URL, SSN, phone numbers (North American, international
  "+44"/"0044", UK national, Chinese mobile 1[3-9]x xxxx xxxx and landline), 18-digit
  Chinese ID cards, long numbers and codes (an unlabelled MRN "00482913", "ZY20230506"),
  dates (03/14/1975, 2023-05-06, 6 May 2023, March 2024, 2023年5月6日), ages over 89;
- addresses: number + street word ("17 Larkspur Close, Wexford"), Chinese 省/市/区/路/号;
- institutions: capitalised words ending in Hospital, Clinic, Infirmary, Laboratory ...;
  Chinese 医院, 卫生院, 诊所, 卫生服务中心 ...

Numbers followed by a unit ("125000 copies/mL", "250000 /uL") are results, not identifiers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Hit:
    """One span a rule found: [start, end) in the text, its kind, and whether it names a
    person (its words are then removed wherever they recur)."""

    start: int
    end: int
    kind: str
    is_name: bool = False


# --- labelled fields ------------------------------------------------------------------------

_NAME_LABELS = (
    r"patient(?:'s)?(?:\s+(?:full\s+)?name)?", r"(?:full\s+|first\s+|last\s+|given\s+|family\s+)?name",
    r"surname", r"next\s+of\s+kin", r"guardian", r"mother", r"father", r"spouse", r"contact\s+person",
    r"(?:electronically\s+)?signed(?:\s+by)?", r"signature", r"(?:reported|authori[sz]ed|verified|"
    r"validated|checked|requested|referred|dictated|typed|seen|reviewed|prescribed|dispensed|"
    r"approved|collected)\s+by", r"referring\s+(?:doctor|physician|clinician|consultant|gp)",
    r"(?:attending|treating|responsible|ordering|requesting)\s+(?:doctor|physician|clinician|"
    r"consultant)?", r"consultant", r"physician", r"doctor", r"gp", r"clinician", r"prescriber",
    r"pharmacist", r"pathologist", r"radiologist", r"nurse", r"cc", r"attn",
)  # fmt: skip
_ID_LABELS = (
    r"mrn", r"medical\s+record(?:\s+(?:number|no\.?|#))?", r"(?:patient|hospital|record|visit|"
    r"encounter|member|insurance|policy|account|health(?:\s+card)?|nhs|chart|lab|specimen|sample|"
    r"episode|case|order|request|admission|unit|registration|reference|ref|chi|pps|ihi|medicare|"
    r"medicaid|passport|licen[cs]e)\s*(?:id|number|no\.?|#)", r"ssn",
    r"social\s+security(?:\s+(?:number|no\.?))?", r"accession(?:\s+(?:number|no\.?))?",
    r"(?:our|your)\s+ref(?:erence)?", r"id",
)  # fmt: skip
_DATE_LABELS = (r"dob", r"d\.o\.b\.?", r"date\s+of\s+birth", r"birth\s*date", r"born")
_CONTACT_LABELS = (
    r"(?:home\s+|postal\s+|street\s+)?address", r"street", r"city", r"town", r"zip(?:\s*code)?",
    r"post\s*code", r"eircode", r"phone", r"tel(?:ephone)?", r"mobile", r"cell", r"fax",
    r"e-?mail",
)  # fmt: skip
_PLACE_LABELS = (r"hospital", r"clinic", r"facility", r"institution", r"practice", r"employer")
#: A label, then ":" or "#": "Patient: Doe, Jane", "MRN: 123 DOB: 01/02/1960".
_LABEL = re.compile(
    r"(?:^|(?<=\s)|(?<=[|;,]))(?P<label>"
    + "|".join(f"(?P<{kind}>{'|'.join(alts)})" for kind, alts in (
        ("name", _NAME_LABELS), ("id", _ID_LABELS), ("dob", _DATE_LABELS),
        ("contact", _CONTACT_LABELS), ("institution", _PLACE_LABELS)))
    + r")\s*[:#]\s*",
    re.IGNORECASE | re.MULTILINE,
)  # fmt: skip
#: Where a field starts: line start, a tab, two spaces, a separator. Generic labels ("Name:",
#: "ID:", "Patient:") count only there, not mid-phrase ("Test name: Hemoglobin").
_FIELD_START = re.compile(r"(?:^|\n|\t|\s\s|[|;,]\s?)$")
LABEL_KINDS = ("name", "id", "dob", "contact", "institution")

_ZH_LABELS = {
    "name": r"(?:患者|病人|病员|受检者|就诊人)?姓\s*名|患者|病人|家属|联系人|紧急联系人|监护人|"
    r"(?:主治|主管|住院|经治|报告|审核|检验|送检|申请|开单|开方|处方|复核|门诊|接诊|录入|记录|签发|"
    r"责任|上级|值班)(?:医师|医生|护士|药师|技师|者|人)(?:签名|签字)?|(?:医师|医生|护士|药师|技师)"
    r"(?:签名|签字)?|签\s*名|签\s*字|主任",
    "id": r"病历号|病案号|住院号|门诊号|就诊号|登记号|病人ID|患者ID|ID号|身份证(?:号码?)?|证件号码?|"
    r"医保(?:卡)?号|社保(?:卡)?号|就诊卡号|医疗卡号|卡\s*号|标本号|条码号?|检查号|影像号|申请单?号|"
    r"流水号|住院流水号|档案号|报告单?号",
    "dob": r"出生日期|出生年月日?|生\s*日",
    "contact": r"(?:联系|家庭|手机|固定)?电\s*话|手\s*机(?:号码?)?|联系方式|(?:家庭|现|户籍|通讯|联系|"
    r"常住)?(?:住\s*址|地\s*址)|邮\s*编|(?:电子)?邮\s*箱",
    "institution": r"(?:工作)?单\s*位|医\s*院|医疗机构|就诊机构|送检单位",
}
#: A Chinese label, then a colon (either width), or spaces after a name or number label
#: ("姓名 王小明", "住院号 ZY2023"; a table header "单位  参考范围" is no field).
_ZH_LABEL = re.compile(
    r"(?<![\u4e00-\u9fff])(?:(?P<label>"
    + "|".join(f"(?P<{kind}>{alts})" for kind, alts in _ZH_LABELS.items())
    + r")\s*[:：]\s*|(?P<spaced>(?P<sname>"
    + _ZH_LABELS["name"]
    + r")|(?P<sid>"
    + _ZH_LABELS["id"]
    + r"))[ \t\u3000]+(?=\S))",
)
#: Where a Chinese name, number or date value ends (the rest of a line is often "男，45岁").
_ZH_SHORT_END = re.compile(r"[，,；;。、（(\s]")
_ZH_ADDRESS_END = re.compile(r"[，,；;。]|\s{2,}|\t")
#: Where a Latin-script name value ends: a column gap, a bracket, ", Consultant ...".
_LATIN_NAME_END = re.compile(
    r"\s{2,}|\t|\s?\(|,\s+(?=(?:[A-Z][a-z]+\s+)?(?:Consultant|Registrar|"
    r"Physician|Surgeon|Nurse|GP|MD|MB|FRCP|PhD|Specialist|Resident|Head|"
    r"Director|Lead|Senior|Clinical|Biomedical|Pharmacist)\b)"
)


def labelled(text: str) -> Iterator[Hit]:
    """Values of labelled fields, English and Chinese."""
    labels: list[tuple[re.Match, str]] = []
    for m in _LABEL.finditer(text):
        if _is_label(m, text):
            labels.append((m, next(k for k in LABEL_KINDS if m.group(k))))
    for m in _ZH_LABEL.finditer(text):
        if m.group("spaced"):
            labels.append((m, "name" if m.group("sname") else "id"))
        else:
            labels.append((m, next(k for k in LABEL_KINDS if m.group(k))))
    labels.sort(key=lambda x: x[0].start())
    for (m, kind), nxt in zip(labels, [*labels[1:], None], strict=False):
        start = m.end()
        line_end = text.find("\n", start)
        line_end = len(text) if line_end < 0 else line_end
        end = nxt[0].start() if nxt is not None and nxt[0].start() < line_end else line_end
        if _has_cjk(m.group()) or _has_cjk(text[start:end]):
            stop = _ZH_ADDRESS_END if kind in ("contact", "institution") else _ZH_SHORT_END
            cut = stop.search(text, start + 1, end) if end > start + 1 else None
            end = cut.start() if cut else end
        if kind == "name" and not _has_cjk(text[start:end]):
            cut = _LATIN_NAME_END.search(text, start, end)
            end = cut.start() if cut else end
        s, e = _strip(text, start, end)
        if e > s:
            yield Hit(s, e, kind, is_name=kind == "name")


def _is_label(m: re.Match, text: str) -> bool:
    label = m.group("label").strip().lower()
    generic = m.group("name") or m.group("institution") or label in ("id", "ref")
    return not generic or bool(_FIELD_START.search(text[max(0, m.start() - 2) : m.start()]))


# --- patterns -------------------------------------------------------------------------------

_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
#: After a number, what makes it a result rather than an identifier.
_UNIT_AFTER = (
    r"\s*(?:/|x\s?10|×\s?10|\*\s?10|%|copies|cells|iu|u/|mg|g/|g\b|mmol|umol|µmol|μmol|nmol|pmol|"
    r"ml|dl|l\b|per\b|cfu|/ul|/µl|ng|pg|mcg|µg|μg|mm|cm|kg|ms|bpm|units?\b|个|次|毫|克|升)"
)
_DIGITS = r"(?:\d[\s.-]?)"
PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"[A-Za-z0-9_.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"),
    "url": re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+[\w/]", re.IGNORECASE),
    "ssn": re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)"),
    "phone": re.compile(
        r"(?<![\d.])(?:\+\d{1,3}[\s.-]?)?\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}(?!\d|\.\d)"  # 555-123-4567
        r"|(?<![A-Za-z0-9_.+])(?:\+\d{1,3}[\s.-]?|00\d{1,3}[\s.-])(?:\(0\)\s?)?\d{1,5}(?:[\s.-]?\d{2,6}){1,4}(?!\d|\.\d)"
        r"|(?<![A-Za-z0-9_.])0\d{2,4}[\s-]\d{3,4}[\s-]?\d{3,4}(?!\d|\.\d)"  # 020 7946 0958, 07700 900123
        r"|(?<![A-Za-z0-9_.])1[3-9]\d(?:[\s-]?\d{4}){2}(?!\d|\.\d)"  # 138 1234 5678
        r"|(?<![A-Za-z0-9_.])\(?0\d{2,3}\)?[\s-]?\d{7,8}(?!\d|\.\d)"  # 010-65432100
    ),
    "phone_context": re.compile(
        r"(?:\b(?:tel|phone|mob|mobile|cell|fax|ph)\.?|电话|手机|传真|联系方式)\s*[:：]?\s*"
        r"(?P<v>\+?\(?\d[\d\s().-]{5,18}\d)", re.IGNORECASE),  # fmt: skip
    "id_card": re.compile(r"(?<![\dA-Za-z])\d{17}[\dXx](?![\dA-Za-z])"),
    "date": re.compile(
        rf"(?<![\d.])(?:\d{{1,2}}/\d{{1,2}}/(?:\d{{4}}|\d{{2}})|\d{{1,2}}-\d{{1,2}}-(?:\d{{4}}|\d{{2}})"
        rf"|\d{{1,2}}\.\d{{1,2}}\.\d{{4}}|\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{1,2}}"
        rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+\d{{4}}|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
        rf"|\b{_MONTH}\s+\d{{4}}"
        rf"|\d{{4}}\s*年\s*\d{{1,2}}\s*月(?:\s*\d{{1,2}}\s*[日号])?|\d{{1,2}}\s*月\s*\d{{1,2}}\s*[日号])(?!\d|\.\d)",
        re.IGNORECASE,
    ),
    "age": re.compile(r"(?<!\d)(?:9\d|1[0-1]\d)\s*(?:-?\s*years?[\s-]*old|yo\b|y/o|岁)", re.IGNORECASE),
    #: Codes and long numbers: "00482913", "MRN-123456", "ZY20230506", "H0482913".
    "number": re.compile(
        r"(?<![A-Za-z0-9_.,/])(?:[A-Za-z]{1,4}[-#]?)?(?:\d-?){5,}\d[A-Za-z]?(?![A-Za-z0-9_.,/]|\s?%)"
        r"|(?<![A-Za-z0-9_.,/])[A-Za-z]{1,3}\d{2,}-\d{3,}(?![A-Za-z0-9_.,])"
    ),
}  # fmt: skip
_UNIT = re.compile(_UNIT_AFTER, re.IGNORECASE)
_KIND_OF_PATTERN = {"phone_context": "phone", "id_card": "id", "number": "id", "url": "contact"}


def patterns(text: str) -> Iterator[Hit]:
    """Identifiers recognisable without a label."""
    for name, pattern in PATTERNS.items():
        kind = _KIND_OF_PATTERN.get(name, name)
        for m in pattern.finditer(text):
            s, e = m.span("v") if "v" in pattern.groupindex else m.span()
            if name in ("number", "phone_context") and _UNIT.match(text, e):
                continue
            if name == "number" and not _looks_like_code(text[s:e]):
                continue
            s, e = _strip(text, s, e)
            if e > s:
                yield Hit(s, e, kind)


def _looks_like_code(value: str) -> bool:
    """Six digits or more, and not a range of short numbers ("150-400", "12-15")."""
    groups = re.findall(r"\d+", value)
    return sum(map(len, groups)) >= 6 and (max(map(len, groups)) >= 4 or value[0].isalpha())


# --- addresses and institutions -------------------------------------------------------------

_STREET = (
    r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Close|Drive|Dr|Way|Court|Ct|Crescent|Cres|Place|Pl|"
    r"Terrace|Boulevard|Blvd|Row|Square|Sq|Gardens|Grove|Mews|Walk|Park|Hill|Parade|Highway|Hwy|"
    r"Parkway|Pkwy|Circle|Cir|Quay|Green|Rise|Vale|View|Heights|Estate)"
)
_POSTCODE = (
    r"[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}"  # UK
    r"|[A-Z]\d{2}\s?[A-Z\d]{4}"  # Irish Eircode
    r"|(?:[A-Z]{2}\s+)?\d{5}(?:-\d{4})?"  # US state + ZIP
)
ADDRESS = re.compile(
    rf"(?:\b(?:Flat|Apt|Apartment|Unit|Suite)\s+\w+,?\s+)?"
    rf"\b\d{{1,5}}[A-Za-z]?,?\s+(?:[A-Z][A-Za-z'’-]+\s+){{1,3}}{_STREET}\b\.?"
    rf"(?:(?:,?[ \t]+|,[ \t]*\r?\n[ \t]*)(?!(?:tel|phone|fax|mob)\b)(?:[A-Z][A-Za-z'’-]+)"
    rf"(?:[ \t]+[A-Z][A-Za-z'’-]+){{0,2}})*"
    rf"(?:(?:,?[ \t]+|,[ \t]*\r?\n[ \t]*)(?:{_POSTCODE})\b)?"
)
_ZH_STOP = "于在到至往从经转入住址送赴去来及与的为是者月今昨我本该其即已曾后前时次由请回返诊查"
_ZH_BODY = rf"[\u4e00-\u9fff0-9０-９A-Za-z—\-#（）()&&[^{_ZH_STOP}]]"
_ZH_C = rf"[\u4e00-\u9fff&&[^{_ZH_STOP}]]"
_ZH_ADMIN = r"(?:省|自治区|自治州|特别行政区|市|区|县|旗|镇|乡|街道)"
_ZH_ROAD = r"(?:路|街|大道|巷|弄|胡同|村|里|小区|花园|苑|公寓|大厦)"
_ZH_NUMBER = r"(?:[\d０-９一二三四五六七八九十百]+(?:号楼|号院|号|弄|栋|幢|座|楼|单元|室|层|户|段|巷|期)|-\d+)"


def _zh(pattern: str) -> str:
    """Python's re has no class intersection: spell `[X&&[^stops]]` out as a lookahead."""
    return re.sub(
        r"\[([^\[\]]*)&&\[\^([^\]]*)\]\]",
        lambda m: rf"(?:(?![{m.group(2)}])[{m.group(1)}])",
        pattern,
    )


ZH_ADDRESS = re.compile(
    _zh(
        rf"(?:{_ZH_C}{{1,8}}?{_ZH_ADMIN}){{2,}}(?:{_ZH_C}{{1,10}}?{_ZH_ROAD})?{_ZH_NUMBER}*"
        rf"|(?:{_ZH_C}{{1,8}}?{_ZH_ADMIN})?{_ZH_C}{{1,10}}?{_ZH_ROAD}{_ZH_NUMBER}+"
    )
)
_INSTITUTION_WORD = (
    r"(?:Hospitals?|Infirmary|Clinic|Clinics|Medical\s+Cent(?:er|re)|Health\s+Cent(?:er|re)|Healthcare|"
    r"Health\s+System|Laborator(?:y|ies)|Diagnostics|Hospice|Pharmacy|Surgery|Medical\s+Practice|"
    r"Family\s+Practice|Nursing\s+Home|Care\s+Home|University|College|Institute|Foundation\s+Trust|"
    r"NHS\s+Trust|Trust)"
)
INSTITUTION = re.compile(
    rf"(?:\b(?:St\.?|Saint|Our[ \t]+Lady[ \t]+of|Royal|[A-Z][A-Za-z'’.-]+)(?:[ \t]+(?:of|the|and|&|de|"
    rf"[A-Z][A-Za-z'’.-]*)){{0,6}}?[ \t]+{_INSTITUTION_WORD}\b(?:[ \t]+(?:of|for)[ \t]+(?:the[ \t]+)?"
    rf"[A-Z][A-Za-z'’-]+(?:[ \t]+[A-Z][A-Za-z'’-]+)*)?)"
    rf"|\b(?:[A-Z][A-Z'’.&-]+[ \t]+){{1,5}}(?:HOSPITALS?|INFIRMARY|CLINIC|LABORATORY|LABORATORIES|"
    rf"MEDICAL\s+CENT(?:ER|RE)|HEALTH\s+CENT(?:ER|RE)|PHARMACY|SURGERY)\b"
)
#: Capitalised words in front of "Hospital" that do not make it an institution's name.
_GENERIC_BEFORE = {"the", "a", "this", "your", "our", "local", "at", "to", "in", "from", "of"}
#: "DEPARTMENT OF HAEMATOLOGY LABORATORY", "Clinical Chemistry Laboratory": a service, not
#: which hospital.
_DEPARTMENT_WORDS = frozenset(
    """department dept division service unit of the and & clinical central main general
    haematology hematology biochemistry chemistry pathology microbiology immunology virology
    radiology cytology histology histopathology blood transfusion sleep research diagnostic
    diagnostics outpatient outpatients day emergency laboratory medical health rapid access
    chest pain heart failure diabetes diabetic fracture memory falls stroke renal kidney
    cardiology cardiac respiratory asthma copd eye ear nose throat ent fertility antenatal
    maternity sexual travel vaccination anticoagulation warfarin pre-assessment preoperative
    surgical medicine oncology cancer breast urology orthopaedic orthopedic paediatric
    pediatric dermatology rheumatology neurology gastroenterology endoscopy hepatology
    psychiatry mental walk-in urgent care community""".split()
)
ZH_INSTITUTION = re.compile(
    _zh(
        rf"{_ZH_BODY}{{2,20}}?(?:医院|卫生院|诊所|卫生服务中心|卫生服务站|医疗中心|体检中心|检验所|"
        rf"检验中心|检测中心|医学院|医科大学|大学|门诊部|妇幼保健院|保健院|疗养院|药房|大药房|卫生室)"
        rf"(?:{_ZH_C}{{0,6}}?分院)?"
    )
)


def places(text: str) -> Iterator[Hit]:
    """Street addresses and institutions, English and Chinese."""
    for m in ADDRESS.finditer(text):
        yield Hit(*_strip(text, *m.span()), "address")
    for m in ZH_ADDRESS.finditer(text):
        yield Hit(*_strip(text, *m.span()), "address")
    for m in INSTITUTION.finditer(text):
        s, e = m.span()
        words = text[s:e].split()
        while words and words[0].lower() in _GENERIC_BEFORE:  # "The Royal ..." keeps "Royal"
            s = text.index(words[1], s + len(words[0])) if len(words) > 1 else e
            words = words[1:]
        if len(words) >= 2 and not all(w.lower() in _DEPARTMENT_WORDS for w in words[:-1]):
            yield Hit(*_strip(text, s, e), "institution")
    for m in ZH_INSTITUTION.finditer(text):
        value = m.group()
        if value not in ("本院", "我院", "该院", "医院", "大学"):
            yield Hit(*_strip(text, *m.span()), "institution")


# --- helpers ------------------------------------------------------------------------------

_EDGE = " \t\r\n,;|:：，；。、"


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in _EDGE:
        start += 1
    while end > start and text[end - 1] in _EDGE:
        end -= 1
    return start, end


def _has_cjk(s: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in s)


def has_cjk(s: str) -> bool:
    """Whether `s` holds a CJK ideograph (then Chinese rules and substring matching apply)."""
    return _has_cjk(s)
