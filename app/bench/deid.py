"""`pulsemind bench deid`: how well the identifier recognizer does on the synthetic corpus.

    pulsemind bench deid

Builds `model.intake.deid_corpus`, runs `model.intake.phi.find_identifiers` on every document
and prints, overall and per language (en, zh, mixed):
- recall: planted identifiers fully masked / planted identifiers. A planted string counts
  as masked only if every non-space character of every place it is printed is masked;
- precision, per character: masked non-space characters that belong to a planted
  identifier / all masked non-space characters (a title masked with its name, "Dr." in
  "Dr. Okafor", counts against it unless the corpus planted it with the name);
- clinical strings kept: printed clinical strings with no masked character / all of them;
- then the documents rendered as real PDFs go through `model.intake.intake_bytes`: a planted
  string still in the text handed on is a leak, a clinical string missing from it is lost;
- and every miss, by document. Planted values are synthetic, so printing them is safe.
Exit status 0 when recall is 100%, precision at least PRECISION_GOAL, every clinical string
kept and no PDF leaked; 1 otherwise.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass, field

from loguru import logger

from model.intake.deid_corpus import CorpusDoc, build_corpus, can_render, render_pdf

#: Goals of issue item 4.
RECALL_GOAL = 1.0
PRECISION_GOAL = 0.9


@dataclass
class Score:
    """Counts for one document or a sum of them."""

    docs: int = 0
    planted: int = 0
    masked: int = 0
    masked_chars: int = 0
    true_chars: int = 0
    clinical: int = 0
    kept: int = 0
    seconds: float = 0.0
    misses: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    over: list[str] = field(default_factory=list)

    def add(self, other: Score) -> None:
        for name in ("docs", "planted", "masked", "masked_chars", "true_chars", "clinical",
                     "kept", "seconds"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.misses += other.misses
        self.lost += other.lost
        self.over += other.over

    @property
    def recall(self) -> float:
        return self.masked / self.planted if self.planted else 1.0

    @property
    def precision(self) -> float:
        return self.true_chars / self.masked_chars if self.masked_chars else 1.0


def _occurrences(text: str, needle: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(re.escape(needle), text)]


def score_text(doc: CorpusDoc) -> Score:
    """Recall, precision and clinical survival of `find_identifiers` on `doc.text`."""
    from model.intake.phi import find_identifiers

    text = doc.text
    started = time.perf_counter()
    found = find_identifiers(text)
    score = Score(docs=1, seconds=time.perf_counter() - started)
    masked = bytearray(len(text))
    for ident in found:
        masked[ident.start : ident.end] = b"\x01" * (ident.end - ident.start)
    planted = bytearray(len(text))
    for value in doc.planted:
        spans = _occurrences(text, value)
        score.planted += 1
        if all(masked[i] or text[i].isspace() for s, e in spans for i in range(s, e)):
            score.masked += 1
        else:
            score.misses.append(f"{doc.name}: {value!r}")
        for s, e in spans:
            planted[s:e] = b"\x01" * (e - s)
    for i, c in enumerate(text):
        if masked[i] and not c.isspace():
            score.masked_chars += 1
            score.true_chars += planted[i]
    for ident in found:  # what was masked but planted nowhere: the precision losses
        if not any(planted[ident.start : ident.end]):
            score.over.append(f"{doc.name}: {ident.kind} {ident.value!r}")
    for value in doc.clinical:
        score.clinical += 1
        if any(any(masked[s:e]) for s, e in _occurrences(text, value)):
            score.lost.append(f"{doc.name}: {value!r}")
        else:
            score.kept += 1
    return score


def _squash(s: str) -> str:
    return " ".join(s.split())


def score_pdf(doc: CorpusDoc) -> tuple[list[str], list[str]]:
    """(planted strings still in the text intake hands on, clinical strings missing from it)
    for `doc` rendered as a PDF."""
    from model.intake import DeidentificationFailed, intake_bytes

    try:
        result = intake_bytes(render_pdf(doc), f"{doc.name}.pdf")
    except DeidentificationFailed as exc:
        return [f"{doc.name}: refused by the leak check ({exc.detail})"], []
    text = _squash(result.text or "")
    leaks = [f"{doc.name}: {v!r}" for v in doc.planted if _squash(v) in text]
    lost = [f"{doc.name}: {v!r}" for v in doc.clinical if _squash(v) not in text]
    return leaks, lost


def main(argv: list[str] | None = None) -> int:
    """Print the report; 0 when every goal is met, else 1."""
    from model.intake.phi import load

    started = time.perf_counter()
    load()
    load_s = time.perf_counter() - started
    corpus = build_corpus()
    by_lang: dict[str, Score] = defaultdict(Score)
    total = Score()
    for doc in corpus:
        score = score_text(doc)
        by_lang[doc.language].add(score)
        total.add(score)
    print(f"de-identification bench: {len(corpus)} documents, recognizer loaded in {load_s:.1f} s")
    print("precision is per character: masked non-space chars inside a planted identifier / "
          "all masked non-space chars")  # fmt: skip
    print(
        f"{'':8} {'docs':>4} {'recall':>16} {'precision':>10} {'clinical kept':>15} {'ms/doc':>7}"
    )
    for name, s in [*sorted(by_lang.items()), ("all", total)]:
        print(
            f"{name:8} {s.docs:4d} {s.masked:4d}/{s.planted:<4d} {s.recall:6.1%} "
            f"{s.precision:10.3f} {s.kept:6d}/{s.clinical:<4d} {s.kept / max(s.clinical, 1):4.0%} "
            f"{1000 * s.seconds / max(s.docs, 1):7.1f}"
        )
    pdf_docs = [d for d in corpus if d.pdf and can_render(d)]
    skipped = [d.name for d in corpus if d.pdf and not can_render(d)]
    pdf_leaks: list[str] = []
    pdf_lost: list[str] = []
    logger.disable("model.intake")  # one INFO line per PDF would bury the report
    try:
        for doc in pdf_docs:
            leaks, lost = score_pdf(doc)
            pdf_leaks += leaks
            pdf_lost += lost
    finally:
        logger.enable("model.intake")
    n_planted = sum(len(d.planted) for d in pdf_docs)
    print(f"PDF path (intake_bytes): {len(pdf_docs)} documents, {n_planted} planted: "
          f"{len(pdf_leaks)} leaked, {len(pdf_lost)} clinical strings lost"
          + (f" (skipped, no CJK font: {', '.join(skipped)})" if skipped else ""))  # fmt: skip
    for title, items in (("missed", total.misses), ("clinical masked", total.lost),
                         ("PDF leaked", pdf_leaks), ("PDF clinical lost", pdf_lost),
                         ("masked but not planted", total.over)):  # fmt: skip
        print(f"{title}: {len(items) or 'none'}")
        for item in items:
            print(f"  {item}")
    ok = (
        total.recall >= RECALL_GOAL
        and total.precision >= PRECISION_GOAL
        and not total.lost
        and not pdf_leaks
        and not pdf_lost
    )
    print("goals (recall 100%, precision >= 0.9, clinical kept, no PDF leak):",
          "met" if ok else "NOT met")  # fmt: skip
    return 0 if ok else 1
