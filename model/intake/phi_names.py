"""Person names in running text, English and Chinese, without a label to point at them.

Part of the recognizer in `model.intake.phi` (read that first).

English: words are classed with philter-lite's word lists (97k first names, 161k surnames,
195k words that are not names: English and medical vocabulary):
- strong: a first name or surname that is not an ordinary word ("Quackenbush", "Okafor");
- weak: a name that is also a word ("White", "Rose", "Will");
- unknown: a capitalised word in neither list (rare surnames, foreign names);
- common: an ordinary word ("Hemoglobin", "Report", "Ward").
A name is: a title and what follows ("Mr Quackenbush", "Dr. A. Okafor"), the words after
"Dear", the line under "Yours sincerely", two or more capitalised name-or-unknown words
("Zbigniew Quackenbush", "QUACKENBUSH, Zbigniew", "Z. Quackenbush"), one strong word on its
own, or a letter-spaced run that spells one ("J o h n  S m i t h"). Eponyms stay: a name word
before "disease", "syndrome", "'s", "lymphoma" ... ("Parkinson disease", "Hodgkin lymphoma"),
and surnames medicine uses as eponyms on their own (EPONYMS: "Babinski down-going", "Glasgow
Coma Scale") count only with another name word or a title ("Rose White", "Dr Murphy"). A word
glued to digits ("CHA2DS2-VASc") is a code.

Chinese: jieba's part-of-speech tagger marks person names (`nr`); a tagged word counts when it
starts with a surname (jieba also tags 帕金森病, 查体 and 阿莫西林 as names). A surname cut off
from its given name (陈/美玲, 徐海/燕, 阚/宏伟) is joined to it, unless it is glued to a
one-character word before it (氨/溴/索: a drug). Eponyms stay (巴宾斯基征, X病, X综合征). A
surname before a title (王医生, 李主任, 张建国医生) is a name whatever jieba says, if it starts
a word (not 任护士 in 责任护士).

The word lists and jieba's dictionary load once, on first use, under a lock.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import re
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .phi_rules import Hit

#: philter-lite's word lists (a 5.5 MB TOML file: ~0.6 s to parse, once).
_WORD_LISTS = "philter_lite/filters/set.toml"
_LOAD_LOCK = threading.Lock()

TITLES = frozenset(
    "mr mrs ms miss mx dr doctor prof professor sir dame nurse sister rev fr lord lady".split()
)
#: Titles that are also ordinary words ("Nurse Practitioner"): a name must follow as such.
_WORD_TITLES = frozenset("doctor professor sir dame nurse sister lord lady".split())
#: Words after "Dear" that are not a name.
_NOT_NAMES_AFTER_DEAR = frozenset("sir sirs madam colleague colleagues all team doctor".split())
#: Capitalised words that the lists call names but that letters and reports use as words.
_NEVER_NAMES = frozenset(
    """dear patient name date report result results test tests ward unit department clinic
    hospital laboratory lab page signed signature consultant doctor physician nurse sister
    normal high low positive negative reference range units comment comments diagnosis plan
    history examination impression summary discharge referral letter prescription dose
    tablet tablets capsule daily mane nocte bd tds qds prn oral review follow total free
    blood serum plasma urine sample specimen fasting random male female sex age address phone
    mobile email tel fax mrn dob id no number jan feb mar apr may jun jul aug sep sept oct nov
    dec january february march april june july august september october november december
    monday tuesday wednesday thursday friday saturday sunday street road lane close drive
    avenue general royal saint st city county north south east west new old upper lower
    yours sincerely faithfully regards kind best thanks many with from to cc re ref our your
    the and of for in on at by""".split()
)
#: Surnames that clinical text uses as eponyms on their own ("Babinski down-going", "Glasgow
#: 15/15"): a name only after a title.
EPONYMS = frozenset(
    """parkinson alzheimer hodgkin crohn cushing addison graves hashimoto bell down wilson
    raynaud sjogren sjögren guillain barre barré kawasaki huntington marfan tourette asperger
    meniere ménière paget peyronie dupuytren barrett burkitt ewing wilms kaposi reiter behcet
    behçet conn horner babinski apgar glasgow gleason breslow clark child pugh wells
    framingham korotkoff westergren coombs gram ziehl neelsen papanicolaou holter doppler swan
    ganz foley whipple nissen roux billroth hartmann heimlich valsalva trendelenburg kernig
    brudzinski murphy mcburney rovsing tinel phalen lachman romberg epley hallpike dix
    waterlow braden norton barthel rockall blatchford ranson apache wolff white fallot
    eisenmenger brugada mobitz wenckebach starling frank osler janeway roth quincke austin
    flint korsakoff wernicke broca bell's hirschsprung meckel zollinger ellison budd chiari
    mallory weiss boerhaave virchow troisier lambert eaton myasthenia""".split()
)
#: Words after a name that make it an eponym ("Parkinson disease", "Cushing's syndrome").
_EPONYM_NEXT = re.compile(
    r"(?:['’]s)?\s+(?:disease|syndrome|palsy|sign|test|score|scale|criteria|classification|"
    r"lymphoma|sarcoma|tumou?r|phenomenon|reflex|man(?:eu|oeu)vre|procedure|operation|catheter|"
    r"o?esophagus|ulcer|nodes?|cells?|staging|stage|grade|index|fracture|contracture|"
    r"thyroiditis|encephalopathy|disorder|chorea|dementia|hernia|triad|monitor|equation|formula|"
    r"method|stain|staining|agar|tube|bag|position|node|law|type|variant|ratio|diet|repair|"
    r"fistula|cyst|effect|reaction|gangrene|anomaly|ring|angle|space|point|line|duct|gland|"
    r"ligament|bone|sclerosis|dystrophy|ataxia|anemia|anaemia|neuralgia|neuroma|retractor|"
    r"forceps|needle|mask|counter)\b",
    re.IGNORECASE,
)
_EPONYM_WORD = re.compile(
    r"(?:disease|syndrome|palsy|sign|test|score|scale|criteria|classification|lymphoma|sarcoma|"
    r"reflex|procedure|operation|catheter|ulcer|staging|grade|index|fracture|coma|monitor|"
    r"manoeuvre|maneuver|stain|triad|equation|formula|method)",
    re.IGNORECASE,
)
_LATIN = r"A-Za-zÀ-ÖØ-öø-ÿ"
_WORD = re.compile(rf"[{_LATIN}](?:[{_LATIN}'’-]*[{_LATIN}])?")
_LETTER_SPACED = re.compile(
    rf"(?<![{_LATIN}])[{_LATIN}](?: [{_LATIN}'’-]){{2,}}(?![{_LATIN}])"
    rf"(?:[ \t]{{2,}}[{_LATIN}](?: [{_LATIN}'’-])+(?![{_LATIN}]))*"
)
_DEAR = re.compile(r"\bDear\s+", re.IGNORECASE)
_VALEDICTION = re.compile(
    r"(?:Yours\s+(?:sincerely|faithfully|truly)|(?:Kind|Best|Warm|With\s+kind)\s+regards|"
    r"Regards|Sincerely|With\s+(?:best\s+)?wishes|Many\s+thanks)\s*,?[ \t]*\r?\n(?:[ \t]*\r?\n)*[ \t]*",
    re.IGNORECASE,
)
#: Between two words of one name: spaces, or one comma ("QUACKENBUSH, Zbigniew").
_NAME_GAP = re.compile(r"[ \t]{1,3}|,[ \t]{1,2}|\.[ \t]{0,2}")

# --- Chinese -------------------------------------------------------------------------------

#: Single-character surnames: the common ones, which count in any word jieba does not know,
#: and the rest of the Hundred Family Surnames (百家姓), many of them ordinary characters (双,
#: 水, 国), which count in such a word only as surname + two characters that are not a word of
#: their own (缑丽娟 yes, 双下肢 and 双肺 no).
COMMON_SURNAMES = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁"
    "任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付傅方白邹孟熊秦邱江尹薛闫阎段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃"
    "武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮"
    "柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉"
    "缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑"
    "郎甄丛仲虞敖巩明佘池麻苑迟邝洪鞠丰廉宿"
)
SURNAMES = COMMON_SURNAMES | frozenset(
    "褚水云凤花酆湛禹狄贝计伏谈茅强危支昝经裘干宣贲郁杭诸钮嵇滑荀羊於惠家封芮羿储汲邴糜松井富乌巴弓"
    "牧隗山宓蓬郗班仰秋伊暴钭厉戎祖幸韶郜蓟薄印怀邰从鄂索咸籍赖蔺屠阴鬱胥能苍双闻莘贡劳逄扶堵宰郦雍"
    "卻璩寿通扈燕冀郏浦别充慕茹习宦鱼容慎戈庾终暨居衡步都满弘匡国广禄阙东殳沃利蔚越夔隆厍晁勾融訾阚"
    "那空毋乜养须巢蒯相查后荆红竺权逯盖益桓公缑亢况琴归海岳帅钦"
)
COMPOUND_SURNAMES = frozenset(
    "欧阳 司马 上官 诸葛 东方 皇甫 尉迟 公孙 慕容 令狐 司徒 夏侯 长孙 宇文 轩辕 端木 独孤 南宫 西门 "
    "澹台 公冶 宗政 濮阳 呼延 申屠 太史 钟离 闻人 赫连".split()
)
ZH_TITLES = (
    "先生|女士|小姐|医生|医师|大夫|主任医师|副主任医师|主任|副主任|护士长|护士|教授|副教授|老师|院长|"
    "主治医师|主治|药师|技师|师傅|阿姨|同志|博士|科长|总监"
)
_ZH_SURNAME = "(?:" + "|".join(sorted(COMPOUND_SURNAMES)) + "|[" + "".join(sorted(SURNAMES)) + "])"
#: Surname (+ up to two given-name characters) + title: 王医生, 李主任, 张建国医生, 欧阳娜娜教授.
_ZH_TITLED = re.compile(rf"{_ZH_SURNAME}(?:(?!{ZH_TITLES})[\u4e00-\u9fff]){{0,2}}(?:{ZH_TITLES})")
#: Longest run of Chinese characters handed to jieba at once (see `_pieces`).
MAX_JIEBA_RUN = 120
_LONG_CJK_RUN = re.compile(rf"[\u4e00-\u9fff]{{{MAX_JIEBA_RUN + 1},}}")
#: jieba calls these names; they are clinical words.
_ZH_NOT_NAMES = frozenset(
    "帕金森 帕金森病 阿尔茨海默 阿尔茨海默病 查体 神清 谷丙 谷草 史 时有 于今 常规 成人 明显 和缓 "
    "高血压 高血糖 高血脂 白细胞 白蛋白 金黄色 石膏 石灰 黄疸 黄体 胡言 马来酸 乔本 桥本 唐氏 "
    "包块 包膜 安静 安眠 安定 宁心 文字 方案 单位 万古霉素 柯萨奇 季节 华法林 雷尼替丁 艾司唑仑 "
    "罗红霉素 施图 伍德 卡马西平".split()
)


#: jieba tags a given name may carry once cut off from its surname (not verbs, particles,
#: numbers: 段/抬高 in "ST段抬高" is no name).
_GIVEN_NAME_TAGS = ("nr", "nz", "ns", "n", "a", "ag", "ng", "j", "b", "g", "z", "s", "tg", "un")


def _named(flag: str) -> bool:
    """A person's name in jieba's dictionary, or a word it does not know."""
    return flag.startswith("nr") or flag == UNKNOWN


#: A two-character word before a given name must be tagged as (part of) a proper name to be
#: a surname plus one character (徐海/燕); 家属/陈 is "relative Chen", not a name 家属陈.
_NAME_PART_TAGS = ("nr", "ns", "nz", "un")
#: A one-character word with these tags right before a surname is part of another word
#: (氨/溴/索/口服: 氨溴索, a drug), not the context of a name (由/王, 和/李 are fine).
_GLUED_TAGS = ("n", "ng", "nr", "nz", "a", "ag", "b", "j", "yg")
#: After a name, what makes it an eponym: 巴宾斯基征, 帕金森病, 库欣综合征, 墨菲氏征.
_ZH_EPONYM_NEXT = re.compile(
    r"[\u4e00-\u9fff]{0,2}?(?:征|综合征|综合症|氏(?!女士|先生)|试验|评分|病(?![情史人房区历程假因危号床员友]))"
)


def _zh_eponym(text: str, end: int) -> bool:
    return bool(_ZH_EPONYM_NEXT.match(text, end))


@dataclass(frozen=True)
class _Lexicon:
    first: frozenset[str]
    last: frozenset[str]
    common: frozenset[str]


@functools.cache
def _lexicon_unlocked() -> _Lexicon:
    path = importlib.metadata.distribution("philter-lite").locate_file(_WORD_LISTS)
    lists = tomllib.loads(path.read_text(encoding="utf-8"))  # type: ignore[union-attr]
    return _Lexicon(
        first=frozenset(lists["firstnames"]),
        last=frozenset(lists["lastnames"]),
        common=frozenset(lists["nonames"]) | _NEVER_NAMES,
    )


def lexicon() -> _Lexicon:
    """philter-lite's word lists, parsed once (thread-safe)."""
    with _LOAD_LOCK:
        return _lexicon_unlocked()


@dataclass(frozen=True)
class _Segmenter:
    """jieba's tokenizer (its 4-state HMM finds words missing from the dictionary, names
    mostly) and the part-of-speech tags of its dictionary words."""

    tokenizer: Any
    tags: dict[str, str]

    def tag(self, text: str) -> Iterator[tuple[str, str]]:
        """(word, tag) pairs covering `text`; a Chinese word missing from the dictionary is
        tagged UNKNOWN. (jieba.posseg tags unknown words with a second HMM of ~256 states:
        97 s for 50k characters of text it cannot segment, e.g. a PDF whose font maps glyphs to
        random ideographs; this takes ~0.7 s.)"""
        for word in self.tokenizer.cut(text, HMM=True):
            tag = self.tags.get(word)
            yield word, tag if tag else (UNKNOWN if _all_cjk(word) else "x")


#: The tag of a Chinese word jieba's dictionary does not have (a new name, most often).
UNKNOWN = "un"


@functools.cache
def _jieba_unlocked() -> _Segmenter:
    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.WARNING)  # it prints its cache path at INFO on first use
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    return _Segmenter(tokenizer, jieba.posseg.POSTokenizer(tokenizer).word_tag_tab)


def jieba_tagger() -> _Segmenter:
    """A private jieba tokenizer with its dictionary loaded (thread-safe)."""
    with _LOAD_LOCK:
        return _jieba_unlocked()


# --- English ---------------------------------------------------------------------------------


def word_class(word: str, lex: _Lexicon) -> str:
    """'S' strong name, 'W' weak name, 'U' unknown capitalised word, 'C' common word,
    'I' initial, 'T' title, 'L' lower-case word."""
    w = word.lower().replace("’", "'")
    base = w[:-2] if w.endswith("'s") else w
    if len(word) == 1:
        return "I" if word.isupper() else "L"
    if not word[0].isupper():
        return "L"
    if base in TITLES:
        return "T"
    named = base in lex.first or base in lex.last
    if base in lex.common:
        return "W" if named else "C"
    if named:
        return "S"
    if word.isupper() and len(word) <= 4:  # acronyms: WBC, MCV, CRP
        return "C"
    letters = base.replace("'", "").replace("-", "")
    return "U" if len(letters) >= 3 and letters.isalpha() else "C"


def english_names(text: str) -> Iterator[Hit]:
    """Names in English running text (see the module docstring for the rules)."""
    lex = lexicon()
    words = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]
    classes = [word_class(w, lex) for _, _, w in words]
    for i, (s, e, w) in enumerate(words):
        if text.startswith(":", e) or text.startswith("：", e):
            classes[i] = "C"  # a label, not a name
        elif text[e : e + 1].isdigit() or text[s - 1 : s].isdigit():
            classes[i] = "C"  # part of a code: CHA2DS2-VASc, HbA1c
        elif _EPONYM_WORD.fullmatch(w):
            classes[i] = "C"  # "Coma", "Scale", "Sign": ends a run ("Glasgow Coma Scale")
        elif w.lower().removesuffix("'s") in EPONYMS:
            classes[i] = "E"  # a name only with another name word or a title ("Rose White")
    dear_ends = {m.end() for m in _DEAR.finditer(text)}
    signature_starts = {m.end() for m in _VALEDICTION.finditer(text)}

    def run_end(i: int, allowed: str, limit: int = len(words)) -> int:
        """End (word index) of the run of words of `allowed` classes that goes on from i."""
        k = i + 1
        while (
            k < min(len(words), limit)
            and classes[k] in allowed
            and _NAME_GAP.fullmatch(text[words[k - 1][1] : words[k][0]])
        ):
            k += 1
        return k

    i = 0
    while i < len(words):
        start, first = words[i][0], words[i][2]
        if (
            (start in dear_ends or start in signature_starts)
            and first[0].isupper()
            and (first.lower() not in _NOT_NAMES_AFTER_DEAR)
        ):
            k = run_end(i, "SWUIET", i + 4)
        elif (
            classes[i] == "T"
            and run_end(i, "SWUIE" if first.lower() in _WORD_TITLES else "SWUICE") > i + 1
            and words[i + 1][2][0].isupper()
        ):
            k = run_end(i + 1, "SWUIE")  # the word after a title is a name whatever its class
        elif classes[i] in "SWUIE":
            k = run_end(i, "SWUIE")
            if not _is_name_run(classes[i:k]) or _EPONYM_NEXT.match(text, words[k - 1][1]):
                k = i
        else:
            k = i
        if k > i:
            yield _name_hit(text, start, words[k - 1][1], words[k - 1][2])
            i = k
        else:
            i += 1


def _is_name_run(run: list[str]) -> bool:
    run = ["W" if c == "E" else c for c in run]
    if len(run) == 1:
        return run[0] == "S"
    if all(c == "I" for c in run):
        return False
    if "S" in run:
        return True
    letters = [c for c in run if c != "I"]
    return ("U" in letters and len(run) >= 2) or (len(letters) >= 2 and "C" not in letters)


def _name_hit(text: str, start: int, end: int, last_word: str) -> Hit:
    if len(last_word) == 1 and text.startswith(".", end):
        end += 1  # a trailing initial's full stop: "Quackenbush, Z."
    return Hit(start, end, "person", is_name=True)


def letter_spaced(text: str) -> Iterator[tuple[Hit, str]]:
    """Letter-spaced runs that spell a name ("J o h n  S m i t h"), with the name written
    normally ("John Smith") so that its other forms can be found too."""
    lex = lexicon()
    for m in _LETTER_SPACED.finditer(text):
        words = [w.replace(" ", "") for w in re.split(r"\s{2,}", m.group())]
        classes = [word_class(w, lex) for w in words]
        if "S" in classes or "U" in classes or (len(words) >= 2 and "W" in classes):
            yield Hit(m.start(), m.end(), "person", is_name=True), " ".join(words)


def spaced_runs(text: str) -> Iterator[tuple[int, int, str]]:
    """Every letter-spaced run and what it spells (for finding known names spelled so)."""
    for m in _LETTER_SPACED.finditer(text):
        yield (
            m.start(),
            m.end(),
            " ".join(w.replace(" ", "") for w in re.split(r"\s{2,}", m.group())),
        )


# --- Chinese -------------------------------------------------------------------------------


def chinese_names(text: str) -> Iterator[Hit]:
    """Chinese person names: jieba `nr` words that start with a surname, and titled surnames."""
    tagged = []
    segmenter = jieba_tagger()
    for offset, piece in _pieces(text):
        at = offset
        for word, flag in segmenter.tag(piece):
            tagged.append((at, at + len(word), word, flag))
            at += len(word)
    inside_words = {  # not 任护士 inside the dictionary word 责任护士
        i for s, e, _, flag in tagged if flag != UNKNOWN for i in range(s + 1, e)
    }
    for m in _ZH_TITLED.finditer(text):
        if m.start() not in inside_words:
            yield Hit(m.start(), m.end(), "person", is_name=True)
    k = 0
    while k < len(tagged):
        s, e, word, flag = tagged[k]
        if not _starts_with_surname(word) or word in _ZH_NOT_NAMES:
            k += 1
            continue
        if _zh_eponym(text, e):
            k += 1
            continue
        glued = k > 0 and len(tagged[k - 1][2]) == 1 and tagged[k - 1][3].startswith(_GLUED_TAGS)
        if len(word) <= 2 and k + 1 < len(tagged) and not glued:  # 陈/美玲, 徐海/燕
            _, e2, nxt, flag2 = tagged[k + 1]
            if (
                len(nxt) <= 2
                and not _zh_eponym(text, e2)
                and _all_cjk(nxt)
                and (_named(flag) or _named(flag2))
                and (word in SURNAMES or word in COMPOUND_SURNAMES or _named(flag2))
                and (
                    len(word) == 1 or word in COMPOUND_SURNAMES or flag.startswith(_NAME_PART_TAGS)
                )
                and flag2.startswith(_GIVEN_NAME_TAGS)
                and word + nxt not in _ZH_NOT_NAMES
                and nxt not in _ZH_NOT_NAMES
            ):
                yield Hit(s, e2, "person", is_name=True)
                k += 2
                continue
        if (
            _named(flag)
            and 2 <= len(word) <= 4
            and (flag != UNKNOWN or _plausible_new_name(word, segmenter))
            and not (flag == "nrt" and len(word) > 3)
            and word not in COMPOUND_SURNAMES
        ):
            yield Hit(s, e, "person", is_name=True)
        k += 1


def _pieces(text: str) -> Iterator[tuple[int, str]]:
    """`text` in pieces for jieba, each run of Chinese characters at most MAX_JIEBA_RUN long:
    its tagger's Viterbi pass is superlinear in the length of a run without punctuation (50k
    random characters took 97 s); real sentences are far shorter."""
    cut = 0
    for m in _LONG_CJK_RUN.finditer(text):
        for at in range(m.start() + MAX_JIEBA_RUN, m.end(), MAX_JIEBA_RUN):
            yield cut, text[cut:at]
            cut = at
    yield cut, text[cut:]


def chinese_given_name(name: str) -> str | None:
    """The given name of a Chinese full name (王小明 -> 小明), if it has one of 2+ chars."""
    for surname in COMPOUND_SURNAMES:
        if name.startswith(surname):
            rest = name[2:]
            break
    else:
        rest = name[1:] if name[:1] in SURNAMES else ""
    return rest if len(rest) >= 2 and _all_cjk(rest) else None


def chinese_surname(name: str) -> str | None:
    """The surname of a Chinese full name, if it starts with a known one."""
    if name[:2] in COMPOUND_SURNAMES:
        return name[:2]
    return name[:1] if name[:1] in SURNAMES else None


def _plausible_new_name(word: str, segmenter: _Segmenter) -> bool:
    """A word jieba does not know, starting with a surname, read as a name (see SURNAMES)."""
    if word[:1] in COMMON_SURNAMES or word[:2] in COMPOUND_SURNAMES:
        return True
    given = word[1:]
    return len(given) == 2 and segmenter.tags.get(given, "nr").startswith("nr")


def _starts_with_surname(word: str) -> bool:
    return word[:1] in SURNAMES or word[:2] in COMPOUND_SURNAMES


def _all_cjk(s: str) -> bool:
    return bool(s) and all("\u4e00" <= c <= "\u9fff" for c in s)
