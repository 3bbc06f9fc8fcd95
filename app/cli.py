"""The `pulsemind` command: one entry point for the app and its tools.

    pulsemind app [--model-url URL --model NAME] [--database-url URL] [--host H --port P]
    pulsemind serve MODEL_DIR [--port 8000] [--lora NAME=DIR ...]   # start vLLM, wait healthy
    pulsemind demo-model [DIR]                                      # build the tiny demo model
    pulsemind intake FILE... [--json]                               # what the model would receive
    pulsemind bench intake [FILE...]                                # intake speed and bytes saved
    pulsemind bench consult [--concurrency 1 16]                    # app vs direct-to-vLLM ratios
    pulsemind bench deid                                            # identifier recall/precision
    pulsemind db upgrade                                            # apply migrations
    pulsemind user add NAME --role ROLE                             # create a user (asks password)

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
    if args.what == "consult":
        from app.bench.consult import bench_consult_main

        return bench_consult_main(args.rest)
    if args.what == "intake":
        from pathlib import Path

        from app.bench.intake import bench_intake_main

        return bench_intake_main([Path(f) for f in args.rest] or None)
    if args.what == "deid":
        from app.bench.deid import bench_deid_main

        return bench_deid_main()
    raise SystemExit(f"unknown benchmark {args.what!r}")


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
    s.add_argument(
        "--python",
        default=None,
        help="interpreter of vLLM's environment (default: $PULSEMIND_VLLM_PYTHON)",
    )
    s.set_defaults(func=_cmd_serve)

    d = sub.add_parser("demo-model", help="build the tiny demo model")
    d.add_argument("dir", nargs="?", default=None)
    d.set_defaults(func=_cmd_demo_model)

    i = sub.add_parser("intake", help="show what the model would receive for each file")
    i.add_argument("files", nargs="+")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_cmd_intake)

    b = sub.add_parser("bench", help="benchmarks that print ratios")
    b.add_argument("what", choices=["intake", "consult", "deid"])
    b.add_argument(
        "rest",
        nargs=argparse.REMAINDER,
        help="intake: files (default: built-in samples); consult: its options (--help)",
    )
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
