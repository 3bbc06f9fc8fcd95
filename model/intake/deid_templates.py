"""The documents of the de-identification corpus (`model.intake.deid_corpus`): invented
people, places and numbers, and one function per kind of document and language.

Each template is `(i, rng) -> CorpusDoc`: the i-th variant, drawing numbers from `rng`. It
writes its lines through a `Builder`, which records each identifier it prints (`b.p(...)`) and
each clinical string that must survive (`b.c(...)`), and refuses a document that records
something it does not print.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CorpusDoc:
    """One synthetic document: its text, what identifies the patient in it, what must stay."""

    name: str
    language: str  # "en", "zh" or "mixed"
    kind: str  # "lab", "discharge", "referral", "prescription", "nursing", "progress"
    text: str
    planted: tuple[str, ...]
    clinical: tuple[str, ...]
    pdf: bool = False  # also rendered to PDF by the tests and the bench


@dataclass
class Builder:
    """Collects planted and clinical strings while a template writes its text."""

    planted: list[str] = field(default_factory=list)
    clinical: list[str] = field(default_factory=list)

    def p(self, value: str) -> str:
        """An identifier: printed, and recorded as planted."""
        if value not in self.planted:
            self.planted.append(value)
        return value

    def c(self, value: str) -> str:
        """Clinical content: printed, and recorded as what must survive."""
        if value not in self.clinical:
            self.clinical.append(value)
        return value

    def doc(self, name: str, language: str, kind: str, lines: list[str], pdf: bool) -> CorpusDoc:
        text = "\n".join(lines) + "\n"
        missing = [s for s in (*self.planted, *self.clinical) if s not in text]
        if missing:  # a template bug, not a measurement
            raise ValueError(f"{name}: recorded but not printed: {missing}")
        return CorpusDoc(name, language, kind, text, tuple(self.planted), tuple(self.clinical), pdf)


@dataclass(frozen=True)
class _EnPerson:
    first: str
    last: str
    title: str  # Mr, Mrs, Ms

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def initial(self) -> str:
        return f"{self.first[0]}. {self.last}"


_EN_PATIENTS = (
    _EnPerson("Zbigniew", "Quackenbush", "Mr"), _EnPerson("Siobhan", "Featherstonehaugh", "Ms"),
    _EnPerson("Oluwaseun", "Adeyemi", "Mr"), _EnPerson("Wilhelmina", "Vanterpool", "Mrs"),
    _EnPerson("Henrik", "Przybylski", "Mr"), _EnPerson("Priya", "Ramaswamy", "Ms"),
    _EnPerson("Declan", "O'Sullivan", "Mr"), _EnPerson("Xanthe", "Delacroix", "Mrs"),
    _EnPerson("Rose", "White", "Mrs"), _EnPerson("Tomasz", "Kowalczyk", "Mr"),
)  # fmt: skip
_EN_DOCTORS = (
    _EnPerson("Amara", "Okafor", "Dr"), _EnPerson("Lucas", "Abernathy", "Dr"),
    _EnPerson("Ingrid", "Solberg", "Dr"), _EnPerson("Rafael", "Quintanilla", "Dr"),
    _EnPerson("Mark", "Green", "Dr"), _EnPerson("Yusuf", "Haddad", "Dr"),
)  # fmt: skip
_EN_TOWNS = ("Wexford", "Ballymena", "Kettering", "Grantham", "Truro", "Portadown")
_EN_STREETS = ("Larkspur Close", "Foxglove Road", "Mill Lane", "Harbour View", "Orchard Way",
               "Quarry Hill")  # fmt: skip
_EN_HOSPITALS = ("Wexford General Hospital", "St Brigid's Hospital", "Kettering Royal Infirmary",
                 "Riverside Medical Centre", "Northfield Clinic", "Portadown Community Hospital")  # fmt: skip
_EN_PHARMACIES = ("Hillside Pharmacy", "Castle Street Pharmacy")

_ZH_PATIENTS = ("王小明", "陈美玲", "欧阳娜娜", "李秀英", "赵志强", "黄丽娟", "徐海燕", "马俊杰",
                "胡雪梅", "司马文华", "林思远", "阚宏伟")  # fmt: skip
_ZH_DOCTORS = ("张建国", "刘文静", "孙立平", "吴晓东", "郭子涵", "何家豪", "周雅琴")
_ZH_RELATIVES = ("陈国栋", "王丽华", "李建军", "赵敏")
_ZH_HOSPITALS = ("温州市第三人民医院", "上海市第六人民医院", "杭州仁爱医院", "成都华西社区卫生服务中心",
                 "南京鼓楼区中医院", "广州博济诊所")  # fmt: skip
_ZH_ADDRESSES = ("浙江省杭州市西湖区文三路478号", "上海市浦东新区张杨路1234号3栋502室",
                 "江苏省南京市鼓楼区中山北路88号", "广东省广州市天河区体育西路101号2单元301室",
                 "四川省成都市武侯区人民南路四段17号")  # fmt: skip


def _digits(rng: random.Random, n: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(n))


def _date(rng: random.Random, y0: int, y1: int) -> tuple[int, int, int]:
    return rng.randrange(y0, y1), rng.randrange(1, 13), rng.randrange(1, 29)


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip


def _en_mobile(rng: random.Random) -> str:
    return (
        f"0044 7700 900{_digits(rng, 3)}" if rng.random() < 0.5 else f"07700 900{_digits(rng, 3)}"
    )


def _zh_mobile(rng: random.Random) -> str:
    return f"1{rng.choice('3589')}{_digits(rng, 9)}"


def _zh_id_card(rng: random.Random, y: int, m: int, d: int) -> str:
    return f"{rng.choice(['110101', '330106', '310115', '440106'])}{y}{m:02d}{d:02d}{_digits(rng, 3)}{rng.choice('0123456789X')}"


# --- English templates ----------------------------------------------------------------------


def _en_lab(i: int, rng: random.Random) -> CorpusDoc:
    b = Builder()
    pt, dr, dr2 = _EN_PATIENTS[i % 10], _EN_DOCTORS[i % 6], _EN_DOCTORS[(i + 2) % 6]
    y, m, d = _date(rng, 1935, 2000)
    mrn = _digits(rng, 8)
    hosp = _EN_HOSPITALS[i % 6]
    town = _EN_TOWNS[i % 6]
    street = f"{rng.randrange(2, 200)} {_EN_STREETS[i % 6]}"
    phone = _en_mobile(rng)
    ry, rm, rd = _date(rng, 2022, 2025)
    lines = [
        f"{b.p(hosp.upper())} - DEPARTMENT OF HAEMATOLOGY",
        "LABORATORY REPORT",
        "",
        f"{b.p(pt.full)}  |  {b.p(f'{d:02d}/{m:02d}/{y}')}  |  Ward 4B  |  {b.p(mrn)}",
        f"Collected: {b.p(f'{ry}-{rm:02d}-{rd:02d}')} 08:15   Requested by: {b.p(f'{dr.title} {dr.full}')}",
        "",
        "Test                 Result   Units     Reference",
        b.c("Hemoglobin           13.2     g/dL      12.0-15.5"),
        b.c("White cell count     7.1      x10^9/L   4.0-11.0"),
        b.c("Platelets            250      x10^9/L   150-400"),
        b.c("Ferritin             18       ug/L      30-400") + "   L",
        b.c("C-reactive protein   4        mg/L      <5"),
        "",
        f"Comment: mild iron deficiency; {b.p(f'{pt.title} {pt.last}')} advised to start "
        f"{b.c('ferrous sulfate 200 mg')} daily. Discussed with {b.p(dr2.full)} on the ward.",
        f"Clinical details: {b.c('Parkinson disease')}, on {b.c('levodopa')}; fatigue.",
        "",
        f"Validated by: {b.p(f'{dr2.first[0]}. {dr2.last}')}, Consultant Haematologist",
        f"{b.p(pt.initial)} | {mrn} | {b.p(f'{street}, {town}')} | tel {b.p(phone)}",
    ]
    return b.doc(f"en-lab-{i:02d}", "en", "lab", lines, pdf=i < 3)


def _en_discharge(i: int, rng: random.Random) -> CorpusDoc:
    b = Builder()
    pt, dr, gp = _EN_PATIENTS[(i + 3) % 10], _EN_DOCTORS[(i + 1) % 6], _EN_DOCTORS[(i + 4) % 6]
    hosp = _EN_HOSPITALS[(i + 2) % 6]
    y, m, d = _date(rng, 1940, 1990)
    ay, am, ad = _date(rng, 2023, 2025)
    nhs = f"{_digits(rng, 3)} {_digits(rng, 3)} {_digits(rng, 4)}"
    street = f"{rng.randrange(2, 99)} {_EN_STREETS[(i + 3) % 6]}"
    town = _EN_TOWNS[(i + 1) % 6]
    email = f"{pt.first.lower()}.{pt.last.lower().replace(chr(39), '')}@example.org"
    he = "He" if pt.title == "Mr" else "She"
    lines = [
        b.p(hosp),
        "Discharge Summary",
        "",
        f"Dear {b.p(f'{gp.title} {gp.last}')},",
        "",
        f"Re: {b.p(pt.full)}, born {b.p(f'{d} {_MONTHS[m - 1]} {y}')}, NHS No {b.p(nhs)}",
        f"{b.p(f'{street}, {town}')}",
        "",
        f"Thank you for referring {b.p(f'{pt.title}. {pt.last}')}, who was admitted on "
        f"{b.p(f'{ad} {_MONTHS[am - 1]} {ay}')} with {b.c('community-acquired pneumonia')}.",
        f"{he} was treated with {b.c('amoxicillin 500 mg three times daily')} and made a good recovery.",
        f"Background: {b.c('type 2 diabetes mellitus')}, {b.c('Hodgkin lymphoma')} in remission.",
        f"Discharge bloods: {b.c('Sodium 138 mmol/L')}, {b.c('Creatinine 88 umol/L')}, "
        f"{b.c('HbA1c 58 mmol/mol')}.",
        f"Please review {b.p(pt.last)} in two weeks; {he.lower()} can be "
        f"reached on {b.p(_en_mobile(rng))} or {b.p(email)}.",
        "",
        "Yours sincerely,",
        "",
        b.p(f"{dr.title} {dr.full}"),
        "Consultant Physician",
        f"cc: {b.p(pt.full)} (patient)",
        f"Printed from workstation {b.p(f'10.{20 + i}.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}')}",
    ]
    return b.doc(f"en-discharge-{i:02d}", "en", "discharge", lines, pdf=i < 2)


def _en_referral(i: int, rng: random.Random) -> CorpusDoc:
    b = Builder()
    pt, dr, to = _EN_PATIENTS[(i + 6) % 10], _EN_DOCTORS[(i + 3) % 6], _EN_DOCTORS[(i + 5) % 6]
    clinic = _EN_HOSPITALS[(i + 4) % 6]
    spaced = "  ".join(" ".join(w) for w in pt.full.split())
    y, m, d = _date(rng, 1950, 2005)
    lines = [
        b.p(spaced),
        f"Referral letter - {b.p(clinic)}",
        "",
        "Dear Colleague,",
        "",
        f"I would be grateful if you could see {b.p(pt.full)} (date of birth {b.p(f'{m}/{d}/{y}')}, "
        f"hospital number {b.p('H' + _digits(rng, 7))}),",
        f"a patient with {b.c('atrial fibrillation')} and {b.c('heart failure with reduced ejection fraction')}.",
        f"Echo: {b.c('LVEF 35%')}. Current medicines: {b.c('bisoprolol 2.5 mg once daily')}, "
        f"{b.c('apixaban 5 mg twice daily')}.",
        f"{b.p(pt.first)} is keen to discuss ablation. {b.p(f'{pt.title} {pt.last}')} lives alone.",
        f"ECG shows {b.c('left bundle branch block')}; {b.c('Wolff-Parkinson-White')} excluded.",
        "",
        "Kind regards,",
        "",
        b.p(dr.full),
        f"for {b.p(f'{to.title} {to.last}')}, GP partner",
    ]
    return b.doc(f"en-referral-{i:02d}", "en", "referral", lines, pdf=i < 2)


def _en_prescription(i: int, rng: random.Random) -> CorpusDoc:
    b = Builder()
    pt, dr = _EN_PATIENTS[(i + 1) % 10], _EN_DOCTORS[(i + 2) % 6]
    pharm = _EN_PHARMACIES[i % 2]
    y, m, d = _date(rng, 1930, 2010)
    street = f"{rng.randrange(2, 99)} {_EN_STREETS[(i + 5) % 6]}"
    lines = [
        "PRESCRIPTION",
        f"Patient: {b.p(f'{pt.last.upper()}, {pt.first}')}      DOB: {b.p(f'{d:02d}.{m:02d}.{y}')}",
        f"Address: {b.p(f'{street}, {_EN_TOWNS[(i + 2) % 6]}')}",
        "",
        b.c("Metformin 500 mg tablets") + " - one twice daily with meals - 56 tablets",
        b.c("Atorvastatin 20 mg tablets") + " - one at night - 28 tablets",
        b.c("Salbutamol 100 micrograms inhaler") + " - two puffs when required",
        "",
        f"Prescriber: {b.p(f'{dr.title} {dr.initial}')}   GMC {b.p(_digits(rng, 7))}",
        f"Signature: {b.p(dr.last)}        Date: {b.p(f'{rng.randrange(1, 28)}/{rng.randrange(1, 13)}/2024')}",
        f"Dispensed at {b.p(pharm)}, {b.p(f'{rng.randrange(2, 60)} High Street, {_EN_TOWNS[i % 6]}')}",
        f"Private prescription, paid by transfer from {b.p('IE29 AIBK 9311 5212 3456 78')} "
        f"/ card {b.p('4111 1111 1111 1111')}",
    ]
    return b.doc(f"en-prescription-{i:02d}", "en", "prescription", lines, pdf=i < 1)


# --- Chinese templates ----------------------------------------------------------------------


def _zh_lab(i: int, rng: random.Random) -> CorpusDoc:
    b = Builder()
    pt, dr, tech = _ZH_PATIENTS[i % 12], _ZH_DOCTORS[i % 7], _ZH_DOCTORS[(i + 3) % 7]
    hosp = _ZH_HOSPITALS[i % 6]
    zy = f"ZY{_digits(rng, 8)}"
    y, m, d = _date(rng, 2022, 2025)
    phone = _zh_mobile(rng)
    lines = [
        f"{b.p(hosp)} 检验报告单",
        f"姓名：{b.p(pt)}   性别：男   年龄：{rng.randrange(20, 80)}岁   住院号：{b.p(zy)}   科室：消化内科",
        "项目            结果    单位        参考范围",
        b.c("血红蛋白        132     g/L         130-175"),
        b.c("白细胞计数      6.5     ×10^9/L     3.5-9.5"),
        b.c("谷丙转氨酶      35      U/L         9-50"),
        b.c("总胆红素        12.3    μmol/L      0-21"),
        b.c("肌酐            78      μmol/L      57-111"),
        f"临床诊断：{b.c('慢性胃炎')}，{b.c('幽门螺杆菌感染')}",
        f"送检医生：{b.p(dr)}   检验者：{b.p(tech)}   报告日期：{b.p(f'{y}年{m}月{d}日')}",
        f"{pt} | {zy} | {b.p(phone)}",
    ]
    return b.doc(f"zh-lab-{i:02d}", "zh", "lab", lines, pdf=i < 2)


def _zh_discharge(i: int, rng: random.Random) -> CorpusDoc:
    b = Builder()
    pt, dr, rel = _ZH_PATIENTS[(i + 4) % 12], _ZH_DOCTORS[(i + 1) % 7], _ZH_RELATIVES[i % 4]
    hosp = _ZH_HOSPITALS[(i + 1) % 6]
    addr = _ZH_ADDRESSES[i % 5]
    y, m, d = _date(rng, 2023, 2025)
    by, bm, bd = _date(rng, 1940, 1990)
    surname = pt[:2] if pt[:2] in ("欧阳", "司马") else pt[0]
    lines = [
        f"{b.p(hosp)}出院小结",
        f"患者{b.p(pt)}，女，{2024 - by}岁，因反复上腹痛2年于{b.p(f'{y}年{m}月{d}日')}入院。",
        f"入院诊断：{b.c('2型糖尿病')}；{b.c('高血压病3级')}；{b.c('帕金森病')}。",
        f"住院期间予{b.c('二甲双胍 0.5g 每日两次')}、{b.c('阿司匹林肠溶片 100mg 每日一次')}治疗，"
        f"{b.c('空腹血糖 6.8 mmol/L')}。",
        f"出院时{b.p(surname + '女士')}一般情况良好，嘱低盐低脂饮食。",
        f"出生日期：{b.p(f'{by}-{bm:02d}-{bd:02d}')}  身份证号：{b.p(_zh_id_card(rng, by, bm, bd))}",
        f"家属{b.p(rel)}（女儿）电话{b.p(_zh_mobile(rng))}，住址{b.p(addr)}。",
        f"主治医师：{b.p(dr)}",
    ]
    return b.doc(f"zh-discharge-{i:02d}", "zh", "discharge", lines, pdf=i < 1)


def _zh_referral(i: int, rng: random.Random) -> CorpusDoc:
    b = Builder()
    pt, dr, to = _ZH_PATIENTS[(i + 8) % 12], _ZH_DOCTORS[(i + 2) % 7], _ZH_DOCTORS[(i + 5) % 7]
    src, dst = _ZH_HOSPITALS[(i + 2) % 6], _ZH_HOSPITALS[(i + 3) % 6]
    lines = [
        "转诊单",
        f"致：{b.p(dst)} {b.p(to[0] + '主任')}",
        f"兹有我院患者{b.p(pt)}，门诊号{b.p(_digits(rng, 9))}，因{b.c('急性ST段抬高型心肌梗死')}"
        f"需行{b.c('经皮冠状动脉介入治疗')}，特转贵院。",
        f"患者既往有{b.c('高血压病史10年')}，规律服用{b.c('氨氯地平 5mg 每日一次')}。",
        f"{b.c('肌钙蛋白I 2.35 ng/mL')}，{b.c('心电图示V1-V4导联ST段抬高')}。",
        f"联系人：{b.p(dr)}医生，手机{b.p(_zh_mobile(rng))}",
        f"{b.p(src)}  {b.p(dr[0] + '医生')}  如有疑问请致电{b.p(f'(0577) 8{_digits(rng, 3)} {_digits(rng, 4)}')}",
    ]
    return b.doc(f"zh-referral-{i:02d}", "zh", "referral", lines, pdf=False)


def _zh_prescription(i: int, rng: random.Random) -> CorpusDoc:
    b = Builder()
    pt, dr = _ZH_PATIENTS[(i + 2) % 12], _ZH_DOCTORS[(i + 4) % 7]
    hosp = _ZH_HOSPITALS[(i + 4) % 6]
    lines = [
        f"{b.p(hosp)} 处方笺",
        f"姓名 {b.p(pt)}   性别 男   年龄 62岁   医保卡号：{b.p(_digits(rng, 12))}",
        f"临床诊断：{b.c('社区获得性肺炎')}",
        "Rp:",
        b.c("阿莫西林胶囊 0.5g×24粒") + "   用法：" + b.c("0.5g 每日三次 口服"),
        b.c("氨溴索口服溶液 100ml") + "   用法：" + b.c("10ml 每日三次"),
        f"医师：{b.p(dr)}   药师：{b.p(_ZH_DOCTORS[(i + 6) % 7])}   金额：86.50元",
        f"{b.p(f'2024年{rng.randrange(1, 13)}月{rng.randrange(1, 28)}日')}",
    ]
    return b.doc(f"zh-prescription-{i:02d}", "zh", "prescription", lines, pdf=False)


def _en_nursing(i: int, rng: random.Random) -> CorpusDoc:
    b = Builder()
    pt, dr = _EN_PATIENTS[(i + 7) % 10], _EN_DOCTORS[(i + 3) % 6]
    relative = ("Margaret", "Tobias", "Imelda", "Fergus")[i % 4]
    nurse, nurse2 = ("Aoife", "Bronagh", "Ciaran", "Oksana")[i % 4], _EN_PATIENTS[(i + 4) % 10]
    lines = [
        "Ward 7 nursing handover - 14:00",
        f"Bed {i + 3}: {b.p(pt.full)} ({rng.randrange(60, 89)} y), "
        f"{b.c('post-op day 2 right hip hemiarthroplasty')}.",
        f"Obs stable: {b.c('BP 132/78')}, {b.c('HR 84')}, {b.c('SpO2 96% on room air')}, "
        f"{b.c('temperature 37.1 C')}.",
        f"Seen by {b.p(dr.full)} (ortho reg) this morning; {b.c('enoxaparin 40 mg')} continued.",
        f"Daughter {b.p(relative)} visited, asks to be called on {b.p(_en_mobile(rng))}.",
        f"{b.p(f'{pt.last.upper()} {pt.first[0]}')} - {b.c('falls risk')} - {b.c('Waterlow score 14')}",
        f"Handed over by {b.p(nurse)} to {b.p(nurse2.full)}.",
    ]
    return b.doc(f"en-nursing-{i:02d}", "en", "nursing", lines, pdf=False)


def _zh_nursing(i: int, rng: random.Random) -> CorpusDoc:
    b = Builder()
    pt = ("阚宏伟", "缑丽娟", "林思远", "胡雪梅")[i % 4]
    rel, dr, nurse = (
        _ZH_RELATIVES[(i + 1) % 4],
        _ZH_DOCTORS[(i + 5) % 7],
        ("王芳", "李静", "张敏")[i % 3],
    )
    y, m, d = _date(rng, 2023, 2025)
    lines = [
        f"护理记录 {b.p(f'{y}-{m:02d}-{d:02d}')}",
        f"{i + 5}床 {b.p(pt)}，{b.c('右髋关节置换术后第2天')}，{b.c('生命体征平稳')}，{b.c('体温36.8℃')}。",
        f"患者儿子{b.p(rel)}陪护，诉夜间睡眠差，已告知值班医生{b.p(dr)}。",
        f"{b.c('遵医嘱予低分子肝素钙注射液4100IU皮下注射')}。",
        f"责任护士：{b.p(nurse)}    记录时间：{b.p(f'{m}月{d}日')} 22:30",
    ]
    return b.doc(f"zh-nursing-{i:02d}", "zh", "nursing", lines, pdf=False)


#: Documents with no identifier at all: everything masked in them is a false positive.
_EN_CLINICAL_NOTE = (
    "Progress note - Cardiology",
    "Presenting complaint: exertional chest pain for 3 weeks, relieved by rest.",
    "History: Parkinson disease, Hashimoto thyroiditis, Barrett oesophagus, Graves disease in 2010.",
    "Examination: JVP not raised. Heart sounds I + II + 0. Murphy sign negative. Babinski down-going.",
    "Glasgow Coma Scale 15/15. Wells score 1. CHA2DS2-VASc 3, HAS-BLED 1. NYHA class II.",
    "ECG: sinus rhythm 72/min, QTc 438 ms, Q waves in leads II, III and aVF.",
    "Bloods: Troponin T 14 ng/L (<14), NT-proBNP 412 pg/mL, Hb 128 g/L, eGFR 64 mL/min/1.73m2.",
    "Lipids: LDL 3.4 mmol/L, HDL 1.1 mmol/L, triglycerides 1.9 mmol/L.",
    "Plan: CT coronary angiogram; start Bisoprolol 2.5 mg OD and Atorvastatin 80 mg ON.",
    "Continue Levothyroxine 75 micrograms, Madopar 62.5 mg TDS, Omeprazole 20 mg OD.",
    "Consider Holter monitor if palpitations recur. Valsalva manoeuvre taught.",
    "Cushing syndrome and Addison disease excluded; Down syndrome screening not indicated.",
    "Review in Rapid Access Chest Pain Clinic in 6 weeks with results.",
)
_ZH_CLINICAL_NOTE = (
    "日常病程记录",
    "查体：神清，精神可，双肺呼吸音粗，未闻及干湿啰音。",
    "心率88次/分，律齐，各瓣膜听诊区未闻及病理性杂音。",
    "腹软，无压痛反跳痛，墨菲征阴性，肝脾肋下未触及。",
    "神经系统查体阴性，巴宾斯基征阴性。",
    "谷丙转氨酶 65 U/L，谷草转氨酶 48 U/L，予保肝治疗，复查肝功能。",
    "继续华法林 2.5mg 每日一次抗凝，监测INR 2.0-3.0。",
    "血常规：白细胞 11.2×10^9/L，中性粒细胞百分比 82%，C反应蛋白 36 mg/L。",
    "诊断：帕金森病，桥本甲状腺炎，阿尔茨海默病待排。",
    "予头孢曲松钠 2g 静脉滴注 每日一次，雾化吸入布地奈德。",
    "患者今日精神好转，食欲改善，大小便正常。",
    "上级医师查房后指示：完善胸部CT及心脏彩超，必要时行冠脉造影。",
)


def clinical_note(language: str) -> CorpusDoc:
    b = Builder()
    for line in _EN_CLINICAL_NOTE if language == "en" else _ZH_CLINICAL_NOTE:
        b.c(line)
    lines = list(b.clinical)
    return b.doc(f"{language}-clinical-note", language, "progress", lines, pdf=language == "en")


# --- mixed ----------------------------------------------------------------------------------


def _mixed_lab(i: int, rng: random.Random) -> CorpusDoc:
    b = Builder()
    pt, dr = _ZH_PATIENTS[(i + 6) % 12], _EN_DOCTORS[(i + 1) % 6]
    lines = [
        f"{b.p('Riverside Medical Centre')} / {b.p('广州博济诊所')}",
        "LAB REPORT 检验报告",
        f"Name 姓名: {b.p(pt)}   MRN: {b.p(_digits(rng, 8))}   DOB: {b.p('1968-07-21')}",
        b.c("Glucose (fasting) 空腹血糖   6.1 mmol/L   3.9-6.1"),
        b.c("Total cholesterol 总胆固醇   5.8 mmol/L   <5.2"),
        f"Comment: {b.p(pt[0] + '先生')} to repeat lipids in 3 months; {b.c('atorvastatin 20 mg')} started.",
        f"Reported by: {b.p(f'{dr.title} {dr.full}')}   电话 {b.p(_zh_mobile(rng))}",
    ]
    return b.doc(f"mixed-lab-{i:02d}", "mixed", "lab", lines, pdf=i < 1)


def _mixed_letter(i: int, rng: random.Random) -> CorpusDoc:
    b = Builder()
    pt, dr = _EN_PATIENTS[(i + 2) % 10], _ZH_DOCTORS[(i + 6) % 7]
    lines = [
        f"{b.p('上海市第六人民医院')} 国际医疗部",
        f"Dear {b.p(f'{pt.title} {pt.last}')},",
        f"您的检查结果如下：{b.c('甲状腺功能正常')}，{b.c('TSH 2.1 mIU/L')}。",
        f"Please bring your passport ({b.p('E' + _digits(rng, 8))}) to the next visit on "
        f"{b.p(f'{rng.randrange(1, 28)} May 2025')}.",
        f"{b.p(dr + '医生')} 签名：{b.p(dr)}",
    ]
    return b.doc(f"mixed-letter-{i:02d}", "mixed", "referral", lines, pdf=False)


TEMPLATES = (
    (_en_lab, 5), (_en_discharge, 4), (_en_referral, 4), (_en_prescription, 3),
    (_zh_lab, 4), (_zh_discharge, 3), (_zh_referral, 3), (_zh_prescription, 3),
    (_en_nursing, 4), (_zh_nursing, 4), (_mixed_lab, 2), (_mixed_letter, 2),
)  # fmt: skip
