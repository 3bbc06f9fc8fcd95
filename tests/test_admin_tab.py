"""The Admin and Leaderboard tabs through gradio_client against the launched app and the real
vLLM server: users (add, log in, disable, enable, reset a password; not oneself, not the last
admin), model variants (a LoRA adapter loaded into the running server; a bad adapter or a
server that is down: a plain message and no row), exports (a .zip whose dataset loads), the
leaderboard (an admin sees per-annotator data, an annotator calling the same endpoint gets
none), and every admin endpoint refused to clinicians, annotators and anonymous callers with
nothing changed in SQL. No response carries Python, SQL or stack text.

Run: OMP_NUM_THREADS=1 python -m pytest tests/test_admin_tab.py -q   (starts vLLM: ~1 min)
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
import zipfile
from pathlib import Path

import datasets
import httpx
import pytest
from apphelpers import PASSWORD, login, make_users, running_app
from gradio_client import Client
from gradio_client.exceptions import AppError
from sqlalchemy import select
from test_attacks import LEAKS

from app.admin_tab import AdminHandlers
from app.config import AppConfig
from app.downloads import Downloads
from model.lora import served_models
from model.serve import free_port
from storage import (
    Database,
    InvalidInput,
    Uploads,
    create_comparison,
    create_user,
    ensure_model_variant,
    get_user_by_name,
    get_variant_by_name,
    record_response,
    record_vote,
    set_user_active,
)

pytestmark = pytest.mark.vllm

NEW_PASSWORD = "another long passphrase"
#: (api name, arguments) of every admin endpoint, with harmless valid-looking values.
ADMIN_CALLS = [
    ("/admin_users", ()),
    ("/admin_variants", ()),
    ("/admin_add_user", ("mallory", "admin", PASSWORD)),
    ("/admin_disable_user", ("root",)),
    ("/admin_enable_user", ("root",)),
    ("/admin_reset_password", ("root", NEW_PASSWORD)),
    ("/admin_add_variant", ("evil", "http://127.0.0.1:1/v1", "evil", None, None, None, None,
                            None, None, None)),
    ("/admin_activate_variant", ("tiny",)),
    ("/admin_deactivate_variant", ("tiny",)),
    ("/admin_export", ("sft", True)),
]  # fmt: skip


@pytest.fixture(scope="module")
def world(vllm_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("admin")
    db = Database.sqlite(tmp / "db" / "pulsemind.db")
    db.upgrade()
    make_users(db)
    create_user(db, "root2", PASSWORD, "admin")
    create_user(db, "ann2", PASSWORD, "annotator")
    data_dir = tmp / "db"
    config = AppConfig(model_url=vllm_server.base_url, model="tiny", variant_name="tiny",
                       data_dir=str(data_dir), port=0)  # fmt: skip
    with running_app(config, db) as url:
        world = {"url": url, "db": db, "tmp": tmp, "data_dir": data_dir,
                 "endpoint": vllm_server.base_url, "clients": []}  # fmt: skip
        yield world
        for c in world["clients"]:  # their heartbeat streams would hold the server open ~30 s
            c.close()


def client(world, who: str, password: str = PASSWORD) -> Client:
    c = Client(world["url"], auth=(who, password), verbose=False)
    world["clients"].append(c)
    return c


def snapshot(db: Database) -> tuple:
    """What an admin endpoint could change: users (with password hashes) and variants."""
    from storage.models import ModelVariant, User

    with db.transaction(write=False) as s:
        users = sorted((u.id, u.username, u.role.value, u.active, u.password_hash)
                       for u in s.scalars(select(User)))  # fmt: skip
        variants = sorted((v.id, v.name, v.active, v.endpoint, v.adapter_path)
                          for v in s.scalars(select(ModelVariant)))  # fmt: skip
    return users, variants


def exports(world) -> list[Path]:
    return sorted((world["data_dir"] / "exports").glob("*/*"))


def refused(c: Client, api: str, *args, match: str | None = None) -> str:
    """The call fails with a plain message (returned)."""
    with pytest.raises(AppError) as exc:
        c.predict(*args, api_name=api)
    text = str(exc.value)
    assert not LEAKS.search(text), (api, args, text)
    if match is not None:
        assert match in text, (api, args, text)
    return text


def logs_in(world, who: str, password: str) -> bool:
    r = httpx.post(f"{world['url']}/login", data={"username": who, "password": password},
                   timeout=30)  # fmt: skip
    return r.status_code == 200


def rows_of(table: dict) -> list[list]:
    return table["data"] if table else []


# --- who may call what ---------------------------------------------------------------------


def test_admin_endpoints_refuse_other_roles_and_anonymous_callers(world):
    db = world["db"]
    before, exported = snapshot(db), exports(world)
    callers = {"clinician": client(world, "alice"), "annotator": client(world, "ann")}
    tried = 0
    for (role, c), (api, args) in itertools.product(callers.items(), ADMIN_CALLS):
        refused(c, api, *args, match=f"Your role ({role}) cannot")
        tried += 1
    anon = httpx.Client(base_url=world["url"], timeout=30)
    for api, args in [*ADMIN_CALLS, ("/leaderboard", ("overall",))]:
        r = anon.post(f"/gradio_api/call{api}", json={"data": list(args)})
        assert r.status_code in (401, 403), (api, r.status_code, r.text)
        assert not LEAKS.search(r.text)
        tried += 1
    refused(callers["clinician"], "/leaderboard", "overall", match="Your role (clinician)")
    assert snapshot(db) == before and exports(world) == exported
    print(f"\nadmin endpoints: {tried + 1} calls by other roles or nobody, all refused")


# --- users -----------------------------------------------------------------------------------


def test_admin_adds_disables_enables_and_resets_a_user(world):
    root = client(world, "root")
    status, table, *_ = root.predict("Carol", "annotator", PASSWORD, api_name="/admin_add_user")
    assert "carol" in status and "Annotator" in status
    assert ["carol", "Annotator", "yes"] == rows_of(table)[[r[0] for r in rows_of(table)].index(
        "carol")][:3]
    carol = client(world, "carol")  # she logs in and reaches what her role allows
    carol.predict("overall", api_name="/leaderboard")

    status, table = root.predict("carol", api_name="/admin_disable_user")
    assert "disabled" in status and not get_user_by_name(world["db"], "carol").active
    assert not logs_in(world, "carol", PASSWORD)
    refused(carol, "/leaderboard", "overall", match="Please log in")  # her session is over

    status, _ = root.predict("carol", api_name="/admin_enable_user")
    assert "enabled" in status and logs_in(world, "carol", PASSWORD)
    status, cleared = root.predict("carol", NEW_PASSWORD, api_name="/admin_reset_password")
    assert "reset" in status and cleared == ""
    assert not logs_in(world, "carol", PASSWORD) and logs_in(world, "carol", NEW_PASSWORD)

    # refusals, each with a plain message and no change
    before = snapshot(world["db"])
    refused(root, "/admin_disable_user", "root", match="your own account")
    refused(root, "/admin_add_user", "carol", "clinician", PASSWORD, match="taken")
    refused(root, "/admin_add_user", "dave", "superuser", PASSWORD, match="Choose a role")
    refused(root, "/admin_add_user", "dave", "clinician", "short", match="at least 12")
    refused(root, "/admin_add_user", "x" * 100_000, "clinician", PASSWORD)
    refused(root, "/admin_add_user", "dave", "clinician", "p" * 100_000, match="at most")
    refused(root, "/admin_add_user", "dave", ["admin"], PASSWORD, match="Choose a role")
    refused(root, "/admin_reset_password", "nobody", NEW_PASSWORD, match="no user named")
    refused(root, "/admin_reset_password", None, NEW_PASSWORD, match="Choose a user")
    refused(root, "/admin_disable_user", "n" * 100_000, match="at most")
    assert snapshot(world["db"]) == before
    # another admin can be disabled (and enabled again)
    root.predict("root2", api_name="/admin_disable_user")
    root.predict("root2", api_name="/admin_enable_user")
    # the tables as the tab shows them
    users, _ = root.predict(api_name="/admin_users")
    assert {r[0] for r in rows_of(users)} >= {"alice", "ann", "root", "root2", "carol"}


def test_the_last_active_admin_stays_even_when_two_admins_race(world):
    """root2 opened the page, then root disabled root2; root2's stale request to disable root
    must not leave the app without an admin (the handler, as Auth.guard would call it)."""
    db = world["db"]
    handlers = AdminHandlers(db, world["tmp"], Downloads(Uploads()))
    root2 = get_user_by_name(db, "root2")
    set_user_active(db, root2.id, False)
    try:
        with pytest.raises(InvalidInput) as exc:
            handlers.disable_user(root2, "root")
        assert "At least one active administrator" in exc.value.user_message
        assert get_user_by_name(db, "root").active
    finally:
        set_user_active(db, root2.id, True)


# --- model variants --------------------------------------------------------------------------


def test_admin_adds_an_adapter_variant_that_the_server_then_serves(world, adapter_dir):
    db, root = world["db"], client(world, "root")
    name = f"a1-admin-{uuid.uuid4().hex[:6]}"
    status, table, *_ = root.predict(name, world["endpoint"], name, str(adapter_dir), "tiny",
                                     0.5, None, 16, 7, "from the Admin tab",
                                     api_name="/admin_add_variant")  # fmt: skip
    assert name in status and "adapter" in status
    variant = get_variant_by_name(db, name)
    assert variant.active and variant.adapter_path == str(Path(adapter_dir).resolve())
    assert variant.sampling_defaults == {"temperature": 0.5, "max_tokens": 16, "seed": 7}
    assert served_models(world["endpoint"])[name] == variant.adapter_path  # loaded at runtime
    row = next(r for r in rows_of(table) if r[0] == name)
    assert row[4] == "tiny" and json.loads(row[6])["max_tokens"] == 16
    # it answers through the app
    last = client(world, "alice").predict({"text": "Headache.", "files": []}, None, name,
                                          api_name="/consult")  # fmt: skip
    assert last["finish_reason"] in ("stop", "length")

    status, _ = root.predict(name, api_name="/admin_deactivate_variant")
    assert "inactive" in status and not get_variant_by_name(db, name).active
    status, _ = root.predict(name, api_name="/admin_activate_variant")
    assert get_variant_by_name(db, name).active


def test_bad_variants_get_plain_messages_and_register_nothing(world, tmp_path):
    db, root, endpoint = world["db"], client(world, "root"), world["endpoint"]
    before = snapshot(db)
    down = f"http://127.0.0.1:{free_port()}/v1"

    def add(*args):
        args = args + (None,) * (10 - len(args))
        return refused(root, "/admin_add_variant", *args)

    bad_adapter = add("bad", endpoint, "bad", str(tmp_path / "no-adapter"))
    assert "Nothing was registered" in bad_adapter
    assert "cannot be reached" in add("down", down, "down", str(tmp_path / "no-adapter"))
    assert "exists already" in add("tiny", endpoint, "tiny")
    assert "parent" in add("orphan", endpoint, "tiny", None, "no-such-parent")
    assert "Temperature" in add("t", endpoint, "tiny", None, None, "hot")
    assert "Temperature" in add("t", endpoint, "tiny", None, None, 5)
    assert "Max tokens" in add("t", endpoint, "tiny", None, None, None, None, 1.5)
    assert "Seed" in add("t", endpoint, "tiny", None, None, None, None, None, -1)
    assert "Top-p" in add("t", endpoint, "tiny", None, None, None, "1e999")
    assert "endpoint" in add("t", "ftp://example/v1", "tiny").lower()
    add("t" * 100_000, endpoint, "tiny")
    add("t", endpoint, "tiny", "/" + "a" * 100_000)
    add("t", endpoint, "tiny", "bad\x00path")
    add(None, endpoint, "tiny")
    refused(root, "/admin_activate_variant", "no-such-variant", match="no variant named")
    refused(root, "/admin_activate_variant", None, match="Choose a variant")
    assert snapshot(db) == before
    assert {"bad", "down"}.isdisjoint(served_models(endpoint))
    print(f"\nbad adapter path, as the admin reads it: {bad_adapter}")


# --- leaderboard and exports -----------------------------------------------------------------


def test_empty_leaderboard_and_nothing_to_export(world):
    """Before any vote: a plain empty state, and an export that says there is nothing."""
    out = client(world, "ann").predict("overall", api_name="/leaderboard")
    assert "No votes yet" in out[0] and out[1] is None
    refused(client(world, "root"), "/admin_export", "pairs", False, match="Nothing to export")
    assert exports(world) == []


@pytest.fixture(scope="module")
def voted(world):
    """Three comparisons of tiny (A) vs a1 (B), each voted by the annotator who started it:
    ann (A wins, then a tie), ann2 (B wins)."""
    db = world["db"]
    tiny = get_variant_by_name(db, "tiny")
    a1 = ensure_model_variant(db, "a1", world["endpoint"], "a1", parent="tiny")
    voters = [get_user_by_name(db, n) for n in ("ann", "ann2")]
    texts = {"a": "# Advice\n- rest\n- **fluids**", "b": "Drink water and rest for two days."}
    for n, (voter, overall) in enumerate(zip((voters[0], voters[1], voters[0]), "abt", strict=True)):
        turn = create_comparison(db, voter.id, "ad_hoc", variant_a_id=tiny.id,
                                 variant_b_id=a1.id, prompt_text=f"Cough, day {n}.")  # fmt: skip
        for side in "ab":
            record_response(db, turn.id, voter.id, side, texts[side], sampling_params={},
                            finish_reason="stop")  # fmt: skip
        record_vote(db, turn.id, voter.id, proactiveness="a", accuracy="a", usefulness="tie",
                    language_quality="b", overall={"t": "tie"}.get(overall, overall),
                    idempotency_key=str(uuid.uuid4()))  # fmt: skip
    return voters


def _named(files) -> set[str]:
    return {Path(f).name for f in files or []}


def test_leaderboard_per_annotator_data_for_admins_only(world, voted):
    keys = ("status", "raw", "style", "ratings", "win_plot", "wins", "annotators", "agreement",
            "flags", "csv")  # fmt: skip
    admin = dict(zip(keys, client(world, "root").predict("overall", api_name="/leaderboard"),
                     strict=True))  # fmt: skip
    assert "3 votes on 2 variants" in admin["status"]
    plot = json.loads(admin["raw"]["plot"])
    assert {v["variant"] for v in plot["data"]["values"]} == {"tiny", "a1"}
    assert all(v["lower"] <= v["rating"] <= v["upper"] for v in plot["data"]["values"])
    assert json.loads(admin["style"]["plot"])["data"]["values"]
    assert {r[2] for r in rows_of(admin["ratings"])} == {"tiny", "a1"}
    assert json.loads(admin["win_plot"]["plot"])["data"]["values"]
    assert {r[0]: r[1] for r in rows_of(admin["annotators"])} == {"ann": 2, "ann2": 1}
    assert len(rows_of(admin["agreement"])) == 5  # per field (no turn has two voters here)
    assert rows_of(admin["flags"])  # votes made in no time are flagged too_fast
    assert {"annotators.csv", "agreement.csv", "quality_flags.csv",
            "ratings_overall.csv", "ratings_overall_style.csv"} <= _named(admin["csv"])  # fmt: skip

    ann = dict(zip(keys, client(world, "ann").predict("accuracy", api_name="/leaderboard"),
                   strict=True))  # fmt: skip
    assert "3 votes on 2 variants" in ann["status"] and "ann2" not in json.dumps(ann)
    assert json.loads(ann["raw"]["plot"])["data"]["values"]
    for private in ("annotators", "agreement", "flags"):
        assert rows_of(ann[private]) == [], private
    assert "ratings_overall.csv" in _named(ann["csv"])
    assert _named(ann["csv"]).isdisjoint({"annotators.csv", "agreement.csv", "quality_flags.csv"})
    # a CSV made for the admin is theirs: nobody else fetches it by its path
    made = max(Path(os.environ["GRADIO_TEMP_DIR"]).glob("pulsemind-downloads/*/annotators.csv"),
               key=lambda p: p.stat().st_mtime)  # the one just made (the folder outlives runs)
    for who in ("ann", "alice"):
        assert login(world["url"], who).get(f"/gradio_api/file={made}").status_code == 404
    assert login(world["url"], "root").get(f"/gradio_api/file={made}").status_code == 200
    ann_client = client(world, "ann")
    for bad in ("nonsense", ["overall"], {"x": 1}, "o" * 100_000):
        refused(ann_client, "/leaderboard", bad, match="Choose one of")


def test_export_button_gives_a_zip_whose_dataset_loads(world, voted, tmp_path):
    root = client(world, "root")
    status, zip_path = root.predict("pairs", False, api_name="/admin_export")
    assert "Exported 2 pairs rows" in status, status  # two decisive votes; a tie makes none
    [folder] = exports(world)
    assert folder.parent.parent == world["data_dir"] / "exports" and folder.name.startswith("pairs-")
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(tmp_path)
    dataset = datasets.load_from_disk(str(tmp_path / folder.name))
    assert len(dataset) == 2 == datasets.load_from_disk(str(folder)).num_rows
    assert {"prompt", "chosen", "rejected", "overall", "vote_ids"} <= set(dataset.column_names)
    assert sorted(dataset["voter_id"]) == sorted(u.id for u in voted)

    before = exports(world)
    refused(root, "/admin_export", "everything", False, match="Choose a kind")
    refused(root, "/admin_export", "sft", "yes", match="true or false")
    assert login(world["url"], "ann").get(f"/gradio_api/file={zip_path}").status_code == 404
    refused(root, "/admin_export", ["sft"], None, match="Choose a kind")
    assert exports(world) == before


#: Calls that must fail whichever one value is replaced (so nothing may change): a short
#: password, an unknown user or variant, a bad endpoint, an unknown field, a non-bool flag.
MALFORMED_BASES = [
    ("/admin_add_user", ("mallory", "admin", "short")),
    ("/admin_disable_user", ("nobody",)),
    ("/admin_enable_user", ("nobody",)),
    ("/admin_reset_password", ("nobody", NEW_PASSWORD)),
    ("/admin_add_variant", ("t", "ftp://x/v1", "tiny", None, None, None, None, None, None, None)),
    ("/admin_activate_variant", ("nobody",)),
    ("/admin_deactivate_variant", ("nobody",)),
    ("/admin_export", ("sft", "no")),
    ("/leaderboard", ("nonsense",)),
]  # fmt: skip
#: Values of the wrong type or size (a number typed into a text box arrives as its digits).
BAD_VALUES = [None, 12, 1.5, True, [], {}, "x" * 50_000, "１２"]


def test_no_stack_text_for_malformed_values_anywhere(world):
    """Every admin endpoint and the leaderboard with values of the wrong type or size."""
    root = client(world, "root")
    before, exported = snapshot(world["db"]), exports(world)
    answered = 0
    for (api, args), bad in itertools.product(MALFORMED_BASES, BAD_VALUES):
        for i in range(len(args)):
            if api == "/admin_export" and i == 1 and bad is True:
                continue  # a valid flag: that call would export
            call = list(args)
            call[i] = bad
            try:
                root.predict(*call, api_name=api)
            except AppError as exc:
                assert not LEAKS.search(str(exc)), (api, call, str(exc))
            except ValueError:
                pass  # gradio_client refused to send it (not JSON): nothing reached the app
            else:
                assert (api, bad) == ("/leaderboard", None), call  # no field: overall
            answered += 1
    assert snapshot(world["db"]) == before and exports(world) == exported
    print(f"\nmalformed admin values: {answered} calls answered with plain messages")
