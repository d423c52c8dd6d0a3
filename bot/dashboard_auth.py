"""Who is asking the dashboard: Telegram Mini App `initData`, one-time sign-in links, sessions.

- Mini App: every request carries Telegram's signed `initData` (header
  `Authorization: tma <initData>`), checked exactly as Telegram documents it
  (core.telegram.org/bots/webapps#validating-data-received-via-the-mini-app):
  secret_key = HMAC_SHA256(key="WebAppData", msg=bot_token); hash = hex
  HMAC_SHA256(key=secret_key, msg=data_check_string), where data_check_string is every field
  but `hash`, as `key=value`, sorted by key, joined by "\\n". Older than `INIT_DATA_MAX_AGE`:
  refused.
- Browser: /dashboard sends a link with a random token; the database keeps only its SHA-256
  (so any process can redeem it), it expires after `LOGIN_TTL`, and a conditional UPDATE
  (`used_at IS NULL AND expires_at > now`) makes it single-use whatever the races. Redeeming
  it sets a session cookie: `user.expiry.nonce.signature`, HMAC-signed with a key derived
  from the bot token, so no session table is needed and a forged or stale cookie is refused.
- CSRF: the only writes (approve/reject) carry a token = HMAC(key, session id) in the form.

Authentication says who; whether they may see a group is `OperatorCheck`'s answer, asked on
every request by the web layer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qsl

from sqlalchemy import BigInteger, delete, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel, select

from bot.models import utc_column

INIT_DATA_MAX_AGE = timedelta(hours=1)
LOGIN_TTL = timedelta(minutes=10)
SESSION_TTL = timedelta(hours=12)
SESSION_COOKIE = "dashboard_session"


class DashboardLogin(SQLModel, table=True):
    """A one-time browser sign-in link: only the token's hash is stored."""

    __tablename__ = "dashboard_login"

    token_hash: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(sa_type=BigInteger)
    chat_id: int | None = Field(default=None, sa_type=BigInteger)  # the group to open first
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    expires_at: datetime = Field(sa_column=utc_column(nullable=False, index=True))
    used_at: datetime | None = Field(default=None, sa_column=utc_column())


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated person; `session` identifies the sign-in (for CSRF tokens)."""

    user_id: int
    language_code: str | None
    session: str
    via: str  # "webapp" | "cookie"


# --- Mini App initData ---------------------------------------------------------------------


def webapp_secret(bot_token: str) -> bytes:
    return hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()


def sign_init_data(fields: dict[str, str], bot_token: str) -> str:
    """initData as Telegram would build it (for tests and the browser test)."""
    from urllib.parse import urlencode

    check = "\n".join(f"{k}={v}" for k, v in sorted(fields.items()))
    digest = hmac.new(webapp_secret(bot_token), check.encode(), hashlib.sha256).hexdigest()
    return urlencode({**fields, "hash": digest})


def validate_init_data(init_data: str, bot_token: str, *, now: datetime) -> Identity | None:
    """The user of a valid, fresh initData; None for anything forged, stale or malformed."""
    try:
        pairs = parse_qsl(init_data, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        return None  # a repeated key: ambiguous, refuse
    received = fields.pop("hash", "")
    check = "\n".join(f"{k}={v}" for k, v in sorted(fields.items()))
    expected = hmac.new(webapp_secret(bot_token), check.encode(), hashlib.sha256).hexdigest()
    if not received or not hmac.compare_digest(expected, received):
        return None
    try:
        auth_date = int(fields["auth_date"])
        user = json.loads(fields["user"])
        user_id = int(user["id"])
    except (KeyError, ValueError, TypeError):
        return None
    age = now.timestamp() - auth_date
    if age > INIT_DATA_MAX_AGE.total_seconds() or age < -300:
        return None
    code = user.get("language_code")
    return Identity(user_id, code if isinstance(code, str) else None, f"tma:{received}", "webapp")


# --- sessions ------------------------------------------------------------------------------


def _session_key(bot_token: str) -> bytes:
    return hmac.new(b"DashboardSession", bot_token.encode(), hashlib.sha256).digest()


def _sign(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def make_session(user_id: int, bot_token: str, *, now: datetime) -> str:
    expires = int((now + SESSION_TTL).timestamp())
    payload = f"{user_id}.{expires}.{secrets.token_hex(8)}"
    return f"{payload}.{_sign(_session_key(bot_token), payload)}"


def read_session(cookie: str, bot_token: str, *, now: datetime) -> Identity | None:
    parts = cookie.split(".")
    if len(parts) != 4:
        return None
    payload, signature = ".".join(parts[:3]), parts[3]
    if not hmac.compare_digest(_sign(_session_key(bot_token), payload), signature):
        return None
    try:
        user_id, expires = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    if expires <= now.timestamp():
        return None
    return Identity(user_id, None, f"cookie:{payload}", "cookie")


def csrf_token(identity: Identity, bot_token: str) -> str:
    return _sign(_session_key(bot_token), f"csrf:{identity.session}")


def csrf_ok(identity: Identity, bot_token: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(csrf_token(identity, bot_token), token or "")


# --- one-time sign-in links ----------------------------------------------------------------


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_login(
    session: AsyncSession, *, user_id: int, chat_id: int | None, now: datetime
) -> str:
    """A new sign-in token (returned once, stored hashed)."""
    token = secrets.token_urlsafe(32)
    await session.execute(  # old links are of no use to anyone: keep the table small
        delete(DashboardLogin).where(DashboardLogin.expires_at < now - timedelta(days=1))  # type: ignore[operator]
    )
    session.add(
        DashboardLogin(
            token_hash=_hash(token),
            user_id=user_id,
            chat_id=chat_id,
            created_at=now,
            expires_at=now + LOGIN_TTL,
        )
    )
    return token


async def redeem_login(
    session: AsyncSession, token: str, *, now: datetime
) -> tuple[int, int | None] | None:
    """(user, group) of an unused, unexpired token, marking it used; else None."""
    if not token or len(token) > 100:
        return None
    digest = _hash(token)
    result = await session.execute(
        update(DashboardLogin)
        .where(
            DashboardLogin.token_hash == digest,
            DashboardLogin.used_at.is_(None),  # type: ignore[union-attr]
            DashboardLogin.expires_at > now,  # type: ignore[operator]
        )
        .values(used_at=now)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    row = (
        await session.execute(
            select(DashboardLogin.user_id, DashboardLogin.chat_id).where(
                DashboardLogin.token_hash == digest
            )
        )
    ).one()
    return int(row[0]), row[1]


# --- media of calendar posts ---------------------------------------------------------------

MEDIA_TTL = timedelta(hours=1)


def media_signature(post_id: int, expires: int, bot_token: str) -> str:
    """A capability for one post's media file, handed out only on an authorized page (an
    <img> request cannot carry the Mini App's Authorization header)."""
    return _sign(_session_key(bot_token), f"media:{post_id}:{expires}")


def media_ok(post_id: int, expires: int, signature: str, bot_token: str, *, now: datetime) -> bool:
    return expires > now.timestamp() and hmac.compare_digest(
        media_signature(post_id, expires, bot_token), signature
    )
