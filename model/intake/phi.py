"""THE patient-identifier recognizer: where in a text (a PDF's text layer, OCR'd lines of an
image) names, numbers, dates, addresses and institutions are, so that intake can remove them.

    from model.intake.phi import find_identifiers
    for ident in find_identifiers(text):      # sorted, non-overlapping
        print(ident.start, ident.end, ident.kind)   # never log ident.value

Why: a lab report or letter names its patient in places no labelled-field rule sees: an
unlabelled table cell, "Dear Mr. Zbigniew Quackenbush,", a footer "Z. Quackenbush | 00482913 |
17 Larkspur Close, Wexford | tel 0044 7700 900123", a letter-spaced banner ("J o h n  S m i t h"),
the signing doctor. Whatever is found once is removed everywhere it recurs.

How, in order (each part its own module):
1. `phi_rules`: labelled fields (English and Chinese labels), patterns (e-mail, URL, SSN,
   phone numbers, Chinese ID cards and mobiles, long numbers and codes, dates in English and
   Chinese, ages over 89), street addresses (English and 省/市/区/路/号) and institutions.
2. presidio-analyzer's validating pattern recognizers: phone numbers through Google's
   libphonenumber for the regions our reports come from, credit cards (Luhn), IBANs, IP
   addresses, NHS numbers (checksum). It runs on a blank spaCy pipeline: the official spaCy
   models are not on PyPI, and presidio's own engine provider would try to download one.
3. `phi_names`: English names from philter-lite's word lists (titles, "Dear", signature
   lines, capitalised name words, letter-spaced runs; eponyms such as "Parkinson disease"
   kept) and Chinese names from jieba's part-of-speech tags filtered by a surname list, plus
   surname + title (王医生, 李主任).
4. Recurrences: every value found, and each word of a name that is not an ordinary word,
   is removed wherever it appears again: whole words, any case, for Latin script; as a
   substring for Chinese; in initial + surname ("Z. Quackenbush") and letter-spaced forms
   too. Titles and initials next to a name go with it ("Mr Quackenbush", "Dr. A. Okafor").
5. Overlapping spans are merged; the kind of the most specific finder is kept (a labelled
   field, then a pattern, then a place, then a name, then a recurrence).
When in doubt between an identifier and ordinary text the rules mask; clinical content (test
names, values, units, ranges, drugs, diagnoses, eponyms) is what they are tuned to keep.

Choice, measured here (2 cores, other jobs running: load average ~8) on the synthetic corpus of
`model.intake.deid_corpus` (46 documents, 376 planted identifiers; `pulsemind bench deid`):
- the whole recognizer: recall 376/376, precision 0.990 per masked character, 273/273 clinical
  strings kept; 16 of the documents as real PDFs through intake: nothing leaked.
- philter-lite 0.6.0 installs but cannot run offline: its pipeline calls NLTK's perceptron
  tagger, a separate download. Its word lists (the data behind its name filters: 97k first
  names, 161k surnames, 195k ordinary and medical words) are what `phi_names` classes words by.
- presidio-analyzer 2.2.366 runs offline on a blank spaCy pipeline. Without a NER model it
  finds no names (its spaCy recognizer needs en_core_web_*), so it is used for validated
  number formats: without it recall drops to 363/376 (IP addresses, IBANs, card numbers, a
  "(0577) 8658 2197" landline). Its phone matches under 9 digits are dropped: it read the
  reference ranges "130-175" and "(135-145)" as Chinese phone numbers. Its e-mail and URL
  recognizers are left out: tldextract fetches the public suffix list over the network.
- Chinese names: jieba's `nr` tag alone also tags 帕金森病, 查体, 神清, 谷丙, 巴宾斯(基征) and
  (氨溴)索; a surname regex alone cannot tell 高血压 from a name. The tag + a surname list
  (百家姓) + joining a surname cut off from its given name (陈/美玲, 徐海/燕, 阚/宏伟) + an
  eponym check (X征, X病, X综合征) found every planted name and masked none of the clinical
  strings. pkuseg, LAC and HanLP were not tried.
The corpus was written alongside these rules, so its numbers flatter them: the documents added
last as an unseen check (nursing handovers, notes without any identifier) first scored 4
misses (two phone numbers before a full stop, two names with rare surnames) and 10 masked
clinical strings (Babinski, Glasgow Coma Scale, 巴宾斯基征, 氨溴索), since fixed by general
rules. Real reports will find new misses: add them to the corpus.
Cost (2 cores, load average ~2): loading ~5 s once, on the first call or on `load()` (spaCy
and presidio 3.7 s, word lists 0.6 s, jieba 0.8 s; 13 s when the machine is busy). After
that a two-page report takes 26 ms (English, 3.2k chars) to 62 ms (English + Chinese, 6.3k
chars); 50k characters of hostile text (random ideographs, capitalised words, numbers) take
0.2-2 s, linear in length.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from . import phi_names as names
from . import phi_rules as rules
from .deid import as_token, token_pattern
from .phi_rules import Hit, has_cjk


@dataclass(frozen=True)
class Identifier:
    """One identifier: text[start:end] == value; kind says what found it (see KINDS)."""

    start: int
    end: int
    kind: str
    value: str


#: Kinds, most specific first (when spans overlap, the first kind wins). Labelled fields:
#: name, id, dob, contact, institution; patterns: email, url, ssn, phone, date, age (and id);
#: places: address (and institution); names in running text: person; anything found again
#: because its value was found elsewhere: recurrence.
KINDS = ("name", "dob", "contact", "institution", "email", "ssn", "phone", "date", "age", "id",
         "address", "person", "recurrence")  # fmt: skip
_PRIORITY = {k: i for i, k in enumerate(KINDS)}
#: presidio entity -> our kind; results under MIN_PRESIDIO_SCORE are guesses (its US driver
#: licence and bank number recognizers score every 8-digit number 0.01-0.05).
_PRESIDIO_KINDS = {
    "PHONE_NUMBER": "phone", "CREDIT_CARD": "id", "IBAN_CODE": "id", "IP_ADDRESS": "contact",
    "UK_NHS": "id",
}  # fmt: skip
MIN_PRESIDIO_SCORE = 0.4
#: libphonenumber accepts 7-digit local numbers for some regions: reference ranges
#: ("130-175", "(135-145)") would pass. Every real number we plant has 9 digits or more.
MIN_PHONE_DIGITS = 9
#: Regions whose phone number formats presidio (libphonenumber) accepts without a "+".
PHONE_REGIONS = ("US", "GB", "IE", "CN", "AU", "IN")  # each region costs a pass over the text
_LOAD_LOCK = threading.Lock()

#: Next to a name: a title and initials before it, initials after it.
_BEFORE_NAME = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Professor|Sir|Dame|Nurse|Sister|Rev)\.?[ \t]+)?"
    r"(?:\b[A-Z]\.?[ \t]{0,2}){0,3}$"
)
_AFTER_NAME = re.compile(r",?[ \t]*(?:[A-Z]\.[ \t]?){1,3}|(?:[ \t][A-Z]\b(?!['’]))")
_LATIN_WORD = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ](?:[A-Za-zÀ-ÖØ-öø-ÿ'’-]*[A-Za-zÀ-ÖØ-öø-ÿ])?")
_ZH_AFTER_NAME = re.compile(rf"(?:{names.ZH_TITLES})")


def find_identifiers(text: str) -> list[Identifier]:
    """Every identifier in `text`: sorted by position, non-overlapping, every recurrence of a
    found value included. Loads the recognizers on first use (see `load`)."""
    if not text or not text.strip():
        return []
    hits: list[Hit] = [*rules.labelled(text), *rules.patterns(text), *rules.places(text)]
    hits += _presidio_hits(text)
    hits += names.english_names(text)
    spelled: list[str] = []
    for hit, name in names.letter_spaced(text):
        hits.append(hit)
        spelled.append(name)
    if has_cjk(text):
        hits += names.chinese_names(text)
    hits += _recurrences(text, hits, spelled)
    return _merge(text, hits)


def load() -> None:
    """Load the word lists, jieba and presidio now (~4 s), e.g. at app start, instead of on
    the first upload."""
    names.lexicon()
    names.jieba_tagger()
    _presidio()


def identifying_tokens(identifiers: Iterable[Identifier]) -> set[str]:
    """Lower-case values to look for in anything handed on (intake's final leak check:
    `model.intake.deid.contains_identifier`). Every one of them was removed from the text as
    a whole word in any case; single ordinary words ("Rose", removed only where capitalised)
    are left out, as they would flag the word anywhere."""
    common = names.lexicon().common
    out: set[str] = set()
    for ident in identifiers:
        token = _cjk_token(ident.value) or as_token(ident.value)
        if token and token not in common and token not in names.TITLES:
            out.add(token)
    return out


# --- presidio ---------------------------------------------------------------------------------


@functools.cache
def _presidio_unlocked():
    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        IbanRecognizer,
        IpRecognizer,
        NhsRecognizer,
        PhoneRecognizer,
    )

    nlp = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": "blank:en"}])
    nlp.nlp = {"en": spacy.blank("en")}  # set instead of load(): load() would download
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in (
        PhoneRecognizer(supported_regions=PHONE_REGIONS),
        CreditCardRecognizer(),
        IbanRecognizer(),
        IpRecognizer(),
        NhsRecognizer(),
    ):
        registry.add_recognizer(recognizer)

    class NoContext(ContextAwareEnhancer):
        """Scores as the recognizers give them. presidio's default enhancer compares lemmas
        (a blank pipeline has none) and walks the tokens once per result: 3.6 of 11 s on
        100k characters of numbers."""

        def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers,
                                  context=None):  # fmt: skip
            return raw_results

    return AnalyzerEngine(
        nlp_engine=nlp,
        registry=registry,
        supported_languages=["en"],
        context_aware_enhancer=NoContext(0, 0, 0, 0),
    )


def _presidio():
    with _LOAD_LOCK:
        return _presidio_unlocked()


def _presidio_hits(text: str) -> list[Hit]:
    results = _presidio().analyze(
        text, language="en", entities=list(_PRESIDIO_KINDS), score_threshold=MIN_PRESIDIO_SCORE
    )
    return [
        Hit(r.start, r.end, _PRESIDIO_KINDS[r.entity_type])
        for r in results
        if r.entity_type != "PHONE_NUMBER"
        or sum(c.isdigit() for c in text[r.start : r.end]) >= MIN_PHONE_DIGITS
    ]


# --- recurrences ------------------------------------------------------------------------------


def _recurrences(text: str, hits: list[Hit], spelled: list[str]) -> list[Hit]:
    """Every other occurrence of what `hits` found, and names' surroundings (titles, initials)."""
    lex = names.lexicon()
    tokens: set[str] = set()  # whole words, any case
    capitalised: set[str] = set()  # ordinary words that are also names: only as names
    cjk: set[str] = set()  # substrings
    for hit in hits:
        value = text[hit.start : hit.end]
        if has_cjk(value):
            cjk.add(value.strip())
            if hit.kind == "name":  # a labelled name: its given name alone too (小明)
                given = names.chinese_given_name(value)
                if given:
                    cjk.add(given)
        else:
            word = value.strip()
            if hit.is_name and len(word.split()) == 1 and word.lower() in lex.common:
                capitalised.add(word)
            elif token := as_token(value):
                tokens.add(token)
        if hit.is_name:
            _add_name_parts(value, lex, tokens, capitalised)
    for name in spelled:
        _add_name_parts(name, lex, tokens, capitalised)
        tokens.add(name.lower())
    out: list[Hit] = []
    pattern = token_pattern(tokens)
    name_parts = {t for t in tokens if " " not in t}
    if pattern is not None:
        for m in pattern.finditer(text):
            is_name = m.group().lower() in name_parts
            out.append(_around_name(text, m.start(), m.end()) if is_name else
                       Hit(m.start(), m.end(), "recurrence"))  # fmt: skip
    if capitalised:
        alternation = "|".join(re.escape(w) for w in sorted(capitalised, key=len, reverse=True))
        for m in re.finditer(rf"(?<![\w-])(?:{alternation})(?![\w-])", text):
            word = m.group()
            if word[0].isupper() or word.isupper():
                out.append(_around_name(text, m.start(), m.end()))
    if cjk:
        alternation = "|".join(re.escape(w) for w in sorted(cjk, key=len, reverse=True))
        for m in re.finditer(alternation, text):
            end = m.end()
            if title := _ZH_AFTER_NAME.match(text, end):
                end = title.end()
            out.append(Hit(m.start(), end, "recurrence", is_name=True))
        for value in cjk:  # the surname with a title: 王先生, 李主任
            surname = names.chinese_surname(value)
            if surname and len(value) >= 2:
                for m in re.finditer(rf"{re.escape(surname)}(?:{names.ZH_TITLES})", text):
                    out.append(Hit(m.start(), m.end(), "recurrence", is_name=True))
    known = name_parts | {t.lower() for t in capitalised}
    for start, end, spelled_name in names.spaced_runs(text):  # "S m i t h" of a known name
        squashed = spelled_name.replace(" ", "").lower()  # PDF text may lose the double space
        if any(
            w in known or (len(w) >= 4 and w in squashed) for w in spelled_name.lower().split()
        ) or any(len(k) >= 4 and k in squashed for k in known):
            out.append(Hit(start, end, "recurrence", is_name=True))
    for hit in hits:  # titles and initials next to a name found in the first pass
        if hit.is_name and hit.kind == "person":
            grown = _around_name(text, hit.start, hit.end)
            if (grown.start, grown.end) != (hit.start, hit.end):
                out.append(Hit(grown.start, grown.end, "person", is_name=True))
    return out


def _add_name_parts(value: str, lex, tokens: set[str], capitalised: set[str]) -> None:
    """The words of a Latin-script name worth finding on their own (not titles, initials,
    ordinary words such as "male" in "Doe, Jane, male")."""
    for part in re.split(r"[\s,.;|/()]+", value):
        if len(part) < 2 or not _LATIN_WORD.fullmatch(part):
            continue
        cls = names.word_class(part[0].upper() + part[1:], lex)
        if cls in ("S", "U"):
            if token := as_token(part):
                tokens.add(token)
        elif cls == "W":
            capitalised.add(part[0].upper() + part[1:].lower())
            capitalised.add(part.upper())


def _around_name(text: str, start: int, end: int) -> Hit:
    """The span of a name word widened to a title and initials before it ("Mr", "Z. ") and
    initials after it (", Z.")."""
    before = _BEFORE_NAME.search(text, max(0, start - 24), start)
    if before and before.end() == start and before.start() < start:
        start = before.start()
    after = _AFTER_NAME.match(text, end)
    if after:
        end = after.end()
    return Hit(start, end, "recurrence", is_name=True)


def _cjk_token(value: str) -> str | None:
    value = value.strip()
    return value if has_cjk(value) and len(value) >= 2 else None


# --- merging ----------------------------------------------------------------------------------


def _merge(text: str, hits: list[Hit]) -> list[Identifier]:
    """Union of overlapping spans, each with the most specific kind among its parts."""
    out: list[Identifier] = []
    cur_s = cur_e = -1
    cur_kind = ""
    for hit in sorted(hits, key=lambda h: (h.start, -h.end)):
        if hit.end <= hit.start:
            continue
        if hit.start < cur_e:
            cur_e = max(cur_e, hit.end)
            if _PRIORITY[hit.kind] < _PRIORITY[cur_kind]:
                cur_kind = hit.kind
            continue
        if cur_e > cur_s >= 0:
            out.append(Identifier(cur_s, cur_e, cur_kind, text[cur_s:cur_e]))
        cur_s, cur_e, cur_kind = hit.start, hit.end, hit.kind
    if cur_e > cur_s >= 0:
        out.append(Identifier(cur_s, cur_e, cur_kind, text[cur_s:cur_e]))
    return out
