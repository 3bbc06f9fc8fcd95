"""User accounts: create, authenticate (argon2id), change password, list, (de)activate.

There are no default users or passwords: the first admin is made by the CLI. Usernames are
case-insensitive (stored lower-case). Passwords are hashed with argon2-cffi's
`PasswordHasher` (argon2id, RFC 9106 low-memory profile); hashes made with older
parameters are upgraded on the next successful login. A login for an unknown or inactive
user still runs one argon2 verification, so timing does not tell which usernames exist.

Hashing takes tens of milliseconds, so it happens outside database transactions (an SQLite
writer must not hold the write lock while it hashes).
"""

from __future__ import annotations

import functools
import re
import unicodedata

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from loguru import logger
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from storage.checks import as_enum
from storage.db import Database
from storage.errors import Conflict, InvalidInput, NotFound
from storage.models import USERNAME_LENGTH, User, UserRole
from storage.records import UserRecord, from_row

#: Disabling the last active admin would leave nobody to manage users.
LAST_ADMIN = ("At least one active administrator must remain; enable or add another first. / "
              "必须保留至少一名启用中的管理员；请先启用或添加另一名管理员。")  # fmt: skip

#: NIST SP 800-63B asks for at least 8; a clinical system reached over a network with
#: passwords as the only factor warrants more.
MIN_PASSWORD_LENGTH = 12
#: argon2 hashes any length, but a megabyte "password" is a cheap way to burn CPU.
MAX_PASSWORD_LENGTH = 1024
#: Letters of any script (王医生, josé), digits, '.', '_', '-'; starting with a letter or digit.
USERNAME_PATTERN = re.compile(rf"^[^\W_][\w.-]{{1,{USERNAME_LENGTH - 1}}}$")


@functools.cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    # Verified against for unknown users so that they take as long as known ones.
    return _hasher().hash("pulsemind-no-such-user")


def username_key(username: str) -> str:
    """How usernames compare: NFKC (full-width Ｗang = Wang), trimmed, case-folded."""
    return unicodedata.normalize("NFKC", username).strip().casefold()


def normalize_username(username: str) -> str:
    """The stored form of a username (`username_key`); InvalidInput if malformed."""
    if not isinstance(username, str):
        raise InvalidInput("username must be text")
    name = username_key(username)
    if not USERNAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            "username does not match the allowed pattern",
            user_message=(
                f"A username has 2 to {USERNAME_LENGTH} characters: letters, digits, '.', '_' "
                "or '-', starting with a letter or digit."
            ),
        )
    return name


def _check_password(password: str) -> None:
    if not isinstance(password, str):
        raise InvalidInput("password must be text")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"password shorter than {MIN_PASSWORD_LENGTH} characters",
            user_message=f"The password must have at least {MIN_PASSWORD_LENGTH} characters.",
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(
            f"password longer than {MAX_PASSWORD_LENGTH} characters",
            user_message=f"The password must have at most {MAX_PASSWORD_LENGTH} characters.",
        )


def _record(user: User) -> UserRecord:
    return from_row(UserRecord, user)


def create_user(
    db: Database, username: str, password: str, role: UserRole | str = UserRole.CLINICIAN
) -> UserRecord:
    """Create an active user. Conflict if the username is taken; InvalidInput if malformed."""
    name = normalize_username(username)
    user_role = as_enum(UserRole, role, "role")
    _check_password(password)
    password_hash = _hasher().hash(password)
    taken = Conflict(f"username {name!r} exists", user_message="This username is taken.")
    try:
        with db.transaction() as session:
            if session.scalar(select(User.id).where(User.username == name)) is not None:
                raise taken
            user = User(username=name, role=user_role, password_hash=password_hash, active=True)
            session.add(user)
            session.flush()
            record = _record(user)
    except IntegrityError as exc:
        # Another writer created the same name between our check and insert (PostgreSQL).
        raise taken from exc
    logger.info("created user id={} role={}", record.id, record.role.value)
    return record


def authenticate(db: Database, username: str, password: str) -> UserRecord | None:
    """The active user with this username and password, else None."""
    if not isinstance(username, str) or not isinstance(password, str):
        return None
    if len(password) > MAX_PASSWORD_LENGTH:
        return None
    name = username_key(username)
    with db.transaction(write=False) as session:
        user = session.scalar(select(User).where(User.username == name))
    if user is None or not user.active:
        try:
            _hasher().verify(_dummy_hash(), password)
        except VerificationError:
            pass  # expected: this only spends the time a real check would
        return None
    try:
        _hasher().verify(user.password_hash, password)
    except VerifyMismatchError:
        logger.info("login failed: wrong password for user id={}", user.id)
        return None
    except (VerificationError, InvalidHashError):
        logger.warning("login failed: stored hash unusable for user id={}", user.id)
        return None
    if _hasher().check_needs_rehash(user.password_hash):
        new_hash = _hasher().hash(password)
        with db.transaction() as session:
            stored = session.get(User, user.id)
            if stored is not None and stored.password_hash == user.password_hash:
                stored.password_hash = new_hash
        logger.info("rehashed password of user id={} with current parameters", user.id)
    return _record(user)


def set_password(db: Database, user_id: int, password: str) -> None:
    """Replace a user's password. NotFound if there is no such user."""
    _check_password(password)
    password_hash = _hasher().hash(password)
    with db.transaction() as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(f"user {user_id} does not exist")
        user.password_hash = password_hash
    logger.info("password changed for user id={}", user_id)


def set_user_active(db: Database, user_id: int, active: bool) -> UserRecord:
    """(De)activate a user; an inactive user cannot log in or reach any data.

    The last active admin cannot be deactivated (Conflict): the active admins' rows are locked
    first (PostgreSQL; SQLite writers are serialised by `Database`), so two admins disabling
    each other at the same moment leave one of them active.
    """
    with db.transaction() as session:
        admins = session.scalars(select(User.id).where(User.role == UserRole.ADMIN)
                                 .where(User.active.is_(True)).with_for_update()).all()  # fmt: skip
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(f"user {user_id} does not exist")
        if not active and user.role is UserRole.ADMIN and set(admins) <= {user.id}:
            raise Conflict(f"user {user_id} is the last active admin",
                           user_message=LAST_ADMIN)  # fmt: skip
        user.active = active
        record = _record(user)
    logger.info("user id={} active={}", user_id, active)
    return record


def get_user(db: Database, user_id: int) -> UserRecord:
    """The user with this id; NotFound if absent."""
    with db.transaction(write=False) as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(f"user {user_id} does not exist")
        return _record(user)


def get_user_by_name(db: Database, username: str) -> UserRecord | None:
    """The user with this username (any case), or None."""
    name = username_key(username) if isinstance(username, str) else ""
    with db.transaction(write=False) as session:
        user = session.scalar(select(User).where(User.username == name))
        return _record(user) if user is not None else None


def list_users(db: Database, *, role: UserRole | str | None = None) -> list[UserRecord]:
    """All users (or those with `role`), by username."""
    query = select(User).order_by(User.username)
    if role is not None:
        query = query.where(User.role == as_enum(UserRole, role, "role"))
    with db.transaction(write=False) as session:
        return [_record(user) for user in session.scalars(query)]


def count_users(db: Database, *, role: UserRole | str | None = None) -> int:
    """How many users exist (the app offers first-admin setup when there are none)."""
    query = select(func.count()).select_from(User)
    if role is not None:
        query = query.where(User.role == as_enum(UserRole, role, "role"))
    with db.transaction(write=False) as session:
        return session.scalar(query) or 0
