"""Brute-force protection, idle session expiry and cookie flags, over HTTP against the real app.

The app runs under uvicorn (`serve_in_thread`) on a real SQLite file, pointed at a model server
that is not there (no model is needed to log in). Clients connect from 127.0.0.1, which the
app trusts as a reverse proxy by default (`trusted_proxies`), so each test speaks for a client
address of its own through `X-Forwarded-For`, and for https through `X-Forwarded-Proto` — as a
TLS-terminating proxy on the same host would. The limits are lowered (5 failures per account,
3 s lockouts, 1 s idle sessions) so the tests take seconds; each password check is a real
argon2 verification (~0.1-0.4 s here).

    OMP_NUM_THREADS=1 python -m pytest tests/test_login_security.py -q
"""

from __future__ import annotations

import re
import shutil
import time

import httpx
import pytest
from apphelpers import PASSWORD, make_users, running_app

from app.config import AppConfig
from model.serve import free_port
from storage import Database, get_user_by_name, list_audit

#: Lockouts in these tests: long enough to send 20 attempts inside one, short enough to wait out.
LOCKOUT_S = 3.0
ACCOUNT_FAILURES = 5
IDLE_S = 1.0
WRONG = "not the password at all"


def app_config(tmp, **limits) -> AppConfig:
    return AppConfig(model_url=f"http://127.0.0.1:{free_port()}/v1", model="tiny",
                     variant_name="tiny", data_dir=str(tmp), port=0, login_lockout_s=LOCKOUT_S,
                     **limits)  # fmt: skip


def started(tmp_path_factory, name: str, **limits):
    tmp = tmp_path_factory.mktemp(name)
    db = Database.sqlite(tmp / "t.db")
    db.upgrade()
    make_users(db)
    return running_app(app_config(tmp, **limits), db), db


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """Account lockout after 5 failures (addresses: 100), sessions idle after 1 s."""
    server, db = started(tmp_path_factory, "guarded", login_account_failures=ACCOUNT_FAILURES,
                         login_address_failures=100, session_idle_s=IDLE_S)  # fmt: skip
    with server as url:
        yield url, db


@pytest.fixture(scope="module")
def address_app(tmp_path_factory):
    """Address lockout after 6 failures (accounts: 100)."""
    server, db = started(tmp_path_factory, "by-address", login_account_failures=100,
                         login_address_failures=6)  # fmt: skip
    with server as url:
        yield url, db


def post_login(url: str, user: str, password: str, address: str, **headers) -> httpx.Response:
    """One `POST /login` as an API client (form-urlencoded, like gradio_client) from `address`."""
    return httpx.post(f"{url}/login", data={"username": user, "password": password},
                      headers={"X-Forwarded-For": address, **headers}, timeout=30)  # fmt: skip


def session(url: str, user: str, address: str, **headers) -> httpx.Client:
    c = httpx.Client(base_url=url, timeout=30, headers={"X-Forwarded-For": address, **headers})
    r = c.post("/login", data={"username": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return c


def assert_plain(text: str) -> None:
    """A message for people: no Python, no stack, no exception names."""
    for leak in ("Traceback", 'File "', ".py", "Error", "Exception", "<module>", "line "):
        assert leak not in text, f"{leak!r} in {text!r}"


def lockouts(db: Database, address: str) -> list:
    return [e for e in list_audit(db, action="login.lockout")
            if (e.detail or {}).get("address") == address]  # fmt: skip


def test_wrong_passwords_lock_the_account_even_for_the_right_password(app):
    url, db = app
    alice = get_user_by_name(db, "alice")
    statuses = [post_login(url, "alice", WRONG, "192.0.2.10").status_code for _ in range(20)]
    # 4 plain refusals, the 5th failure starts the lockout, the other 15 are refused unchecked
    assert statuses == [400] * (ACCOUNT_FAILURES - 1) + [429] * (21 - ACCOUNT_FAILURES)

    right = post_login(url, "alice", PASSWORD, "192.0.2.10")
    assert right.status_code == 429 and "set-cookie" not in right.headers
    body = right.json()
    assert "temporarily locked" in body["detail"] and "暂时锁定" in body["detail"]
    assert re.search(r"Try again in [1-3] seconds?\.", body["detail"]), body["detail"]
    assert 1 <= int(right.headers["retry-after"]) <= LOCKOUT_S
    assert_plain(body["detail"])

    (event,) = lockouts(db, "192.0.2.10")
    assert event.user_id == alice.id and event.outcome == "denied"
    assert event.detail == {"scope": "account", "failures": ACCOUNT_FAILURES,
                            "lockout_s": int(LOCKOUT_S), "address": "192.0.2.10"}  # fmt: skip
    refused = [e for e in list_audit(db, action="login", outcome="denied")
               if e.detail == {"reason": "locked", "address": "192.0.2.10"}]  # fmt: skip
    assert len(refused) == 16  # 15 wrong + the right one, none of them checked

    # the lock is the account's: from another address too; other accounts are untouched
    assert post_login(url, "alice", PASSWORD, "192.0.2.11").status_code == 429
    assert post_login(url, "bob", PASSWORD, "192.0.2.10").status_code == 200

    time.sleep(LOCKOUT_S + 0.3)
    assert post_login(url, "alice", PASSWORD, "192.0.2.10").status_code == 200


def test_a_successful_login_resets_the_account_count(app):
    url, _ = app
    for _ in range(2):  # 2 x 4 failures: 8 in all, but never 5 since the last success
        for _ in range(ACCOUNT_FAILURES - 1):
            assert post_login(url, "ann", WRONG, "192.0.2.20").status_code == 400
        assert post_login(url, "ann", PASSWORD, "192.0.2.20").status_code == 200


def test_unknown_accounts_lock_like_real_ones(app):
    """A lockout must not tell which usernames exist."""
    url, db = app
    for name in ("alice2", "root"):  # no such user; a real one
        codes = [post_login(url, name, WRONG, "192.0.2.30").status_code
                 for _ in range(ACCOUNT_FAILURES + 1)]  # fmt: skip
        assert codes == [400] * (ACCOUNT_FAILURES - 1) + [429, 429], name
    ghost, root = sorted(lockouts(db, "192.0.2.30"), key=lambda e: e.id)
    assert ghost.user_id is None and root.user_id == get_user_by_name(db, "root").id


def test_the_login_form_is_sent_to_a_page_that_says_locked_and_for_how_long(app):
    """Gradio's form (a browser fetch of FormData) cannot show a 429: it gets 303 to a 200,
    reloads, and the page shows the notice once, in English and Chinese."""
    url, _ = app
    form = {"username": (None, "bob"), "password": (None, WRONG)}
    with httpx.Client(base_url=url, timeout=30, headers={"X-Forwarded-For": "192.0.2.40"}) as c:
        codes = [c.post("/login", files=form).status_code for _ in range(ACCOUNT_FAILURES)]
        assert codes == [400] * (ACCOUNT_FAILURES - 1) + [303]
        r = c.post("/login", files={**form, "password": (None, PASSWORD)})
        assert r.status_code == 303 and r.headers["location"] == "/login/locked"
        landing = c.get(r.headers["location"])
        assert landing.status_code == 200 and landing.json()["locked"] is True
        page = c.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "Sign-in temporarily locked" in page.text
        text = re.sub(r"<[^>]+>", " ", page.text.split("<body>", 1)[1])
        assert "this account" in text and "Try again in" in text and "second" in text
        assert "此账户" in text and "秒" in text
        assert_plain(text)
        again = c.get("/", headers={"Accept": "text/html"})  # the notice is shown once
        assert "Sign-in temporarily locked" not in again.text and "gradio_config" in again.text


def test_a_locked_address_refuses_every_account_and_others_are_unaffected(address_app):
    url, db = address_app
    codes = [post_login(url, f"nobody{i}", WRONG, "198.51.100.7").status_code for i in range(6)]
    assert codes == [400] * 5 + [429]
    refused = post_login(url, "alice", PASSWORD, "198.51.100.7")
    assert refused.status_code == 429
    assert "network address" in refused.json()["detail"] and "网络地址" in refused.json()["detail"]
    assert_plain(refused.json()["detail"])
    (event,) = lockouts(db, "198.51.100.7")
    assert event.user_id is None and event.detail["scope"] == "address"

    assert post_login(url, "alice", PASSWORD, "198.51.100.8").status_code == 200
    page = httpx.get(url + "/", headers={"X-Forwarded-For": "198.51.100.7"}, timeout=30)
    assert "network address" in page.text and 'http-equiv="refresh"' in page.text
    time.sleep(LOCKOUT_S + 0.3)
    assert post_login(url, "alice", PASSWORD, "198.51.100.7").status_code == 200


def test_an_idle_session_is_logged_out_and_its_token_dropped(app):
    url, db = app
    bob = session(url, "bob", "192.0.2.50")
    token = dict(bob.cookies)
    for _ in range(3):  # activity keeps it alive past the idle time
        assert bob.get("/config").status_code == 200
        time.sleep(IDLE_S * 0.6)
    # bob's earlier sessions (other tests) were swept by now; only this one can end next
    before = max((e.id for e in list_audit(db, action="logout")), default=0)
    bob_id = get_user_by_name(db, "bob").id
    time.sleep(IDLE_S + 0.3)
    r = bob.get("/config")
    assert r.status_code == 401 and "ended after" in r.json()["detail"]
    assert_plain(r.json()["detail"])
    assert "access-token-unsecure-" in r.headers["set-cookie"]  # deleted in the browser
    # the server no longer knows the token: Gradio itself answers as for a stranger
    with httpx.Client(base_url=url, cookies=token, timeout=30) as replay:
        assert replay.get("/config").status_code == 401
        assert replay.get("/gradio_api/user").json() is None
    ended = [e for e in list_audit(db, action="logout") if e.id > before]
    assert [(e.user_id, e.detail["reason"]) for e in ended] == [(bob_id, "idle")]


def test_an_idle_page_load_is_sent_to_the_login_form(app):
    url, _ = app
    c = session(url, "alice", "192.0.2.51")
    time.sleep(IDLE_S + 0.3)
    r = c.get("/", headers={"Accept": "text/html"})
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "auth_required" in c.get("/").text  # Gradio's login page


def test_logout_invalidates_the_session(app):
    url, _ = app
    c = session(url, "alice", "192.0.2.52")
    token = dict(c.cookies)
    assert c.get("/config").status_code == 200
    assert c.get("/logout").status_code == 302
    with httpx.Client(base_url=url, cookies=token, timeout=30) as replay:
        assert replay.get("/config").status_code == 401


def _set_cookies(r: httpx.Response) -> dict[str, str]:
    return {v.split("=", 1)[0]: v for v in r.headers.get_list("set-cookie")}


def test_session_cookies_are_secure_behind_a_tls_proxy(app):
    url, _ = app
    r = post_login(url, "alice", PASSWORD, "192.0.2.60", **{"X-Forwarded-Proto": "https"})
    assert r.status_code == 200
    cookies = _set_cookies(r)
    assert len(cookies) == 2 and all(k.startswith("access-token-") for k in cookies)
    for value in cookies.values():
        attrs = [a.strip().lower() for a in value.split(";")[1:]]
        assert "secure" in attrs and "samesite=lax" in attrs and "httponly" in attrs, value


def test_plain_http_on_loopback_still_logs_in(app):
    url, _ = app
    r = post_login(url, "alice", PASSWORD, "192.0.2.61")
    unsecure = next(v for k, v in _set_cookies(r).items() if "unsecure" in k)
    assert "secure" not in [a.strip().lower() for a in unsecure.split(";")[1:]]
    with httpx.Client(base_url=url, timeout=30) as c:  # httpx keeps Secure cookies off http
        assert c.post("/login", data={"username": "alice", "password": PASSWORD}).is_success
        assert c.get("/config").status_code == 200


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(tmp_path_factory):
    """`trusted_proxies=""`: the TCP peer is the client, and its scheme is its own."""
    server, db = started(tmp_path_factory, "no-proxy", trusted_proxies="",
                         login_account_failures=1)  # fmt: skip
    with server as url:
        r = post_login(url, "alice", PASSWORD, "203.0.113.9", **{"X-Forwarded-Proto": "https"})
        unsecure = next(v for k, v in _set_cookies(r).items() if "unsecure" in k)
        assert "secure" not in [a.strip().lower() for a in unsecure.split(";")[1:]]
        assert post_login(url, "bob", WRONG, "203.0.113.9").status_code == 429
    (event,) = list_audit(db, action="login.lockout")
    assert event.detail["address"] == "127.0.0.1"


@pytest.mark.browser
def test_chromium_login_form_shows_the_lockout(app):
    """Gradio's own login page in headless Chromium: the lockout notice replaces the form."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not installed (scripts/test installs Debian's chromium)")
    url, _ = app
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
        page = browser.new_page(extra_http_headers={"X-Forwarded-For": "192.0.2.70"})
        page.goto(url + "/")
        statuses = []
        for _ in range(ACCOUNT_FAILURES):
            page.get_by_label("username").fill("ann")
            page.get_by_label("password").fill(WRONG)
            with page.expect_response(lambda r: r.url.endswith("/login")) as answer:
                page.get_by_role("button", name="Login").click()
            statuses.append(answer.value.status)
        assert statuses == [400] * (ACCOUNT_FAILURES - 1) + [303]
        page.get_by_text("Sign-in temporarily locked").first.wait_for(timeout=30_000)
        text = page.inner_text("main")
        assert "for this account: it is temporarily locked" in text and "Try again in" in text
        assert "此账户" in text and "暂时锁定" in text
        page.get_by_role("link", name="Back to sign-in").click()
        page.get_by_label("username").wait_for(timeout=30_000)  # the form is back
        browser.close()
