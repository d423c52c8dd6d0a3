"""Where members come from: named invite links, join attribution, referrals and their points.

- `invite_link`: every link this bot created — operators' named links for a channel of
  acquisition (`/invite poster`) and members' own links (`/myinvite`, `referrer_id` set).
- `join_source`: one row per recorded join (the joins the KPIs count, `bot.activity.record_join`),
  keyed (chat, user, joined_at), saying where it came from: one of our links, another link,
  an addition by a member, or direct/unknown; `left_at` closes it when that stay ends.
- `invite_join_request`: the link of a pending join request, so the join that follows the
  approval is attributed to it even when the chat_member update does not name the link.
- `referral_credit`: a referred member who stayed 7 days (see `settle_referrals`), once per
  referred member ever (primary key); the points go through the ledger with the same key.

Every figure here comes from these rows, the roster and the daily rollups; nothing scans
message history.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    UniqueConstraint,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from bot import points
from bot.activity import MASK_DAYS, SAME_EVENT_WINDOW
from bot.dashboard import register_panel
from bot.db import UTCDateTime, insert_for, prepared
from bot.digest import DigestContext, register_section
from bot.driver_session import Executor
from bot.i18n import t
from bot.kpi import ACTIVE, DA, local_today
from bot.models import Chat, Member, chat_fk, utc_column
from bot.text import escape, utf16_len
from bot.timeparse import parse_duration

MAX_NAME = 32  # Telegram: invite link names are 0-32 characters
MAX_LIMIT = 99_999  # Telegram: member_limit 1-99999
MAX_EXPIRY = timedelta(days=366)
STAY = timedelta(days=7)  # a referred member counts once they stayed this long (and were active)
RETENTION_SPAN = 7  # D7: active on any of the 7 days after the join day
STILL_ACTIVE_DAYS = 7  # "still active": a member now, active on one of the last 7 days
REFERRAL_SOURCE = "referral"  # points ledger source; key f"invitee:{user_id}"

# join_source.source
LINK = "link"  # one of our links (link_id set; a member's own link when referrer_id is set)
OTHER = "other"  # an invite link this bot did not create (or no longer knows)
ADDED = "added"  # added by another member
DIRECT = "direct"  # no link: public username, the service message alone, a request without link


# --- tables ---------------------------------------------------------------------------------


class InviteLink(SQLModel, table=True):
    """A link this bot created: an operator's named link, or a member's own referral link."""

    __tablename__ = "invite_link"
    __table_args__ = (
        UniqueConstraint("chat_id", "name", name="uq_invite_link_chat_name"),
        UniqueConstraint("chat_id", "referrer_id", name="uq_invite_link_chat_referrer"),
        UniqueConstraint("url", name="uq_invite_link_url"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    chat_id: int = Field(sa_column=chat_fk())
    name: str | None = Field(default=None, max_length=MAX_NAME)  # None for a member's own link
    referrer_id: int | None = Field(default=None, sa_type=BigInteger)  # the member it is for
    url: str = Field(max_length=255)
    creator_id: int | None = Field(default=None, sa_type=BigInteger)
    member_limit: int | None = Field(default=None)
    expire_date: datetime | None = Field(default=None, sa_column=utc_column())
    creates_join_request: bool = Field(default=False)
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=utc_column())


def _link_fk() -> Column:
    return Column(
        "link_id", BigInteger, ForeignKey("invite_link.id", ondelete="SET NULL"), nullable=True
    )


class JoinSource(SQLModel, table=True):
    """Where one recorded join came from (one row per join the KPIs count)."""

    __tablename__ = "join_source"
    __table_args__ = (
        Index("ix_join_source_chat_day", "chat_id", "day"),
        Index("ix_join_source_link", "link_id"),
        # Referral joins waiting for their 7 days: few, found without scanning all joins.
        Index(
            "ix_join_source_pending",
            "joined_at",
            sqlite_where=text("referral_state = 'pending'"),
            postgresql_where=text("referral_state = 'pending'"),
        ),
    )

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    user_id: int = Field(sa_type=BigInteger, primary_key=True)
    joined_at: datetime = Field(sa_column=Column("joined_at", UTCDateTime(), primary_key=True))
    day: date  # the chat-local day of the join (the KPI join day)
    source: str = Field(max_length=16)
    link_id: int | None = Field(default=None, sa_column=_link_fk())
    link_name: str | None = Field(default=None, max_length=MAX_NAME)  # another link's name
    via_request: bool = Field(default=False)
    referrer_id: int | None = Field(default=None, sa_type=BigInteger)
    # None: not a referral; pending → credited | not_qualified | duplicate (credited before)
    referral_state: str | None = Field(default=None, max_length=16)
    left_at: datetime | None = Field(default=None, sa_column=utc_column())


class InviteJoinRequest(SQLModel, table=True):
    """A member's pending join request and the link it came through (latest request wins)."""

    __tablename__ = "invite_join_request"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    user_id: int = Field(sa_type=BigInteger, primary_key=True)
    source: str = Field(max_length=16)
    link_id: int | None = Field(default=None, sa_column=_link_fk())
    link_name: str | None = Field(default=None, max_length=MAX_NAME)
    requested_at: datetime = Field(sa_column=utc_column(nullable=False))


class ReferralCredit(SQLModel, table=True):
    """A referred member who stayed: at most one row per (chat, referred member), ever."""

    __tablename__ = "referral_credit"
    __table_args__ = (Index("ix_referral_credit_referrer", "chat_id", "referrer_id"),)

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    user_id: int = Field(sa_type=BigInteger, primary_key=True)  # the referred member
    referrer_id: int = Field(sa_type=BigInteger)
    joined_at: datetime = Field(sa_column=utc_column(nullable=False))
    credited_at: datetime = Field(sa_column=utc_column(nullable=False))
    points: int = Field(default=0)  # awarded with it (0: points were off)


class InviteSettings(SQLModel, table=True):
    """Per-group referral settings."""

    __tablename__ = "invite_settings"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    referral_points: int = Field(default=0)  # 0 = off


LINKS = InviteLink.__table__  # type: ignore[attr-defined]
SOURCES = JoinSource.__table__  # type: ignore[attr-defined]
REQUESTS = InviteJoinRequest.__table__  # type: ignore[attr-defined]
CREDITS = ReferralCredit.__table__  # type: ignore[attr-defined]
SETTINGS = InviteSettings.__table__  # type: ignore[attr-defined]


def _insert(session: AsyncSession, table: Any) -> Any:
    return insert_for(session.get_bind().dialect.name, table)


# --- /invite arguments ------------------------------------------------------------------------


class InviteArgsError(ValueError):
    """What is wrong with /invite's arguments: a translation key and its values."""

    def __init__(self, key: str, **values: Any) -> None:
        super().__init__(key)
        self.key = key
        self.values = values


@dataclass(frozen=True, slots=True)
class InviteSpec:
    """A parsed `/invite NAME [limit N] [expires 7d] [approval]`."""

    name: str
    member_limit: int | None = None
    expires_in: timedelta | None = None
    approval: bool = False


@dataclass(frozen=True, slots=True)
class RevokeSpec:
    name: str


LIMIT_WORDS = {"limit", "限额", "名额"}
EXPIRES_WORDS = {"expires", "expire", "有效期"}
APPROVAL_WORDS = {"approval", "审核"}
REVOKE_WORDS = {"revoke", "撤销"}


def check_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise InviteArgsError("invites.err_no_name")
    if utf16_len(name) > MAX_NAME:
        raise InviteArgsError("invites.err_name_long", max=MAX_NAME, length=utf16_len(name))
    return name


def parse_invite_args(raw: str) -> InviteSpec | RevokeSpec:
    """`poster limit 100 expires 7d`, `"KOL Anna" approval`, `revoke poster`.

    The name is the first word, or a quoted phrase; options follow in any order.
    """
    try:
        words = shlex.split(raw.replace("“", '"').replace("”", '"'))
    except ValueError as exc:
        raise InviteArgsError("invites.err_quote") from exc
    if not words:
        raise InviteArgsError("invites.err_no_name")
    if words[0].lower() in REVOKE_WORDS:
        if len(words) != 2:
            raise InviteArgsError("invites.err_revoke")
        return RevokeSpec(check_name(words[1]))
    name = check_name(words[0])
    if name.lower() in LIMIT_WORDS | EXPIRES_WORDS | APPROVAL_WORDS:
        raise InviteArgsError("invites.err_no_name")
    limit: int | None = None
    expires: timedelta | None = None
    approval = False
    rest = words[1:]
    while rest:
        word = rest.pop(0).lower()
        if word in APPROVAL_WORDS:
            approval = True
        elif word in LIMIT_WORDS:
            value = rest.pop(0) if rest else ""
            if not value.isdecimal() or not 1 <= int(value) <= MAX_LIMIT:
                raise InviteArgsError("invites.err_limit", value=value, max=MAX_LIMIT)
            limit = int(value)
        elif word in EXPIRES_WORDS:
            value = rest.pop(0) if rest else ""
            expires = parse_duration(value)
            if expires is None or not timedelta(minutes=1) <= expires <= MAX_EXPIRY:
                raise InviteArgsError("invites.err_expires", value=value)
        else:
            raise InviteArgsError("invites.err_word", word=word)
    if approval and limit is not None:
        raise InviteArgsError("invites.err_limit_approval")
    return InviteSpec(name, limit, expires, approval)


def referral_link_name(display_name: str) -> str:
    """The Telegram-side name of a member's own link (admins see it), cut to 32 units."""
    name = "ref " + " ".join(display_name.split())
    while utf16_len(name) > MAX_NAME:
        name = name[:-1]
    return name


# --- links ------------------------------------------------------------------------------------


async def link_by_name(session: AsyncSession, chat_id: int, name: str) -> InviteLink | None:
    return (
        await session.scalars(
            select(InviteLink).where(InviteLink.chat_id == chat_id, InviteLink.name == name)
        )
    ).first()


async def referral_link(session: AsyncSession, chat_id: int, user_id: int) -> InviteLink | None:
    return (
        await session.scalars(
            select(InviteLink).where(
                InviteLink.chat_id == chat_id, InviteLink.referrer_id == user_id
            )
        )
    ).first()


async def save_link(session: AsyncSession, link: InviteLink) -> bool:
    """Store a link Telegram created; False if its name (or member) was taken meanwhile."""
    values = {c.name: getattr(link, c.name) for c in LINKS.columns if c.name != "id"}
    result = await session.execute(
        _insert(session, LINKS).values(**values).on_conflict_do_nothing()
    )
    return bool(result.rowcount)


async def mark_revoked(session: AsyncSession, link_id: int, now: datetime) -> None:
    await session.execute(
        update(LINKS).where(LINKS.c.id == link_id, LINKS.c.revoked_at.is_(None)),
        {"revoked_at": now},
    )


async def own_links_of_pseudonyms(
    session: AsyncSession, pseudonyms: dict[int, int]
) -> list[InviteLink]:
    """Members' own links still valid whose owner was erased (chat → pseudonym, bot.privacy):
    Telegram keeps them, named for the member ("ref <name>"), until they are revoked."""
    found: list[InviteLink] = []
    for chat_id, pseudonym in pseudonyms.items():
        found.extend(
            await session.scalars(
                select(InviteLink).where(
                    InviteLink.chat_id == chat_id,
                    InviteLink.referrer_id == pseudonym,
                    InviteLink.revoked_at.is_(None),  # type: ignore[union-attr]
                )
            )
        )
    return found


async def campaign_links(session: AsyncSession, chat_id: int) -> list[InviteLink]:
    """The operators' named links, oldest first."""
    return list(
        await session.scalars(
            select(InviteLink)
            .where(InviteLink.chat_id == chat_id, InviteLink.referrer_id.is_(None))
            .order_by(InviteLink.created_at, InviteLink.id)
        )
    )


# --- attribution ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinVia:
    """What a join report says about how the member came in (None fields: it does not say)."""

    url: str | None = None  # ChatInviteLink.invite_link
    link_name: str | None = None
    via_request: bool = False
    added_by: int | None = None  # another member who added them


@dataclass(slots=True)
class _Resolved:
    source: str
    link_id: int | None = None
    link_name: str | None = None
    referrer_id: int | None = None


async def _resolve_url(
    session: Executor, chat_id: int, url: str | None, name: str | None
) -> _Resolved:
    links = InviteLink.__table__.c  # type: ignore[attr-defined]
    link = (
        await session.execute(
            select(links.id, links.referrer_id).where(links.chat_id == chat_id, links.url == url)
        )
    ).first()
    if link is None:
        return _Resolved(OTHER, link_name=(name or None) and name[:MAX_NAME])
    return _Resolved(LINK, link.id, None, link.referrer_id)


async def note_join_request(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    url: str | None,
    name: str | None,
    when: datetime,
) -> None:
    """Remember which link a join request came through (a later request replaces it)."""
    resolved = await _resolve_url(session, chat_id, url, name) if url else _Resolved(DIRECT)
    row = {
        "chat_id": chat_id,
        "user_id": user_id,
        "source": resolved.source,
        "link_id": resolved.link_id,
        "link_name": resolved.link_name,
        "requested_at": when,
    }
    stmt = _insert(session, REQUESTS).values(**row)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["chat_id", "user_id"],
            set_={k: stmt.excluded[k] for k in ("source", "link_id", "link_name", "requested_at")},
        )
    )


def _request(dialect: str) -> Any:
    return (
        select(
            REQUESTS.c.requested_at,
            REQUESTS.c.source,
            REQUESTS.c.link_id,
            REQUESTS.c.link_name,
            LINKS.c.referrer_id,
        )
        .select_from(REQUESTS.outerjoin(LINKS, LINKS.c.id == REQUESTS.c.link_id))
        .where(REQUESTS.c.chat_id == bindparam("chat"), REQUESTS.c.user_id == bindparam("user"))
    )


def _drop_request(dialect: str) -> Any:
    return delete(REQUESTS).where(
        REQUESTS.c.chat_id == bindparam("chat"), REQUESTS.c.user_id == bindparam("user")
    )


def _insert_source(dialect: str) -> Any:
    columns = (
        "chat_id",
        "user_id",
        "joined_at",
        "day",
        "source",
        "link_id",
        "link_name",
        "via_request",
        "referrer_id",
        "referral_state",
    )
    return (
        insert_for(dialect, SOURCES)
        .values({name: bindparam(name) for name in columns} | {"left_at": None})
        .on_conflict_do_nothing()
    )


async def _take_request(
    session: AsyncSession, chat_id: int, user_id: int, when: datetime
) -> _Resolved | None:
    """The pending request's link for a join at `when` (consumed: one join per request).

    Prepared statements: this runs in every join (mostly finding nothing).
    """
    key = {"chat": chat_id, "user": user_id}
    request = (await session.execute(prepared(session, "invites.request", _request), key)).first()
    if request is None or request.requested_at > when + SAME_EVENT_WINDOW:
        return None
    await session.execute(prepared(session, "invites.drop_request", _drop_request), key)
    return _Resolved(request.source, request.link_id, request.link_name, request.referrer_id)


def _joined_at(dialect: str) -> Any:
    member = Member.__table__.c  # type: ignore[attr-defined]
    return select(member.joined_at).where(
        member.chat_id == bindparam("chat"), member.user_id == bindparam("user")
    )


async def attribute_join(
    session: Executor,
    *,
    chat_id: int,
    user_id: int,
    when: datetime,
    day: date,
    recorded: bool,
    via: JoinVia,
) -> None:
    """Record where a join came from, in the transaction that recorded the join.

    `recorded` is `record_join`'s answer: True for a new join (a new row), False for a
    second report of the same join — which may know more (the chat_member update names the
    link, the service message does not), so a direct/unknown or "added" row is upgraded.
    Precedence: the link the report names; else the link of the member's pending join
    request (consumed); else "added" when someone else added them; else direct/unknown.
    """
    current: datetime = when
    if not recorded:
        joined_at = await session.scalar(
            prepared(session, "invites.joined_at", _joined_at), {"chat": chat_id, "user": user_id}
        )
        if joined_at is None or abs(joined_at - when) > SAME_EVENT_WINDOW:
            return  # not the member's current join: a stale report
        current = joined_at
    request = await _take_request(session, chat_id, user_id, when)
    resolved: _Resolved | None = request
    if via.url:  # the link Telegram names wins over the request's
        resolved = await _resolve_url(session, chat_id, via.url, via.link_name)
    if resolved is None and via.added_by and via.added_by != user_id:
        resolved = _Resolved(ADDED)
    via_request = request is not None or via.via_request
    if recorded:
        resolved = resolved or _Resolved(DIRECT)
        row = {
            "chat_id": chat_id,
            "user_id": user_id,
            "joined_at": when,
            "day": day,
            "source": resolved.source,
            "link_id": resolved.link_id,
            "link_name": resolved.link_name,
            "via_request": via_request,
            "referrer_id": resolved.referrer_id,
            "referral_state": _referral_state(resolved, user_id),
        }
        await session.execute(prepared(session, "invites.insert_source", _insert_source), row)
        return
    if resolved is None or resolved.source == DIRECT:
        return
    await session.execute(
        update(SOURCES)
        .where(
            SOURCES.c.chat_id == chat_id,
            SOURCES.c.user_id == user_id,
            SOURCES.c.joined_at == current,
            SOURCES.c.source.in_((DIRECT, ADDED) if resolved.source != ADDED else (DIRECT,)),
        )
        .values(
            source=resolved.source,
            link_id=resolved.link_id,
            link_name=resolved.link_name,
            referrer_id=resolved.referrer_id,
            referral_state=_referral_state(resolved, user_id),
            **({"via_request": True} if via_request else {}),
        )
    )


def _referral_state(resolved: _Resolved, user_id: int) -> str | None:
    if resolved.referrer_id is None or resolved.referrer_id == user_id:
        return None  # not a referral (or one's own link: no credit)
    return "pending"


def _close_stay(dialect: str) -> Any:
    return (
        update(SOURCES)
        .where(
            SOURCES.c.chat_id == bindparam("chat"),
            SOURCES.c.user_id == bindparam("user"),
            SOURCES.c.left_at.is_(None),
            SOURCES.c.joined_at <= bindparam("when"),
        )
        .values(left_at=bindparam("when"))
    )


async def note_leave(session: AsyncSession, *, chat_id: int, user_id: int, when: datetime) -> None:
    """Close the member's open stay (the leave that `record_leave` recorded)."""
    await session.execute(
        prepared(session, "invites.close_stay", _close_stay),
        {"chat": chat_id, "user": user_id, "when": when},
    )


# --- referrals --------------------------------------------------------------------------------


async def referral_points(session: AsyncSession, chat_id: int) -> int:
    row = await session.get(InviteSettings, chat_id)
    return row.referral_points if row else 0


async def set_referral_points(session: AsyncSession, chat_id: int, amount: int) -> None:
    stmt = _insert(session, SETTINGS).values(chat_id=chat_id, referral_points=amount)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["chat_id"], set_={"referral_points": stmt.excluded.referral_points}
        )
    )


@dataclass(frozen=True, slots=True)
class Credit:
    chat_id: int
    user_id: int
    referrer_id: int
    points: int


def referral_due(joined_at: datetime, day: date, now: datetime, tz: ZoneInfo) -> bool:
    """A referral is judged once 7 days have passed and its D7 window (J+1..J+7) is over."""
    return now >= joined_at + STAY and local_today(now, tz) > day + timedelta(days=RETENTION_SPAN)


async def settle_referrals(
    session: AsyncSession, *, now: datetime, chat_id: int | None = None, limit: int = 500
) -> list[Credit]:
    """Judge the referral joins whose 7 days are over, each exactly once.

    A referred member counts (credit + points, if on) when, for that join, they stayed in the
    group for 7 days (no leave within 7×24 h) and were active (DESIGN §4) on at least one of
    the 7 chat-local days after the join day — the D7 retention window. Each pending row is
    claimed with a conditional UPDATE; the credit's primary key (chat, referred member) and
    the ledger's key `invitee:<user>` make it once per referred member ever, whatever replays,
    rejoins or concurrent processes do.
    """
    query = (
        select(JoinSource, Chat.timezone)
        .join(Chat, Chat.id == JoinSource.chat_id)
        .where(JoinSource.referral_state == "pending", JoinSource.joined_at <= now - STAY)
        .order_by(JoinSource.joined_at)
        .limit(limit)
    )
    if chat_id is not None:
        query = query.where(JoinSource.chat_id == chat_id)
    credits: list[Credit] = []
    for row, tz_name in (await session.execute(query)).all():
        if not referral_due(row.joined_at, row.day, now, ZoneInfo(tz_name)):
            continue
        stayed = row.left_at is None or row.left_at >= row.joined_at + STAY
        active = stayed and bool(
            await session.scalar(
                select(DA.user_id)
                .where(
                    DA.chat_id == row.chat_id,
                    DA.user_id == row.user_id,
                    DA.day > row.day,
                    DA.day <= row.day + timedelta(days=RETENTION_SPAN),
                    ACTIVE,
                )
                .limit(1)
            )
        )
        state = "not_qualified"
        if active:
            inserted = await session.execute(
                _insert(session, CREDITS)
                .values(
                    chat_id=row.chat_id,
                    user_id=row.user_id,
                    referrer_id=row.referrer_id,
                    joined_at=row.joined_at,
                    credited_at=now,
                    points=0,
                )
                .on_conflict_do_nothing()
            )
            state = "credited" if inserted.rowcount else "duplicate"
        claimed = await session.execute(
            update(SOURCES)
            .where(
                SOURCES.c.chat_id == row.chat_id,
                SOURCES.c.user_id == row.user_id,
                SOURCES.c.joined_at == row.joined_at,
                SOURCES.c.referral_state == "pending",
            )
            .values(referral_state=state)
        )
        if not claimed.rowcount or state != "credited":
            continue
        assert row.referrer_id is not None
        amount = await referral_points(session, row.chat_id)
        if amount > 0 and await points.award(
            session,
            chat_id=row.chat_id,
            user_id=row.referrer_id,
            amount=amount,
            reason="referral",
            source=REFERRAL_SOURCE,
            source_key=f"invitee:{row.user_id}",
            now=now,
        ):
            await session.execute(
                update(CREDITS)
                .where(CREDITS.c.chat_id == row.chat_id, CREDITS.c.user_id == row.user_id)
                .values(points=amount)
            )
        else:
            amount = 0
        credits.append(Credit(row.chat_id, row.user_id, row.referrer_id, amount))
    return credits


@dataclass(frozen=True, slots=True)
class Referrer:
    user_id: int
    stayed: int  # referred members credited (stayed 7 days and active)
    joined: int  # referred joins through their link, any outcome


async def top_referrers(session: AsyncSession, chat_id: int, limit: int = 10) -> list[Referrer]:
    """Members by referred joiners who stayed (credits); ties by who got there first."""
    credited = await session.execute(
        select(CREDITS.c.referrer_id, func.count(), func.max(CREDITS.c.credited_at))
        .where(CREDITS.c.chat_id == chat_id)
        .group_by(CREDITS.c.referrer_id)
    )
    joins = dict(
        (
            await session.execute(
                select(SOURCES.c.referrer_id, func.count(func.distinct(SOURCES.c.user_id)))
                .where(SOURCES.c.chat_id == chat_id, SOURCES.c.referral_state.is_not(None))
                .group_by(SOURCES.c.referrer_id)
            )
        ).all()
    )
    rows = sorted(credited.all(), key=lambda r: (-r[1], r[2], r[0]))
    return [Referrer(int(u), int(n), int(joins.get(u, n))) for u, n, _ in rows[:limit]]


# --- joins by source ---------------------------------------------------------------------------


@dataclass(slots=True)
class SourceStats:
    """Joins of one source over a period, their D7 retention and how many are still active."""

    key: str  # link:<name> | referral | other | added | direct
    name: str | None = None  # the link's name for link:<name>
    joins: int = 0
    measurable: int = 0  # joins whose D7 window is over
    retained: int = 0  # of those, active on any day J+1..J+7
    joiners: set[int] = field(default_factory=set)
    still_active: int = 0  # distinct joiners in the group now and active in the last 7 days

    @property
    def retention_d7(self) -> float | None:
        return self.retained / self.measurable if self.measurable else None

    @property
    def still_active_share(self) -> float | None:
        return self.still_active / len(self.joiners) if self.joiners else None

    def as_dict(self, total: int) -> dict[str, Any]:
        return {
            "source": self.key,
            "joins": self.joins,
            "share": self.joins / total if total else None,
            "retention_d7": self.retention_d7,
            "d7_measurable": self.measurable,
            "joiners": len(self.joiners),
            "still_active": self.still_active,
            "still_active_share": self.still_active_share,
        }


ORDER = {LINK: 0, REFERRAL_SOURCE: 1, OTHER: 2, ADDED: 3, DIRECT: 4}


async def joins_by_source(
    session: AsyncSession,
    chat_id: int,
    start: date,
    end: date,
    *,
    today: date,
    links_only: bool = False,
) -> list[SourceStats]:
    """Joins on chat-local days start..end by source, with D7 retention and still-active share.

    Joins are the KPI's (`daily_activity.joins`); a join without a `join_source` row (recorded
    before attribution existed) is direct/unknown, so the sources always add up to the KPI.
    D7 follows DESIGN §4 per join: measurable once day J+7 is over (J+7 < today), retained when
    active on any of J+1..J+7. "Still active": in the group now and active on one of the 7 days
    up to min(end, today). Per-source keys: `link:<name>` for each named link, `referral` for
    all members' own links, `other` (links this bot did not create), `added`, `direct`.
    `links_only`: only the named links' joins.
    """
    joined: list[tuple[int, date, str, str | None]] = []
    query = select(
        SOURCES.c.user_id, SOURCES.c.day, SOURCES.c.source, LINKS.c.name, LINKS.c.referrer_id
    ).select_from(SOURCES.outerjoin(LINKS, LINKS.c.id == SOURCES.c.link_id))
    query = query.where(SOURCES.c.chat_id == chat_id, SOURCES.c.day >= start, SOURCES.c.day <= end)
    if links_only:
        query = query.where(SOURCES.c.source == LINK, LINKS.c.referrer_id.is_(None))
    attributed: dict[tuple[int, date], int] = {}
    for user_id, day, source, name, referrer in (await session.execute(query)).all():
        if source == LINK:
            key, label = (
                (REFERRAL_SOURCE, None) if referrer is not None else (f"link:{name}", name)
            )
        else:
            key, label = source, None
        joined.append((user_id, day, key, label))
        attributed[(user_id, day)] = attributed.get((user_id, day), 0) + 1
    if not links_only:
        counted = await session.execute(
            select(DA.user_id, DA.day, DA.joins).where(
                DA.chat_id == chat_id, DA.day >= start, DA.day <= end, DA.joins > 0
            )
        )
        for user_id, day, joins in counted.all():
            for _ in range(joins - attributed.get((user_id, day), 0)):
                joined.append((user_id, day, DIRECT, None))
    if not joined:
        return []
    as_of = min(end, today)
    span = timedelta(days=RETENTION_SPAN)
    recent = (as_of - timedelta(days=STILL_ACTIVE_DAYS - 1), as_of)
    windows = [(user, day + timedelta(days=1), day + span) for user, day, _, _ in joined]
    windows += [(user, *recent) for user in {user for user, *_ in joined}]
    activity = await _activity(session, chat_id, windows, today)
    stats: dict[str, SourceStats] = {}
    for user_id, day, key, label in joined:
        entry = stats.setdefault(key, SourceStats(key, label))
        entry.joins += 1
        entry.joiners.add(user_id)
        if day + span < today:
            entry.measurable += 1
            entry.retained += activity.active(user_id, day + timedelta(days=1), day + span)
    for entry in stats.values():
        entry.still_active = sum(
            1
            for user in entry.joiners
            if user in activity.in_group and activity.active(user, *recent)
        )
    return sorted(
        stats.values(),
        key=lambda s: (ORDER.get(s.key.split(":")[0], 9), -s.joins, s.key),
    )


@dataclass(slots=True)
class _Activity:
    """Whether members were active on any day of a window, and who is in the group now."""

    states: dict[int, tuple[int, int]]  # user → (active_day ordinal, 62-day mask)
    in_group: set[int]
    old: dict[int, set[date]]  # active days from the rollups, for windows the masks don't hold

    def from_mask(self, user: int, low: date, high: date) -> bool | None:
        """The roster's answer (bit k of the mask = active on active_day - k); None when the
        window reaches further back than the mask holds."""
        state = self.states.get(user)
        if state is None:
            return False  # never active
        last, mask = state
        top = min(high.toordinal(), last)
        if low.toordinal() > top:
            return False
        if last - low.toordinal() >= MASK_DAYS:
            return None
        bits = mask >> (last - top)
        return bits & ((1 << (top - low.toordinal() + 1)) - 1) != 0

    def active(self, user: int, low: date, high: date) -> bool:
        known = self.from_mask(user, low, high)
        if known is not None:
            return known
        return any(low <= day <= high for day in self.old.get(user, ()))


async def _activity(
    session: AsyncSession, chat_id: int, windows: list[tuple[int, date, date]], today: date
) -> _Activity:
    """Roster state of the users in `windows`; rollups only for windows older than the masks."""
    users = sorted({user for user, _, _ in windows})
    result = _Activity({}, set(), {})
    for index in range(0, len(users), 500):
        chunk = users[index : index + 500]
        rows = await session.execute(
            select(Member.user_id, Member.status, Member.active_day, Member.active_mask).where(
                Member.chat_id == chat_id, Member.user_id.in_(chunk)
            )
        )
        for user_id, status, last, mask in rows.all():
            if status == "member":
                result.in_group.add(user_id)
            if last is not None:
                result.states[user_id] = (last, mask)
    old = [(u, lo, min(hi, today)) for u, lo, hi in windows if result.from_mask(u, lo, hi) is None]
    if old:
        low, high = min(lo for _, lo, _ in old), max(hi for _, _, hi in old)
        old_users = sorted({user for user, _, _ in old})
        for index in range(0, len(old_users), 500):
            rows = await session.execute(
                select(DA.user_id, DA.day).where(
                    DA.chat_id == chat_id,
                    DA.user_id.in_(old_users[index : index + 500]),
                    DA.day >= low,
                    DA.day <= high,
                    ACTIVE,
                )
            )
            for user_id, day in rows.all():
                result.old.setdefault(user_id, set()).add(day)
    return result


# --- labels and the digest section --------------------------------------------------------------


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def source_label(lang: str, stats: SourceStats) -> str:
    """HTML label of a source (link names escaped)."""
    if stats.key.startswith("link:"):
        return t(lang, "invites.source_link", name=escape(stats.name or stats.key[5:]))
    return t(lang, f"invites.source_{stats.key}")


def figures(lang: str, stats: SourceStats) -> str:
    return t(
        lang,
        "invites.figures",
        joins=stats.joins,
        d7=percent(stats.retention_d7),
        active=percent(stats.still_active_share),
    )


SECTION_DAYS = 30


async def sources_section(ctx: DigestContext) -> list[str]:
    """Digest: the joiners of the 30 days up to the report's last day, by source.

    30 days rather than the report's own period, so the D7 figures of a daily report are
    measurable (yesterday's joiners have none yet).
    """
    start = ctx.end - timedelta(days=SECTION_DAYS - 1)
    return await source_lines(
        ctx.session, ctx.chat_id, start, ctx.end, ctx.today, ctx.lang, "invites.section_title"
    )


async def source_lines(
    session: AsyncSession,
    chat_id: int,
    start: date,
    end: date,
    today: date,
    lang: str,
    title: str = "invites.section_title_period",
) -> list[str]:
    """The joins of `start`..`end` by source, a line each under `title` ([] without joins):
    /kpi's period and the digest's 30 days."""
    rows = await joins_by_source(session, chat_id, start, end, today=today)
    if not rows:
        return []
    lines = [t(lang, title, days=(end - start).days + 1)]
    lines.extend(f"• {source_label(lang, row)}: {figures(lang, row)}" for row in rows)
    return lines


register_section("sources", sources_section)


# --- the dashboard panel ------------------------------------------------------------------------

PANEL_DAYS = 30


async def sources_panel(
    session: AsyncSession, chat_id: int, today: date, tz: ZoneInfo, lang: str
) -> dict[str, Any] | None:
    """Dashboard: joins of the last 30 days (today included) per source as bars, with each
    source's share, D7 retention and share still active on hover; None without joins.

    Labels are `source_label`'s: link names (operators' text) HTML-escaped, which Plotly
    shows literally instead of reading them as its own markup."""
    start = today - timedelta(days=PANEL_DAYS - 1)
    rows = await joins_by_source(session, chat_id, start, today, today=today)
    if not rows:
        return None
    total = sum(row.joins for row in rows)
    return {
        "data": [
            {
                "type": "bar",
                "name": t(lang, "invites.panel_joins"),
                "x": [source_label(lang, row) for row in rows],
                "y": [row.joins for row in rows],
                "customdata": [
                    [
                        percent(row.joins / total),
                        percent(row.retention_d7),
                        percent(row.still_active_share),
                    ]
                    for row in rows
                ],
                "hovertemplate": t(lang, "invites.panel_hover") + "<extra></extra>",
                "texttemplate": "%{customdata[1]} · %{customdata[2]}",
                "textposition": "auto",
            }
        ],
        "layout": {
            "title": {"text": t(lang, "invites.panel_title", days=PANEL_DAYS)},
            "height": 320,
            "margin": {"l": 50, "r": 20, "t": 50, "b": 80},
            "xaxis": {"type": "category"},
            "yaxis": {
                "rangemode": "tozero",
                "title": {"text": t(lang, "invites.panel_joins")},
                **({"dtick": 1} if max(row.joins for row in rows) <= 10 else {}),
            },
        },
    }


register_panel("sources", sources_panel, order=30)
