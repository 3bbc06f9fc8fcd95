"""The `pulsemind` command: one entry point for the app and its tools.

    pulsemind app [--model-url URL --model NAME] [--database-url URL] [--host H --port P]
    pulsemind serve MODEL_DIR [--port 8000] [--lora NAME=DIR ...]   # start vLLM, wait healthy
    pulsemind demo-model [DIR]                                      # build the tiny demo model
    pulsemind intake FILE... [--json]                               # what the model would receive
    pulsemind bench intake [FILE...]                                # intake speed and bytes saved
    pulsemind bench consult [--concurrency 1 16]                    # app vs direct-to-vLLM ratios
    pulsemind bench deid                                            # identifier recall/precision
    pulsemind bench reward [--url URL --model NAME]                 # CRPO judging: concurrent vs serial
    pulsemind judge --a FILE|TEXT --b FILE|TEXT [--context ..] [--reference ..] --url URL
                    --model NAME [--both-orders] [--lang zh-CN]     # four-dimension verdict
    pulsemind db upgrade                                            # apply migrations
    pulsemind user add NAME --role ROLE                             # create a user (asks password)
    pulsemind variant add NAME --endpoint URL --model SERVED [--adapter DIR] [--parent NAME]
                          [--temperature T --top-p P --max-tokens N --seed S]
    pulsemind variant list | activate NAME | deactivate NAME        # model variants in Compare
    pulsemind cases load FILE [--name SET] [--format jsonl|cmtmedqa|meddiagnose] [--images DIR]
    pulsemind export --kind sft|pairs|crpo OUT [--include-flagged] [--since ISO] [--policy V]
    pulsemind leaderboard [--dimension F ...] [--csv DIR] [--plot FILE] [--as ADMIN]  # BT ratings
    pulsemind sft --data EXPORT --base VARIANT|DIR --out DIR [--steps N] [--resume]
                  [--deepspeed training/zero3.json]                 # LoRA SFT (training/sft.py)
    pulsemind crpo --data EXPORT --policy VARIANT|DIR --judge-url URL --judge-model NAME --out DIR
    pulsemind eval run --cases FILE --model VARIANT --opponent VARIANT|reference --judge URL
                       --judge-model NAME [--limit N | --sample N --seed S] [--resume RUN]
    pulsemind eval agreement [--judge URL --judge-model NAME]       # judge vs clinicians' votes

Each subcommand imports what it needs when it runs, so `pulsemind --help` is instant.
"""

from __future__ import annotations

import argparse
import sys
import time


def _cmd_serve(args: argparse.Namespace) -> int:
    from model.serve import ServeConfig, VLLMServer

    loras = dict(item.split("=", 1) for item in args.lora)
    cfg = ServeConfig(
        model=args.model,
        served_model_name=args.served_model_name,
        host=args.host,
        port=args.port,
        lora_modules=loras,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        max_loras=args.max_loras,
        **({"python": args.python} if args.python else {}),
    )
    server = VLLMServer(cfg)
    t0 = time.monotonic()
    try:
        server.start()
        print(
            f"vLLM ready at {server.base_url} after {time.monotonic() - t0:.0f}s "
            f"(log: {server.log_path}); Ctrl-C stops it.",
            flush=True,
        )
        while server.proc is not None and server.proc.poll() is None:
            time.sleep(1)
        print(
            f"vLLM exited with code {server.proc.returncode}:\n{server.log_tail()}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def _cmd_demo_model(args: argparse.Namespace) -> int:
    from model.demo_model import demo_model_main

    return demo_model_main(args.dir)


def _cmd_intake(args: argparse.Namespace) -> int:
    from model.intake.cli import intake_main

    return intake_main(args.files, as_json=args.json)


def _cmd_bench(args: argparse.Namespace) -> int:
    """`pulsemind bench WHAT [options]`: each benchmark is `app.bench.WHAT.main(argv)`."""
    import importlib

    return importlib.import_module(f"app.bench.{args.what}").main(args.rest)


def _cmd_app(args: argparse.Namespace) -> int:
    from app.config import AppConfig
    from app.server import serve

    try:
        config = AppConfig.from_args(args)
    except ValueError as exc:
        raise SystemExit(f"pulsemind app: {exc}") from exc
    serve(config)
    return 0


def _database(args: argparse.Namespace):
    from storage import Database
    from storage.db import resolve_database_url

    db = Database(resolve_database_url(args.database_url))
    db.upgrade()
    return db


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    db = _database(args)
    print(f"database at revision {db.current_revision()}")
    return 0


def _cmd_user_add(args: argparse.Namespace) -> int:
    import getpass
    import os

    from storage import StorageError, create_user

    password = os.environ.get("PULSEMIND_NEW_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass(f"Password for {args.name}: ")
            if getpass.getpass("Again: ") != password:
                raise SystemExit("The passwords differ; nothing was created.")
    try:
        user = create_user(_database(args), args.name, password, args.role)
    except StorageError as exc:
        raise SystemExit(f"pulsemind user add: {exc.user_message}") from exc
    print(f"created {user.role.value} {user.username!r} (id {user.id})")
    return 0


def _fail(command: str, exc: Exception) -> SystemExit:
    """The error's message for people (`user_message`), as the command's exit message."""
    return SystemExit(f"pulsemind {command}: {getattr(exc, 'user_message', None) or exc}")


def _cmd_variant(args: argparse.Namespace) -> int:
    from app.variants import VariantSpec, add_variant, set_active
    from model.errors import PulseMindError
    from storage import StorageError, list_variants

    db = _database(args)
    try:
        if args.action == "list":
            names = {v.id: v.name for v in list_variants(db)}
            for v in list_variants(db):
                parent = f" parent={names.get(v.parent_id)}" if v.parent_id else ""
                adapter = f" adapter={v.adapter_path}" if v.adapter_path else ""
                print(f"{v.name}\t{'active' if v.active else 'inactive'}\t{v.endpoint} "
                      f"model={v.served_model_name}{adapter}{parent} "
                      f"sampling={v.sampling_defaults or {}}")  # fmt: skip
            return 0
        if args.action == "add":
            sampling = {k: getattr(args, k) for k in ("temperature", "top_p", "max_tokens", "seed")
                        if getattr(args, k) is not None}  # fmt: skip
            v = add_variant(db, VariantSpec(args.name, args.endpoint, args.model, args.adapter,
                                            args.parent, sampling, args.notes))  # fmt: skip
            print(f"added variant {v.name!r} (id {v.id})"
                  + (f", adapter loaded as {v.served_model_name!r}" if v.adapter_path else ""))
            return 0
        v = set_active(db, args.name, args.action == "activate")
        print(f"variant {v.name!r} is {'active' if v.active else 'inactive'}")
        return 0
    except (StorageError, PulseMindError) as exc:
        raise _fail(f"variant {args.action}", exc) from exc


def _cmd_cases(args: argparse.Namespace) -> int:
    from pathlib import Path

    from app.cases import case_summary, read_case_file
    from model.errors import PulseMindError
    from storage import StorageError, import_case_set

    try:
        case_format, cases, sha256 = read_case_file(args.file, format=args.format, progress=True,
                                                    images=args.images)  # fmt: skip
        record = import_case_set(_database(args), args.name or Path(args.file).stem, case_format,
                                 sha256, cases)  # fmt: skip
    except (StorageError, PulseMindError) as exc:
        raise _fail("cases load", exc) from exc
    counts = case_summary(cases)
    print(f"loaded case set {record.name!r} (id {record.id}, {case_format.value}): "
          f"{counts['cases']} cases, {counts['turns']} turns, {counts['files']} files")
    return 0


def _version() -> str:
    """The version and the checkout this command runs from (each checkout runs its own code)."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    with open(root / "pyproject.toml", "rb") as f:
        v = tomllib.load(f)["project"]["version"]
    return f"pulsemind {v} ({root})"


class _Version(argparse.Action):
    """Prints `_version()` unwrapped (argparse's own action wraps it at the terminal width)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version())
        parser.exit()


#: `pulsemind bench WHAT`: a module app/bench/WHAT.py with `main(argv) -> int`.
BENCHMARKS = ["intake", "consult", "deid", "compare", "reward", "sft", "eval"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pulsemind", description=__doc__.split("\n")[0])
    p.add_argument("--version", action=_Version, nargs=0, help="version and checkout; exit")
    sub = p.add_subparsers(dest="command", required=True)

    from app.config import AppConfig

    a = sub.add_parser("app", help="start the web app (default: embedded demo model)")
    AppConfig.add_arguments(a)
    a.set_defaults(func=_cmd_app)

    db = sub.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"])
    db.add_argument("--database-url", default=None)
    db.set_defaults(func=_cmd_db_upgrade)

    u = sub.add_parser("user", help="manage users")
    u.add_argument("action", choices=["add"])
    u.add_argument("name")
    u.add_argument("--role", required=True, choices=["clinician", "annotator", "admin"])
    u.add_argument("--database-url", default=None)
    u.set_defaults(func=_cmd_user_add)

    s = sub.add_parser("serve", help="start a vLLM server with PulseMind's flags")
    s.add_argument("model", help="model directory")
    s.add_argument("--served-model-name", default=None)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a LoRA adapter to load at start (repeatable)",
    )
    s.add_argument("--dtype", default="auto", help="'float32' on CPU, 'auto' on GPU")
    s.add_argument("--max-model-len", type=int, default=None)
    s.add_argument("--max-loras", type=int, default=6,
                   help="LoRA adapters resident at once (a CRPO policy + 5 counterparts: 6)")  # fmt: skip
    s.add_argument(
        "--python",
        default=None,
        help="interpreter of vLLM's environment (default: $PULSEMIND_VLLM_PYTHON)",
    )
    s.set_defaults(func=_cmd_serve)

    v = sub.add_parser("variant", help="model variants: add, list, activate, deactivate")
    vs = v.add_subparsers(dest="action", required=True)
    va = vs.add_parser("add", help="register a variant (an adapter is loaded into its server)")
    va.add_argument("name")
    va.add_argument("--endpoint", required=True, help="http://host:8000/v1, or 'embedded'")
    va.add_argument("--model", required=True, help="served model name (an adapter's LoRA name)")
    va.add_argument("--adapter", default=None, help="LoRA adapter directory, loaded at runtime")
    va.add_argument("--parent", default=None, help="the variant this one derives from")
    va.add_argument("--temperature", type=float, default=None)
    va.add_argument("--top-p", type=float, default=None)
    va.add_argument("--max-tokens", type=int, default=None)
    va.add_argument("--seed", type=int, default=None)
    va.add_argument("--notes", default=None)
    vs.add_parser("list", help="every variant")
    for action in ("activate", "deactivate"):
        vs.add_parser(action, help=f"{action} a variant").add_argument("name")
    for parser in vs.choices.values():
        parser.add_argument("--database-url", default=None)
    v.set_defaults(func=_cmd_variant)

    c = sub.add_parser("cases", help="import case sets (PulseMind JSONL or CMtMedQA JSON)")
    cs = c.add_subparsers(dest="action", required=True)
    cl = cs.add_parser("load", help="load a case file, whole or nothing")
    cl.add_argument("file")
    cl.add_argument("--name", default=None, help="case set name (default: the file's stem)")
    cl.add_argument("--format", choices=["jsonl", "cmtmedqa", "meddiagnose"], default=None,
                    help="default: told from the content")  # fmt: skip
    cl.add_argument("--images", default=None,
                    help="MedDiagnose: the images folder (default: images/ beside the file)")  # fmt: skip
    cl.add_argument("--database-url", default=None)
    c.set_defaults(func=_cmd_cases)

    d = sub.add_parser("demo-model", help="build the tiny demo model")
    d.add_argument("dir", nargs="?", default=None)
    d.set_defaults(func=_cmd_demo_model)

    i = sub.add_parser("intake", help="show what the model would receive for each file")
    i.add_argument("files", nargs="+")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_cmd_intake)

    b = sub.add_parser("bench", help="benchmarks that print ratios")
    b.add_argument("what", choices=BENCHMARKS)
    b.add_argument(
        "rest",
        nargs=argparse.REMAINDER,
        help="the benchmark's own options (pulsemind bench WHAT --help)",
    )
    b.set_defaults(func=_cmd_bench)
    _add_export_parser(sub)
    _add_leaderboard_parser(sub)
    _add_judge_parser(sub)
    _add_eval_parser(sub)
    for kind in ("sft", "crpo"):
        _add_training_parser(sub, kind)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def _cmd_export(args: argparse.Namespace) -> int:
    """`pulsemind export --kind sft|pairs|crpo OUT`: a Hugging Face dataset (training/export.py)."""
    from datetime import datetime
    from pathlib import Path

    from storage import StorageError
    from training.export import ExportConfig, NothingToExport, export_dataset

    try:
        since = datetime.fromisoformat(args.since) if args.since else None
    except ValueError as exc:
        raise SystemExit(f"pulsemind export: --since {args.since!r} is not an ISO time "
                         "(e.g. 2026-01-01T00:00:00+00:00).") from exc  # fmt: skip
    try:
        config = ExportConfig(kind=args.kind, out=Path(args.out), include_flagged=args.include_flagged,
                              since=since, policy=args.policy, language=args.language,
                              progress=True)  # fmt: skip
        rows = export_dataset(_database(args), config)
    except NothingToExport as exc:
        print(f"pulsemind export: {exc.user_message}", file=sys.stderr)
        return 1
    except StorageError as exc:
        raise _fail("export", exc) from exc
    print(f"exported {rows} {args.kind} rows to {args.out}")
    return 0


def _add_export_parser(sub) -> None:
    e = sub.add_parser("export", help="training data as a Hugging Face dataset (save_to_disk)")
    e.add_argument("--kind", choices=["sft", "pairs", "crpo"], required=True)
    e.add_argument("out", help="dataset folder to create (must not exist)")
    e.add_argument("--include-flagged", action="store_true",
                   help="keep votes whose chosen answer carries a safety flag")  # fmt: skip
    e.add_argument("--since", default=None, help="only data created at or after this ISO time")
    e.add_argument("--policy", default=None, help="crpo: leave out this variant's own answers")
    e.add_argument("--language", default="en", choices=["en", "zh-CN"],
                   help="system prompt of consultation and case rows")  # fmt: skip
    e.add_argument("--database-url", default=None)
    e.set_defaults(func=_cmd_export)


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    """`pulsemind leaderboard`: Bradley-Terry ratings from the votes (training/leaderboard.py)."""
    from storage import StorageError, UserRole, get_user_by_name
    from storage.leaderboard_data import leaderboard_rows
    from training.leaderboard import (
        LeaderboardConfig,
        LeaderboardError,
        build_leaderboard,
        format_table,
    )

    db = _database(args)
    try:
        user_id = None
        if args.as_user is not None:
            user = get_user_by_name(db, args.as_user)
            if user is None:
                raise SystemExit(f"pulsemind leaderboard: no user {args.as_user!r}")
            if user.role is not UserRole.ADMIN:  # it prints votes per annotator and agreement
                raise SystemExit(f"pulsemind leaderboard: {args.as_user!r} is not an admin; "
                                 "annotators see the leaderboard in the app")  # fmt: skip
            user_id = user.id
        rows = leaderboard_rows(db, user_id=user_id)
        config = LeaderboardConfig(bootstrap=args.bootstrap, seed=args.seed,
                                   drop_flagged=args.drop_flagged)  # fmt: skip
        board = build_leaderboard(rows, config, fields=args.dimension)
    except LeaderboardError as exc:
        print(f"pulsemind leaderboard: {exc}", file=sys.stderr)
        return 1
    except StorageError as exc:
        raise _fail("leaderboard", exc) from exc
    for name in args.dimension:
        print(format_table(board, name), end="\n\n")
    print(f"{len(board.flags.rows)} quality flags; agreement (double-annotated turns): "
          + ", ".join(f"{a.field}={'-' if a.agreement is None else f'{a.agreement:.0%}'}"
                      for a in board.agreement.rows))  # fmt: skip
    if args.csv:
        print(f"wrote {len(board.to_csv(args.csv))} CSV files to {args.csv}")
    if args.plot:
        print(f"wrote {board.plot(args.plot)}")
    return 0


def _add_leaderboard_parser(sub) -> None:
    # storage.votes.DIMENSIONS and "overall", spelled out so `--help` imports nothing heavy.
    fields = ["proactiveness", "accuracy", "usefulness", "language_quality", "overall"]
    lb = sub.add_parser("leaderboard", help="admins: ratings of model variants from the votes")
    lb.add_argument("--dimension", nargs="+", choices=fields, default=fields,
                    help="fields to rate (default: all four dimensions and overall)")  # fmt: skip
    lb.add_argument("--csv", default=None, help="write every table as CSV into this folder")
    lb.add_argument("--plot", default=None, help="draw the ratings into this PNG file")
    lb.add_argument("--as", dest="as_user", default=None,
                    help="check that this user is an active admin before reading votes")  # fmt: skip
    lb.add_argument("--bootstrap", type=int, default=200, help="resamples for the 95%% intervals")
    lb.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    lb.add_argument("--drop-flagged", action="store_true",
                    help="leave votes with quality flags out of the ratings")  # fmt: skip
    lb.add_argument("--database-url", default=None)
    lb.set_defaults(func=_cmd_leaderboard)


def _cmd_train(args: argparse.Namespace) -> int:
    """`pulsemind sft|crpo`: training/sft.py and training/crpo.py parse and run their own."""
    import importlib

    from model.errors import PulseMindError

    trainer = importlib.import_module(f"training.{args.command}")
    try:
        return trainer.cli_main(args, lambda: _database(args))
    except PulseMindError as exc:
        raise _fail(args.command, exc) from exc


def _add_training_parser(sub, kind: str) -> None:
    import importlib

    module = importlib.import_module(f"training.{kind}")  # light: torch loads when it runs
    t = sub.add_parser(kind, help=module.__doc__.split("\n")[0])
    module.add_arguments(t)
    t.add_argument("--database-url", default=None, help="where variants (and runs) live")
    t.set_defaults(func=_cmd_train)


def _cmd_judge(args: argparse.Namespace) -> int:
    """`pulsemind judge`: one four-dimension verdict (training/judge.py)."""
    from model.errors import PulseMindError
    from training.judge import run_cli

    try:
        return run_cli(args)
    except PulseMindError as exc:
        raise _fail("judge", exc) from exc


def _add_judge_parser(sub) -> None:
    j = sub.add_parser("judge", help="which of two answers is better, per dimension (one call)")
    j.add_argument("--a", required=True, metavar="FILE_OR_TEXT", help="answer A (a file or text)")
    j.add_argument("--b", required=True, metavar="FILE_OR_TEXT", help="answer B (a file or text)")
    j.add_argument("--context", default=None, metavar="FILE_OR_TEXT",
                   help="the consultation before the answers")  # fmt: skip
    j.add_argument("--reference", default=None, metavar="FILE_OR_TEXT",
                   help="the reference doctor's reply, if there is one")  # fmt: skip
    j.add_argument("--url", required=True, help="the judge's OpenAI-compatible server (…/v1)")
    j.add_argument("--model", required=True, help="the judge model's served name")
    j.add_argument("--both-orders", action="store_true",
                   help="judge (A, B) and (B, A); keep only consistent wins")  # fmt: skip
    j.add_argument("--lang", default="en", choices=["en", "zh-CN"], help="prompt language")
    j.add_argument("--structured", default="auto", choices=["auto", "vllm", "json_schema", "none"],
                   help="how the reply is constrained (auto: vLLM's, else response_format)")  # fmt: skip
    j.add_argument("--api-key-env", default=None, metavar="VAR",
                   help="environment variable holding a hosted API's key "
                        "(default: $PULSEMIND_JUDGE_API_KEY)")  # fmt: skip
    j.add_argument("--max-tokens", type=int, default=200)
    j.add_argument("--temperature", type=float, default=0.0)
    j.add_argument("--json", action="store_true", help="print the verdict as JSON")
    j.add_argument("--no-cache", action="store_true", help="neither read nor store verdicts")
    j.add_argument("--database-url", default=None, help="where verdicts are cached")
    j.set_defaults(func=_cmd_judge)


def _cmd_eval(args: argparse.Namespace) -> int:
    """`pulsemind eval run|agreement`: the PulseMind Benchmark (training/eval.py,
    training/eval_agreement.py); case files are read here (app/cases.py)."""
    if args.action == "agreement":
        from training.eval_agreement import cli_main

        return cli_main(args, lambda: _database(args))
    from app.cases import read_case_file
    from training.eval import cli_main

    if args.resume is None:
        missing = [f"--{n.replace('_', '-')}" for n in ("cases", "model", "opponent", "judge",
                                                        "judge_model") if not getattr(args, n)]  # fmt: skip
        if missing:
            raise SystemExit(f"pulsemind eval run: {', '.join(missing)} needed (or --resume RUN)")
    else:
        given = [f"--{n.replace('_', '-')}" for n in ("cases", "model", "opponent", "judge_model")
                 if getattr(args, n)]  # fmt: skip
        if given:
            raise SystemExit(f"pulsemind eval run: {', '.join(given)} cannot change a run; "
                             "--resume takes them from the run (--judge may be a new address)")  # fmt: skip
    return cli_main(args, lambda: _database(args), read_case_file)


def _add_eval_parser(sub) -> None:
    e = sub.add_parser("eval", help="the PulseMind Benchmark: win rates, judge-clinician agreement")
    es = e.add_subparsers(dest="action", required=True)
    r = es.add_parser("run", help="a variant vs an opponent on a case file, judged per case")
    r.add_argument("--cases", default=None, metavar="FILE",
                   help="case file: PulseMind JSONL, CMtMedQA JSON or MedDiagnose-style JSON")  # fmt: skip
    r.add_argument("--format", default="auto", choices=["auto", "jsonl", "cmtmedqa", "meddiagnose"])
    r.add_argument("--images", default=None,
                   help="MedDiagnose: the images folder (default: images/ beside the file)")  # fmt: skip
    r.add_argument("--model", default=None, metavar="VARIANT", help="the variant evaluated")
    r.add_argument("--opponent", default=None, metavar="VARIANT|reference",
                   help="another variant, or 'reference': the reference doctor's answers")  # fmt: skip
    r.add_argument("--judge", default=None, metavar="URL", help="the judge's server (…/v1)")
    r.add_argument("--judge-model", default=None, metavar="NAME", help="the judge's served name")
    pick = r.add_mutually_exclusive_group()
    pick.add_argument("--limit", type=int, default=None, metavar="N", help="the first N cases")
    pick.add_argument("--sample", type=int, default=None, metavar="N",
                      help="N cases drawn at random (with --seed)")  # fmt: skip
    r.add_argument("--seed", type=int, default=0, help="seed of --sample")
    r.add_argument("--concurrency", type=int, default=16, help="cases in flight at once")
    r.add_argument("--resume", type=int, default=None, metavar="RUN",
                   help="continue an interrupted run (its finished cases are kept)")  # fmt: skip
    r.add_argument("--lang", default="zh-CN", choices=["zh-CN", "en"],
                   help="prompt language of the model and the judge")  # fmt: skip
    r.add_argument("--bootstrap", type=int, default=1000, help="resamples for the 95%% intervals")
    r.add_argument("--judge-max-tokens", type=int, default=200)
    r.add_argument("--out", default="eval-runs", help="folder for run-N.md / .csv / .png")
    a = es.add_parser("agreement", help="how often the judge agrees with the clinicians' votes")
    a.add_argument("--judge", default=None, metavar="URL",
                   help="the judge's server (…/v1); none: show the last measurement")  # fmt: skip
    a.add_argument("--judge-model", default=None, metavar="NAME")
    a.add_argument("--lang", default="en", choices=["en", "zh-CN"], help="judge prompt language")
    a.add_argument("--bootstrap", type=int, default=1000, help="resamples for the 95%% intervals")
    a.add_argument("--concurrency", type=int, default=16, help="judge calls in flight at once")
    a.add_argument("--judge-max-tokens", type=int, default=200)
    a.add_argument("--out", default="eval-runs", help="folder for run-N.md / .csv / .png")
    for parser in (r, a):
        parser.add_argument("--database-url", default=None)
    e.set_defaults(func=_cmd_eval)


if __name__ == "__main__":
    sys.exit(main())
