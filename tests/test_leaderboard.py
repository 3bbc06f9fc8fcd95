"""The leaderboard: Bradley-Terry ratings recovered from simulated votes with known strengths,
ties as half, style control demoting a variant that wins only by length, agreement, quality
flags, and the vote rows read from a real SQLite file.

Run: OMP_NUM_THREADS=1 python -m pytest tests/test_leaderboard.py -q
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from PIL import Image

from storage import (
    PermissionDenied,
    create_comparison,
    create_user,
    ensure_model_variant,
    record_response,
    record_vote,
)
from storage.leaderboard_data import VoteRow, leaderboard_rows, markdown_elements, names_a_model
from storage.votes import DIMENSIONS
from training.leaderboard import (
    ELO_SCALE,
    LeaderboardConfig,
    agreement,
    build_leaderboard,
    format_table,
    quality_flags,
    rate,
    win_rates,
)

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
#: True strengths on the Elo-like scale (mean 1000), strongest first.
TRUE = {"alpha": 1150.0, "beta": 1050.0, "gamma": 950.0, "delta": 850.0}
#: Variant ids by name, handed out as names first appear (the same name, the same id).
IDS: dict[str, int] = {}


def row(i: int, a: str, b: str, outcome: str = "a", *, voter: int = 1, turn: int | None = None, choices: dict[str, str] | None = None,
        length: tuple[int, int] = (500, 500), markdown: tuple[int, int] = (0, 0),
        named: tuple[bool, bool] = (False, False), ms: int | None = 60_000,
        at: datetime | None = None) -> VoteRow:  # fmt: skip
    a, b = str(a), str(b)
    return VoteRow(
        vote_id=i, turn_id=i if turn is None else turn, voter_id=voter,
        variant_a_id=IDS.setdefault(a, len(IDS) + 1), variant_a=a,
        variant_b_id=IDS.setdefault(b, len(IDS) + 1), variant_b=b,
        choices=choices or {d: outcome if outcome in ("a", "b", "tie") else "tie" for d in DIMENSIONS},
        overall=outcome, safety_flag_a=False, safety_flag_b=False,
        length_a=length[0], length_b=length[1], markdown_a=markdown[0], markdown_b=markdown[1],
        names_model_a=named[0], names_model_b=named[1], time_to_vote_ms=ms,
        created_at=at or T0 + timedelta(seconds=i),
    )  # fmt: skip


def simulate(strengths: dict[str, float], n: int, seed: int) -> list[VoteRow]:
    """`n` votes between random pairs on random sides, A winning with BT probability."""
    rng = np.random.default_rng(seed)
    names = list(strengths)
    rows = []
    for i in range(n):
        a, b = rng.choice(names, 2, replace=False)
        p = 1 / (1 + math.exp(-(strengths[a] - strengths[b]) / ELO_SCALE))
        rows.append(row(i, a, b, "a" if rng.random() < p else "b"))
    return rows


def test_recovers_known_strengths_with_covering_intervals():
    rows = simulate(TRUE, 2000, seed=7)
    table = rate(rows, "overall", LeaderboardConfig(bootstrap=200, seed=1))
    assert table.order() == list(TRUE)
    for r in table.ratings:
        assert r.lower < r.rating < r.upper
        assert r.lower <= TRUE[r.variant] <= r.upper, (r, TRUE[r.variant])
        assert abs(r.rating - TRUE[r.variant]) < 40
    assert sum(r.rating for r in table.ratings) / 4 == pytest.approx(1000)
    # Same votes, same seed: same intervals.
    again = rate(rows, "overall", LeaderboardConfig(bootstrap=200, seed=1))
    assert [(r.lower, r.upper) for r in again.ratings] == [
        (r.lower, r.upper) for r in table.ratings
    ]


def test_tie_counts_half_a_win_each_way_and_both_bad_is_a_tie():
    config = LeaderboardConfig(bootstrap=0)
    # x vs y: 3 wins, 1 loss, 2 ties == 4 wins, 2 losses.
    with_ties = [row(i, "x", "y", o) for i, o in enumerate(["a", "a", "a", "b", "tie", "tie"])]
    halves = [row(i, "x", "y", o) for i, o in enumerate(["a", "a", "a", "a", "b", "b"])]
    both_bad = [row(i, "x", "y", o) for i, o in enumerate(["a", "a", "a", "b", "both_bad", "tie"])]
    tied, half, bad = (rate(r, "overall", config) for r in (with_ties, halves, both_bad))
    assert [r.rating for r in tied.ratings] == pytest.approx(
        [r.rating for r in half.ratings], abs=1e-3
    )
    assert [r.rating for r in bad.ratings] == pytest.approx(
        [r.rating for r in half.ratings], abs=1e-3
    )
    assert tied.order() == ["x", "y"]
    # The ML fit of 4:2 is log(2) apart (the small prior shrinks it a little).
    gap = tied.ratings[0].rating - tied.ratings[1].rating
    assert gap == pytest.approx(ELO_SCALE * math.log(2), rel=0.02)
    rates = win_rates(with_ties, "overall")
    assert rates.rates[rates.variants.index("x")][rates.variants.index("y")] == pytest.approx(4 / 6)
    # Only ties: equal ratings.
    only_ties = rate([row(i, "x", "y", "tie") for i in range(10)], "accuracy", config)
    assert only_ties.ratings[0].rating == pytest.approx(only_ties.ratings[1].rating, abs=1e-6)


def test_unrated_dimensions_are_no_evidence():
    """Clinician picks may leave dimensions unrated (None): a dimension's fit uses only the
    votes that rated it; overall uses them all."""
    config = LeaderboardConfig(bootstrap=0)
    rated = [row(i, "x", "y", "a") for i in range(4)] + [row(4, "x", "y", "b")]
    unrated = [row(10 + i, "x", "y", "b", choices=dict.fromkeys(DIMENSIONS)) for i in range(6)]
    accuracy = rate(rated + unrated, "accuracy", config)
    assert [r.rating for r in accuracy.ratings] == pytest.approx(
        [r.rating for r in rate(rated, "accuracy", config).ratings])
    assert accuracy.order() == ["x", "y"]
    assert rate(rated + unrated, "overall", config).order() == ["y", "x"]


def test_style_control_demotes_a_variant_that_wins_only_by_length():
    """'long' is truly the worst but writes 4x longer; voters favour length (log-odds 1.2 per
    unit of log length ratio). Raw it comes first; controlled for length it comes last."""
    quality = {"good": 0.3, "mid": 0.0, "long": -0.3}
    base_length = {"good": 400, "mid": 400, "long": 1600}
    rng = np.random.default_rng(3)
    names = list(quality)
    rows = []
    for i in range(3000):
        a, b = rng.choice(names, 2, replace=False)
        la, lb = (int(base_length[v] * rng.lognormal(0, 0.4)) for v in (a, b))
        z = quality[a] - quality[b] + 1.2 * math.log(la / lb)
        rows.append(row(i, a, b, "a" if rng.random() < 1 / (1 + math.exp(-z)) else "b",
                        length=(la, lb)))  # fmt: skip
    config = LeaderboardConfig(bootstrap=50)
    raw = rate(rows, "overall", config)
    styled = rate(rows, "overall", config, style_control=True)
    assert raw.order()[0] == "long"
    assert styled.order() == ["good", "mid", "long"]
    assert styled.coefficients["length_log_ratio"] == pytest.approx(1.2, abs=0.25)
    long_ = next(r for r in styled.ratings if r.variant == "long")
    assert long_.upper < next(r for r in styled.ratings if r.variant == "good").lower


def test_agreement_on_double_annotated_turns():
    dims = dict.fromkeys(DIMENSIONS, "a")
    rows = [
        # turn 1: two voters agree on everything
        row(1, "x", "y", "a", voter=1, turn=1, choices=dims),
        row(2, "x", "y", "a", voter=2, turn=1, choices=dims),
        # turn 2: they disagree on overall and accuracy
        row(3, "x", "y", "a", voter=1, turn=2, choices=dims),
        row(4, "x", "y", "both_bad", voter=2, turn=2, choices={**dims, "accuracy": "tie"}),
        # turn 3: one voter only, not counted
        row(5, "x", "y", "b", voter=1, turn=3),
    ]
    result = {a.field: a for a in agreement(rows)}
    assert result["overall"].turns == 2 and result["overall"].pairs == 2
    assert result["overall"].agreement == pytest.approx(0.5)
    assert result["accuracy"].agreement == pytest.approx(0.5)
    assert result["usefulness"].agreement == pytest.approx(1.0)
    # three voters on one turn: three pairs, one agreeing
    three = [row(10 + v, "x", "y", o, voter=v, turn=9) for v, o in [(1, "a"), (2, "a"), (3, "b")]]
    assert {a.field: a for a in agreement(three)}["overall"].pairs == 3
    assert {a.field: a for a in agreement(three)}["overall"].agreement == pytest.approx(1 / 3)


def test_quality_flags():
    config = LeaderboardConfig(min_vote_seconds=3, skim_chars_per_second=100, daily_cap=3)
    rows = [
        # voter 1: one vote a day, so never past the cap
        row(1, "x", "y", ms=1_000, at=T0 - timedelta(days=1)),  # under the 3 s minimum
        # 6000 characters need 60 s
        row(2, "x", "y", length=(3000, 3000), ms=30_000, at=T0 - timedelta(days=2)),
        row(3, "x", "y", length=(3000, 3000), ms=90_000, at=T0 - timedelta(days=3)),  # fine
        row(4, "x", "y", named=(False, True), at=T0 - timedelta(days=4)),  # answer b names a model
        row(5, "x", "y", ms=None, at=T0 - timedelta(days=5)),  # no timing: not flagged
        # voter 2: five votes in one day, cap 3 -> the last two; one the next day is fine
        *(row(10 + k, "x", "y", voter=2, at=T0 + timedelta(minutes=k)) for k in range(5)),
        row(20, "x", "y", voter=2, at=T0 + timedelta(days=1)),
    ]
    flags = {(f.vote_id, f.reason) for f in quality_flags(rows, config)}
    assert flags == {(1, "too_fast"), (2, "too_fast"), (4, "names_model"),
                     (13, "daily_cap"), (14, "daily_cap")}  # fmt: skip
    board = build_leaderboard(
        rows, LeaderboardConfig(bootstrap=0, daily_cap=3, skim_chars_per_second=100)
    )
    stats = {s.voter_id: s for s in board.annotators.rows}
    assert (stats[1].votes, stats[1].flagged, stats[2].votes, stats[2].flagged) == (5, 3, 6, 2)
    dropped = build_leaderboard(rows, LeaderboardConfig(bootstrap=0, daily_cap=3, drop_flagged=True,
                                                        skim_chars_per_second=100))  # fmt: skip
    assert dropped.raw["overall"].votes == len(rows) - 5


def test_markdown_and_model_names():
    assert markdown_elements("# Plan\n- rest\n- **fluids**\n1. recheck\n| a | b |\nplain") == 6
    assert markdown_elements("no markdown here, 2 * 3 = 6") == 0
    assert names_a_model("As PulseMind-7B I suggest rest.", ["pulsemind-7b"])
    assert names_a_model("I am Qwen, a model.", [])
    assert not names_a_model("Take one tablet daily.", ["base", "lora"])
    assert not names_a_model("the database shows", ["base"])  # a whole word only


def test_tables_csv_and_plot(tmp_path):
    rows = simulate(TRUE, 400, seed=2)
    board = build_leaderboard(rows, LeaderboardConfig(bootstrap=20), fields=("overall", "accuracy"))
    paths = board.to_csv(tmp_path / "csv")
    names = sorted(p.name for p in paths)
    assert "ratings_overall.csv" in names and "ratings_overall_style.csv" in names
    assert "win_rates_accuracy.csv" in names and "quality_flags.csv" in names
    lines = (tmp_path / "csv" / "ratings_overall.csv").read_text().splitlines()
    assert lines[0].startswith("rank,variant_id,variant,rating") and len(lines) == 5
    assert lines[1].split(",")[2] == "alpha"
    png = board.plot(tmp_path / "board.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width == 900
        assert len(set(im.getdata())) > 3  # something was drawn besides white and text
    text = format_table(board, "overall")
    assert "alpha" in text and "style-controlled" in text


TEXTS = {"a": "# Advice\n- rest\n- **fluids**", "b": "I am the lora model; drink water."}


def voted_database(db):
    """Two voted ad hoc comparisons, base (A) vs lora (B), by an annotator; and an admin."""
    admin = create_user(db, "root", "correct horse battery", "admin")
    ann = create_user(db, "ann", "correct horse battery", "annotator")
    base = ensure_model_variant(db, "base", "http://127.0.0.1:1/v1", "tiny")
    lora = ensure_model_variant(db, "lora", "http://127.0.0.1:1/v1", "a1", adapter_path="/a1",
                                parent="base")  # fmt: skip
    for overall in ("a", "both_bad"):
        turn = create_comparison(db, ann.id, "ad_hoc", variant_a_id=base.id, variant_b_id=lora.id,
                                 prompt_text="Cough for a week.")  # fmt: skip
        for side in "ab":
            record_response(db, turn.id, ann.id, side, TEXTS[side], sampling_params={},
                            finish_reason="stop")  # fmt: skip
        record_vote(db, turn.id, ann.id, proactiveness="a", accuracy="tie", usefulness="b",
                    language_quality="a", overall=overall, safety_flag_b=True,
                    idempotency_key=str(uuid.uuid4()))  # fmt: skip
    return admin, ann, base, lora


def test_rows_from_a_real_database(db):
    admin, ann, base, lora = voted_database(db)
    doc = create_user(db, "doc", "correct horse battery", "clinician")
    with pytest.raises(PermissionDenied):
        leaderboard_rows(db, user_id=doc.id)
    # an annotator reads every vote, the voters pseudonymous (no user id)
    seen = leaderboard_rows(db, user_id=ann.id)
    assert [r.voter_id for r in seen] == [1, 1] and ann.id != 1
    rows = leaderboard_rows(db, user_id=admin.id)
    assert [dataclasses.replace(r, voter_id=1) for r in rows] == seen
    assert rows == leaderboard_rows(db)
    assert len(rows) == 2
    first = rows[0]
    assert (first.voter_id, first.variant_a, first.variant_b) == (ann.id, "base", "lora")
    assert (first.variant_a_id, first.variant_b_id) == (base.id, lora.id)
    assert first.choices == {"proactiveness": "a", "accuracy": "tie", "usefulness": "b",
                             "language_quality": "a"}  # fmt: skip
    assert [r.overall for r in rows] == ["a", "both_bad"]
    assert (first.safety_flag_a, first.safety_flag_b) == (False, True)
    assert (first.length_a, first.length_b) == (len(TEXTS["a"]), len(TEXTS["b"]))
    assert (first.markdown_a, first.markdown_b) == (4, 0)
    assert (first.names_model_a, first.names_model_b) == (False, True)
    assert first.time_to_vote_ms is not None and first.time_to_vote_ms >= 0
    board = build_leaderboard(rows, LeaderboardConfig(bootstrap=10))
    assert board.raw["overall"].order() == ["base", "lora"]
    assert {f.reason for f in board.flags.rows} >= {"names_model", "too_fast"}


def test_cli_prints_and_writes(db, tmp_path, capsys):
    from app.cli import main

    voted_database(db)
    url = f"sqlite:///{db.url.database}"
    out = tmp_path / "out"
    code = main(["leaderboard", "--database-url", url, "--as", "root", "--bootstrap", "5",
                 "--dimension", "overall", "accuracy", "--csv", str(out),
                 "--plot", str(out / "board.png")])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "overall (2 votes" in printed and "accuracy (2 votes" in printed and "base" in printed
    assert (out / "ratings_overall.csv").exists() and (out / "board.png").stat().st_size > 0
    assert not (out / "ratings_usefulness.csv").exists()
    with pytest.raises(SystemExit, match="leaderboard"):
        main(["leaderboard", "--database-url", url, "--as", "ann"])
