"""Failed-login counts and lockouts per account and per client address.

Gradio's login form calls `Auth.check_login(username, password)` as often as anyone likes (200
wrong passwords at 8.6/s, then the right one, were accepted). Here failed logins are counted
per account — the username as the users table compares it, existing or not, so a lockout does
not tell which accounts exist — and per client address. Too many within `login_window_s` lock
that account or address for `login_lockout_s`; while locked even the right password is refused
before any password check (and the refusal counts against the address: hammering a locked
account is not free). Each lockout is an audit event (`login.lockout`, outcome `denied`,
detail: scope, failures, lockout_s, address). A successful login clears its account's count;
an address's count is only cleared by time (else an attacker's own account would reset it).

Gradio passes `check_login` only the username and password: the address comes from
`app.sessions.SessionGuard`, which opens a `LoginAttempt` for each `POST /login` (a context
variable) and answers a lockout recorded in it instead of Gradio's "incorrect credentials".

Why in memory, not in the database: Gradio's session tokens, its queue and the upload registry
live in this process's memory, so the app runs as one process (sessions would not survive a
restart or reach a second process either). The counters live beside them: no write per attempt
beyond the audit row the login already writes, no schema. A restart forgets the counts (an
attacker who could restart the app at will gains one window's guesses per restart). If the app
ever runs as several processes, sessions and these counters must move to the database together
(a `login_throttle` table keyed by scope and key, updated in one transaction per attempt).
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from loguru import logger

from storage import Database, UserRecord, get_user_by_name, record_audit
from storage.users import username_key

if TYPE_CHECKING:
    from app.config import AppConfig

#: Failed logins per account before it is locked. NIST SP 800-63B allows at most 100 in a row;
#: 10 leaves a clinician room for several typos (caps lock, keyboard layout) and holds an
#: online guesser to 10 guesses per lockout period (40 per hour per account at the defaults).
DEFAULT_LOGIN_ACCOUNT_FAILURES = 10
#: Failed logins per client address (all accounts together) before the address is locked.
#: Higher than per account: a ward's workstations may reach the app through one NAT address,
#: and everyone behind a locked address is locked out. Bounds password spraying (one password
#: tried on many accounts) from one address to 200 guesses per hour at the defaults.
DEFAULT_LOGIN_ADDRESS_FAILURES = 50
#: Failures count when they fall within this window (older ones are forgotten).
DEFAULT_LOGIN_WINDOW_S = 15 * 60
#: How long a lockout lasts. Short enough that a clinician locked out by someone else's guesses
#: is back in a quarter of an hour without calling anyone; long enough to make guessing slow.
DEFAULT_LOGIN_LOCKOUT_S = 15 * 60
#: Counters kept before idle ones are pruned: one per account name or address tried within a
#: window. Pruning walks them all, so it waits until there are this many.
PRUNE_AT_COUNTERS = 10_000
#: Account keys are cut to this length: usernames are far shorter, and a megabyte "username"
#: must not become a megabyte key.
MAX_ACCOUNT_KEY_CHARS = 128

Scope = Literal["account", "address"]


# --- messages ---------------------------------------------------------------------------------


def duration_text(seconds: float) -> tuple[str, str]:
    """`seconds` rounded up, in English and Chinese: seconds below 2 minutes, else minutes."""
    s = max(1, math.ceil(seconds))
    if s < 120:
        return f"{s} second{'s' if s != 1 else ''}", f"{s} 秒"
    m = math.ceil(s / 60)
    return f"{m} minutes", f"{m} 分钟"


MESSAGES: dict[Scope, tuple[str, str]] = {
    "account": (
        "Too many failed sign-in attempts for this account: it is temporarily locked. "
        "Try again in {en}. If these attempts were not yours, tell your administrator.",
        "此账户登录失败次数过多，已被暂时锁定。请在 {zh} 后重试。如果这些尝试不是您本人所为，"
        "请告知管理员。",
    ),
    "address": (
        "Too many failed sign-in attempts from this network address: sign-in from it is "
        "temporarily locked. Try again in {en}.",
        "来自此网络地址的登录失败次数过多，从该地址登录已被暂时锁定。请在 {zh} 后重试。",
    ),
}


@dataclass(frozen=True)
class Lockout:
    """An account or address that may not log in for `seconds` more."""

    scope: Scope
    seconds: float

    def messages(self) -> tuple[str, str]:
        en, zh = duration_text(self.seconds)
        return tuple(m.format(en=en, zh=zh) for m in MESSAGES[self.scope])  # type: ignore[return-value]

    def text(self) -> str:
        return "\n".join(self.messages())


# --- the throttle ------------------------------------------------------------------------------


@dataclass
class _Counter:
    failures: deque = field(default_factory=deque)  # monotonic times within the window
    locked_until: float = 0.0


class LoginThrottle:
    """Failed-login counts and lockouts per account and per address (thread-safe, in memory)."""

    def __init__(
        self,
        *,
        account_failures: int = DEFAULT_LOGIN_ACCOUNT_FAILURES,
        address_failures: int = DEFAULT_LOGIN_ADDRESS_FAILURES,
        window_s: float = DEFAULT_LOGIN_WINDOW_S,
        lockout_s: float = DEFAULT_LOGIN_LOCKOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits: dict[Scope, int] = {"account": account_failures, "address": address_failures}
        self.window_s, self.lockout_s, self.clock = window_s, lockout_s, clock
        self._counters: dict[tuple[Scope, str], _Counter] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: AppConfig) -> LoginThrottle:
        return cls(
            account_failures=config.login_account_failures,
            address_failures=config.login_address_failures,
            window_s=config.login_window_s,
            lockout_s=config.login_lockout_s,
        )

    @staticmethod
    def _keys(account: str | None, address: str | None) -> list[tuple[Scope, str]]:
        keys: list[tuple[Scope, str]] = []
        if address:
            keys.append(("address", address))
        if account is not None:
            keys.append(("account", username_key(account)[:MAX_ACCOUNT_KEY_CHARS]))
        return keys

    def locked(self, account: str | None, address: str | None) -> Lockout | None:
        """The longest lockout now in force for this account or address, if any."""
        now = self.clock()
        with self._lock:
            found = [
                Lockout(scope, c.locked_until - now)
                for scope, key in self._keys(account, address)
                if (c := self._counters.get((scope, key))) is not None and c.locked_until > now
            ]
        return max(found, key=lambda lk: lk.seconds, default=None)

    def failed(self, account: str | None, address: str | None) -> list[tuple[Lockout, int]]:
        """Count one failure for both; the lockouts it starts, each with the failures counted."""
        now = self.clock()
        started: list[tuple[Lockout, int]] = []
        with self._lock:
            if len(self._counters) >= PRUNE_AT_COUNTERS:
                self._prune(now)
            for scope, key in self._keys(account, address):
                c = self._counters.setdefault((scope, key), _Counter())
                if c.locked_until > now:
                    continue  # already locked: the lockout is not extended
                while c.failures and c.failures[0] <= now - self.window_s:
                    c.failures.popleft()
                c.failures.append(now)
                if len(c.failures) >= self.limits[scope]:
                    started.append((Lockout(scope, self.lockout_s), len(c.failures)))
                    c.locked_until = now + self.lockout_s
                    c.failures.clear()
        return started

    def succeeded(self, account: str) -> None:
        """A successful login clears its account's failures (never its address's)."""
        with self._lock:
            self._counters.pop(("account", username_key(account)[:MAX_ACCOUNT_KEY_CHARS]), None)

    def _prune(self, now: float) -> None:
        for key, c in list(self._counters.items()):
            if c.locked_until <= now and (not c.failures or c.failures[-1] <= now - self.window_s):
                del self._counters[key]


# --- one login attempt, from the middleware to Auth.check_login ---------------------------------


@dataclass
class LoginAttempt:
    """The request context of one `POST /login`: where it came from, and what was decided.

    `SessionGuard` creates it; `Auth.check_login` (which Gradio calls with only the username
    and password) reads it through `login_attempt()` and records a lockout in it, which the
    guard then answers instead of Gradio's "incorrect credentials".
    """

    throttle: LoginThrottle | None
    address: str | None
    lockout: Lockout | None = None

    @property
    def audit_detail(self) -> dict:
        return {"address": self.address} if self.address else {}

    def refused(self, db: Database, username: str) -> bool:
        """Whether this login is refused unchecked: its account or address is locked (the
        attempt then counts against the address: hammering a locked account is not free).

        Without a guard in front of the app (`throttle` None) every login is refused: the
        throttle must not be bypassed by a wiring mistake.
        """
        if self.throttle is None:
            logger.error("login refused: no SessionGuard in front of the app (app.server)")
            return True
        self.lockout = self.throttle.locked(username, self.address)
        if self.lockout is not None:
            self._failed(db, None)
        return self.lockout is not None

    def finished(self, db: Database, username: str, user: UserRecord | None) -> None:
        """After the password check: clear the account's count, or count the failure."""
        assert self.throttle is not None
        if user is not None:
            self.throttle.succeeded(username)
        else:
            self._failed(db, username)

    def _failed(self, db: Database, username: str | None) -> None:
        """Count a failure (for the account too, when given); audit any lockout it starts."""
        assert self.throttle is not None
        for lockout, failures in self.throttle.failed(username, self.address):
            self.lockout = lockout
            locked = (
                get_user_by_name(db, username) if username and lockout.scope == "account" else None
            )
            record_audit(
                db, "login.lockout", user_id=locked.id if locked else None, outcome="denied",
                detail={"scope": lockout.scope, "failures": failures,
                        "lockout_s": int(lockout.seconds), **self.audit_detail},
            )  # fmt: skip
            logger.warning(
                "login locked: {} after {} failures, for {} s (address {})",
                lockout.scope, failures, int(lockout.seconds), self.address,
            )  # fmt: skip


_ATTEMPT: contextvars.ContextVar[LoginAttempt | None] = contextvars.ContextVar(
    "pulsemind_login_attempt", default=None
)


@contextmanager
def attempting(attempt: LoginAttempt) -> Iterator[LoginAttempt]:
    """Make `attempt` the current login attempt (for `login_attempt()`) within the block."""
    reset = _ATTEMPT.set(attempt)
    try:
        yield attempt
    finally:
        _ATTEMPT.reset(reset)


def login_attempt() -> LoginAttempt:
    """The current `POST /login`'s attempt (one that refuses everything outside SessionGuard)."""
    return _ATTEMPT.get() or LoginAttempt(throttle=None, address=None)
