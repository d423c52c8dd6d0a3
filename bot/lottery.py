"""Lotteries (抽奖) with provably fair draws: creation, entry, the draw, rerolls, verification.

Fairness. When a lottery opens, a 32-byte secret seed is drawn from `secrets` and its
commitment `SHA-256(seed)` (hex) is published in the lottery post. At the draw the seed is
revealed. Entrants are ranked by

    HMAC-SHA256(key = seed (the 32 raw bytes), message = f"{lottery_id}:{user_id}" (ASCII))

compared as 32-byte strings (= as big-endian 256-bit numbers), lowest first, ties (never
seen in practice) by user id. Winners are the first N of that ranking who are still in the
group; members who left are skipped (and recorded as skipped); rerolls continue down the same
ranking. Entries close before the seed is revealed and the seed is fixed before the first
entry, so neither the operator nor the bot can steer the result unseen.

Exactly once. An entry is the primary key (lottery_id, user_id), inserted with ON CONFLICT DO
NOTHING, and counted by a conditional UPDATE (`… WHERE state='open'`) in the same
transaction — that UPDATE also serialises entries against the draw, whose claim is the
conditional UPDATE `state: open → drawing`. Only the process whose claim changed the row
draws and announces; after the announcement the row moves to `drawn`.

Everything here works on an AsyncSession inside the caller's transaction, with the clock,
the seed and the time zone passed in, so it is tested without Telegram.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from bot import points
from bot.activity import local_day, mark_participation
from bot.cluster import claimed_by_stopped_process
from bot.db import insert_for, prepared
from bot.models import DailyActivity, Member, chat_fk, utc_column
from bot.timeparse import local_to_utc, parse_date, parse_duration, parse_when

# --- limits ----------------------------------------------------------------------------------

MAX_PRIZE = 255  # as in the content calendar's lottery posts
MAX_WINNERS = 100
MAX_DRAW_ENTRIES = 100_000
MAX_HORIZON = timedelta(days=366)
MIN_LEAD = timedelta(minutes=1)
MAX_CHECKIN_DAYS = 90
MAX_MIN_POINTS = 1_000_000_000
MAX_KEYWORD = 32
MAX_REROLL = 100
SEED_BYTES = 32
LEFT_STATUSES = frozenset({"left", "kicked"})


class State(StrEnum):
    OPEN = "open"  # taking entries
    DRAWING = "drawing"  # claimed by one process: winners chosen, announcement under way
    DRAWN = "drawn"  # announced
    CANCELLED = "cancelled"


# --- tables ----------------------------------------------------------------------------------


class Lottery(SQLModel, table=True):
    """One lottery of one group: what is won, when it draws, who may enter, its secret."""

    __tablename__ = "lottery"
    __table_args__ = (
        Index("ix_lottery_state_draw_at", "state", "draw_at"),
        Index("ix_lottery_chat_state", "chat_id", "state"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    chat_id: int = Field(sa_column=chat_fk())
    prize: str = Field(max_length=MAX_PRIZE)
    winners: int = Field(default=1)
    state: str = Field(default=State.OPEN.value, max_length=16)
    # When it draws: at a time, when `draw_entries` members have entered, or whichever first.
    draw_at: datetime | None = Field(default=None, sa_column=utc_column())
    draw_entries: int | None = Field(default=None)
    # Conditions (None: no such condition).
    min_points: int | None = Field(default=None)
    checkins_needed: int | None = Field(default=None)  # checked in on K …
    checkins_days: int | None = Field(default=None)  # … of the last D chat-local days
    member_seconds: int | None = Field(default=None)  # in the group for at least this long
    joined_after: datetime | None = Field(default=None, sa_column=utc_column())
    keyword: str | None = Field(default=None, max_length=MAX_KEYWORD)  # normalised 口令
    # Fairness: the seed stays secret while the lottery is open; the commitment is public.
    seed: str = Field(max_length=SEED_BYTES * 2)  # hex
    commitment: str = Field(max_length=64)  # SHA-256(seed bytes), hex
    entry_count: int = Field(default=0)
    shown_count: int = Field(default=0)  # the count the post shows (debounced edits)
    count_edited_at: datetime | None = Field(default=None, sa_column=utc_column())
    cursor: int = Field(default=0)  # ranking positions the draw and rerolls have used
    rerolls: int = Field(default=0)
    message_id: int | None = Field(default=None, sa_type=BigInteger)  # the lottery post
    announcement_id: int | None = Field(default=None, sa_type=BigInteger)
    created_by: int | None = Field(default=None, sa_type=BigInteger)
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    claimed_at: datetime | None = Field(default=None, sa_column=utc_column())
    claimed_by: str | None = Field(default=None, max_length=64)  # the drawing process
    drawn_at: datetime | None = Field(default=None, sa_column=utc_column())
    # Set while the announcement is with Telegram: if the process dies (or the send times
    # out) the announcement may be posted already, so it is never sent a second time.
    announcing_at: datetime | None = Field(default=None, sa_column=utc_column())
    closed_at: datetime | None = Field(default=None, sa_column=utc_column())
    # A lottery posted by the content calendar: the delivery it was created for, so a retried
    # delivery finds its lottery instead of opening a second one (UNIQUE: one per delivery).
    calendar_delivery_id: int | None = Field(
        default=None, sa_column=Column(Integer, nullable=True, unique=True, index=True)
    )

    @property
    def seed_bytes(self) -> bytes:
        return bytes.fromhex(self.seed)

    @property
    def revealed(self) -> bool:
        return self.state in (State.DRAWING, State.DRAWN)


class LotteryEntry(SQLModel, table=True):
    """One member's entry; the primary key makes it one per member however often they press."""

    __tablename__ = "lottery_entry"

    lottery_id: int = Field(
        sa_column=Column(
            "lottery_id",
            BigInteger,
            ForeignKey("lottery.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    user_id: int = Field(sa_type=BigInteger, primary_key=True)
    name: str = Field(default="", max_length=255)
    username: str | None = Field(default=None, max_length=64)
    via: str = Field(default="button", max_length=16)  # button | keyword
    entered_at: datetime = Field(sa_column=utc_column(nullable=False))
    # Set for the ranking positions the draw or a reroll went through:
    rank: int | None = Field(default=None)  # 1-based position in the ranking
    outcome: str | None = Field(default=None, max_length=16)  # won | skipped (had left)
    round: int | None = Field(default=None)  # 0: the draw; k: the k-th reroll


LOTTERY = Lottery.__table__  # type: ignore[attr-defined]
ENTRY = LotteryEntry.__table__  # type: ignore[attr-defined]
MEMBER = Member.__table__  # type: ignore[attr-defined]
ACTIVITY = DailyActivity.__table__  # type: ignore[attr-defined]


# --- fairness --------------------------------------------------------------------------------


def new_seed() -> bytes:
    """The secret of a new lottery (cryptographically random)."""
    return secrets.token_bytes(SEED_BYTES)


def commitment_of(seed: bytes) -> str:
    """What is published before any entry: SHA-256 of the raw seed bytes, hex."""
    return hashlib.sha256(seed).hexdigest()


def ticket(seed: bytes, lottery_id: int, user_id: int) -> bytes:
    """An entrant's place in the ranking: HMAC-SHA256(seed, "<lottery_id>:<user_id>")."""
    return hmac.new(seed, f"{lottery_id}:{user_id}".encode("ascii"), hashlib.sha256).digest()


def ranking(
    seed: bytes,
    lottery_id: int,
    user_ids: Iterable[int],
    fixed: Mapping[int, int] | None = None,
) -> list[int]:
    """Entrants in draw order: lowest ticket first (ties, which never happen, by user id).

    `fixed` maps entrants whose id was erased (bot.privacy: a pseudonym replaced it after the
    draw) to the 1-based position they held; everybody else fills the other positions in
    ticket order, so their order is still checked against the seed.
    """
    fixed = fixed or {}
    ordered = sorted(
        (u for u in user_ids if u not in fixed),
        key=lambda user_id: (ticket(seed, lottery_id, user_id), user_id),
    )
    if not fixed:
        return ordered
    slots: list[int | None] = [None] * (len(ordered) + len(fixed))
    misplaced = []
    for user_id, position in sorted(fixed.items(), key=lambda item: item[1]):
        if 1 <= position <= len(slots) and slots[position - 1] is None:
            slots[position - 1] = user_id
        else:
            misplaced.append(user_id)  # verification reports it: not where it is recorded
    rest = iter([*ordered, *misplaced])
    return [slot if slot is not None else next(rest) for slot in slots]


def fixed_positions(entries: Iterable[Any]) -> dict[int, int]:
    """Pseudonymised entrants (negative ids) and the ranks recorded for them."""
    return {e.user_id: e.rank for e in entries if e.user_id < 0 and e.rank is not None}


# --- the /lottery arguments ------------------------------------------------------------------


class SpecError(ValueError):
    """Arguments that cannot make a lottery; `key` names the translation that explains it."""

    def __init__(self, key: str, **values: Any) -> None:
        super().__init__(key)
        self.key = key
        self.values = values


@dataclass(frozen=True, slots=True)
class Conditions:
    min_points: int | None = None
    checkins: tuple[int, int] | None = None  # (K, D): K check-in days of the last D
    member_for: timedelta | None = None
    joined_after: datetime | None = None  # UTC moment of the chat-local midnight
    joined_after_day: date | None = None  # the date as typed (for messages)

    @property
    def any(self) -> bool:
        return any(
            value is not None
            for value in (self.min_points, self.checkins, self.member_for, self.joined_after)
        )


@dataclass(frozen=True, slots=True)
class LotterySpec:
    prize: str
    winners: int = 1
    draw_at: datetime | None = None
    draw_entries: int | None = None
    conditions: Conditions = field(default_factory=Conditions)
    keyword: str | None = None


_SEGMENTS = re.compile(r"[|｜]")
_INT = r"(\d{1,12})"
_WINNERS = [
    re.compile(rf"^(?:winners?|prizes?|名额|中奖人数|中奖名额|人数)\s*[:：=]?\s*{_INT}$", re.I),
    re.compile(rf"^{_INT}\s*(?:winners?|名|个名额|人中奖|个中奖)$", re.I),
]
_DRAW_ENTRIES = [
    re.compile(
        rf"^(?:draw\s+(?:at|after|when|with)|开奖)\s*[:：]?\s*(?:满\s*)?{_INT}\s*"
        r"(?:entries|entrants|members|people|persons|人|人参与|名)$",
        re.I,
    ),
    re.compile(rf"^满\s*{_INT}\s*(?:人|名)\s*(?:开奖|即开奖|自动开奖)?$"),
    re.compile(rf"^{_INT}\s*(?:人|名)\s*开奖$"),
]
_DRAW_TIME = [
    re.compile(r"^draw\s+(at|on|in|after)\s+(.+)$", re.I),
    re.compile(r"^draw\s+(tomorrow\s+.+)$", re.I),
    re.compile(r"^开奖(?:时间)?\s*[:：]?\s*(.+)$"),
    re.compile(r"^(.+?)\s*开奖$"),
]
_MIN_POINTS = re.compile(
    rf"^(?:min(?:imum)?\s*points?|points?\s*(?:>=|≥|at\s+least)?|最低积分|最少积分|"
    rf"积分\s*(?:至少|不少于|≥|>=)?)\s*[:：=]?\s*{_INT}$",
    re.I,
)
_CHECKINS = re.compile(
    r"^(?:check-?ins?|签到)\s*[:：=]?\s*(\d{1,4})\s*/\s*(\d{1,4})\s*(?:d|days?|天)?$", re.I
)
_CHECKINS_ZH = re.compile(r"^(?:近|最近)\s*(\d{1,4})\s*天\s*签到\s*(\d{1,4})\s*(?:次|天)?$")
_MEMBER = re.compile(r"^(?:member(?:\s+for)?|入群(?:满|超过)?|群龄)\s*[:：=]?\s*(.+)$", re.I)
_JOINED = [
    re.compile(r"^(?:joined\s+(?:after|since)|新成员|入群晚于|加入晚于)\s*[:：=]?\s*(\S+)$", re.I),
    re.compile(r"^(\S+)\s*(?:之后|以后|后)\s*(?:入群|加入)(?:的新成员)?$"),
]
_KEYWORD = re.compile(r"^(?:keyword|password|口令|暗号)\s*[:：=]?\s*(.+)$", re.I)
_WORD_UNITS = [
    (re.compile(r"(\d)\s*(?:days?)\b", re.I), r"\1d"),
    (re.compile(r"(\d)\s*(?:weeks?)\b", re.I), r"\1w"),
    (re.compile(r"(\d)\s*(?:hours?|hrs?)\b", re.I), r"\1h"),
    (re.compile(r"(\d)\s*(?:minutes?|mins?)\b", re.I), r"\1m"),
]
_KEYWORD_TRIM = " !！.。~～,，、?？"


def normalize_keyword(text: str) -> str:
    """Case-folded, single-spaced, without surrounding punctuation: how 口令 are compared."""
    return " ".join(text.casefold().split()).strip(_KEYWORD_TRIM)


def _duration(text: str) -> timedelta | None:
    text = text.strip()
    for pattern, replacement in _WORD_UNITS:
        text = pattern.sub(replacement, text)
    return parse_duration(text.replace(" ", ""))


def _when(text: str, *, relative: bool, now: datetime, tz: ZoneInfo) -> datetime:
    """A draw time from `2026-12-24 20:00`, `20:00`, `in 2h`, `2h`, `2小时后`, `tomorrow 9:00`."""
    text = text.strip()
    if text.endswith("后") or text.endswith("之后"):
        text, relative = text.removesuffix("之后").removesuffix("后"), True
    words = text.split()
    if relative:
        delta = _duration(text)
        if delta is None:
            raise SpecError("bad_time", value=text)
        return now + delta
    parsed = parse_when(words, now=now, tz=tz)
    if parsed is None or parsed[1] != len(words):
        delta = _duration(text)
        if delta is None:
            raise SpecError("bad_time", value=text)
        return now + delta
    return parsed[0]


def _set(found: dict[str, Any], name: str, value: Any, segment: str) -> None:
    if name in found:
        raise SpecError("segment_twice", segment=segment)
    found[name] = value


def _number(text: str, *, low: int, high: int, key: str) -> int:
    number = int(text)
    if not low <= number <= high:
        raise SpecError(key, low=low, high=high, value=number)
    return number


def _parse_segment(segment: str, found: dict[str, Any], *, now: datetime, tz: ZoneInfo) -> None:
    """Recognise one segment and store its value in `found` (each kind at most once)."""
    for pattern in _WINNERS:
        if match := pattern.match(segment):
            value = _number(match.group(1), low=1, high=MAX_WINNERS, key="winners_range")
            _set(found, "winners", value, segment)
            return
    for pattern in _DRAW_ENTRIES:
        if match := pattern.match(segment):
            value = _number(match.group(1), low=1, high=MAX_DRAW_ENTRIES, key="entries_range")
            _set(found, "draw_entries", value, segment)
            return
    if match := _MIN_POINTS.match(segment):
        value = _number(match.group(1), low=1, high=MAX_MIN_POINTS, key="points_range")
        _set(found, "min_points", value, segment)
        return
    match = _CHECKINS.match(segment)
    pair = (match.group(1), match.group(2)) if match else None
    if pair is None and (zh := _CHECKINS_ZH.match(segment)):
        pair = (zh.group(2), zh.group(1))  # 近7天签到5次 → 5 of 7
    if pair is not None:
        needed, days = int(pair[0]), int(pair[1])
        if not 1 <= days <= MAX_CHECKIN_DAYS or not 1 <= needed <= days:
            raise SpecError("bad_checkins", needed=needed, days=days, max=MAX_CHECKIN_DAYS)
        _set(found, "checkins", (needed, days), segment)
        return
    for pattern in _JOINED:
        if match := pattern.match(segment):
            day = parse_date(match.group(1))
            if day is None:
                raise SpecError("bad_date", value=match.group(1))
            _set(found, "joined_after", day, segment)
            return
    if match := _MEMBER.match(segment):
        delta = _duration(match.group(1))
        if delta is None or delta > MAX_HORIZON * 10:
            raise SpecError("bad_duration", value=match.group(1))
        _set(found, "member_for", delta, segment)
        return
    if match := _KEYWORD.match(segment):
        word = normalize_keyword(match.group(1))
        if not word or word.startswith("/") or len(word) > MAX_KEYWORD:
            raise SpecError("bad_keyword", value=match.group(1).strip(), max=MAX_KEYWORD)
        _set(found, "keyword", word, segment)
        return
    for index, pattern in enumerate(_DRAW_TIME):
        if match := pattern.match(segment):
            groups = match.groups()
            relative = index == 0 and groups[0].lower() in ("in", "after")
            moment = _when(groups[-1], relative=relative, now=now, tz=tz)
            _set(found, "draw_at", moment, segment)
            return
    raise SpecError("unknown_segment", segment=segment)


def parse_spec(text: str, *, now: datetime, tz: ZoneInfo) -> LotterySpec:
    """`PRIZE | winners N | draw in 2h | …` → a LotterySpec; SpecError says what is wrong.

    Segments after the prize come in any order: `winners N`, `draw at 2026-12-24 20:00`,
    `draw in 2h`, `draw at 100 entries`, `min points P`, `checkins K/D`, `member 30d`,
    `joined after 2026-12-01`, `keyword WORD` (and Chinese forms: 名额 3, 开奖 20:00,
    2小时后开奖, 满100人开奖, 最低积分 100, 签到 5/7, 入群 30天, 新成员 2026-12-01, 口令 芝麻开门).
    Times are read in the chat's time zone `tz`.
    """
    parts = [part.strip() for part in _SEGMENTS.split(text.strip())]
    prize = " ".join(parts[0].split()) if parts else ""
    if not prize:
        raise SpecError("no_prize")
    if len(prize) > MAX_PRIZE:
        raise SpecError("prize_too_long", max=MAX_PRIZE)
    found: dict[str, Any] = {}
    for segment in parts[1:]:
        segment = " ".join(segment.split())
        if segment:
            _parse_segment(segment, found, now=now, tz=tz)

    winners = found.get("winners", 1)
    draw_at: datetime | None = found.get("draw_at")
    draw_entries: int | None = found.get("draw_entries")
    if draw_at is None and draw_entries is None:
        raise SpecError("no_draw")
    if draw_at is not None:
        if draw_at < now + MIN_LEAD:
            raise SpecError("time_past")
        if draw_at > now + MAX_HORIZON:
            raise SpecError("time_far", days=MAX_HORIZON.days)
    if draw_entries is not None and draw_entries < winners:
        raise SpecError("entries_below_winners", entries=draw_entries, winners=winners)

    joined_day: date | None = found.get("joined_after")
    joined_after = local_to_utc(joined_day, time(0, 0), tz) if joined_day else None
    member_for: timedelta | None = found.get("member_for")
    if joined_after is not None and draw_at is not None and joined_after >= draw_at:
        raise SpecError("joined_after_draw")
    if joined_after is not None and member_for is not None:
        # Joined after X and a member for D by the draw: impossible when X + D is past it.
        latest = draw_at if draw_at is not None else now + MAX_HORIZON
        if joined_after + member_for > latest:
            raise SpecError("joined_and_member")
    return LotterySpec(
        prize=prize,
        winners=winners,
        draw_at=draw_at,
        draw_entries=draw_entries,
        conditions=Conditions(
            min_points=found.get("min_points"),
            checkins=found.get("checkins"),
            member_for=member_for,
            joined_after=joined_after,
            joined_after_day=joined_day,
        ),
        keyword=found.get("keyword"),
    )


def conditions_of(lottery: Lottery, tz: ZoneInfo) -> Conditions:
    """The conditions stored on a lottery, in the shape the parser produced them."""
    checkins = None
    if lottery.checkins_needed and lottery.checkins_days:
        checkins = (lottery.checkins_needed, lottery.checkins_days)
    return Conditions(
        min_points=lottery.min_points,
        checkins=checkins,
        member_for=timedelta(seconds=lottery.member_seconds) if lottery.member_seconds else None,
        joined_after=lottery.joined_after,
        joined_after_day=lottery.joined_after.astimezone(tz).date()
        if lottery.joined_after
        else None,
    )


# --- creating ----------------------------------------------------------------------------------


async def create_lottery(
    session: AsyncSession,
    *,
    chat_id: int,
    spec: LotterySpec,
    seed: bytes,
    created_by: int | None,
    now: datetime,
    calendar_delivery_id: int | None = None,
) -> Lottery:
    """Store a new open lottery; its seed is fixed here, before anyone can enter."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a seed is {SEED_BYTES} bytes")
    checkins = spec.conditions.checkins
    member_for = spec.conditions.member_for
    lottery = Lottery(
        chat_id=chat_id,
        prize=spec.prize,
        winners=spec.winners,
        draw_at=spec.draw_at,
        draw_entries=spec.draw_entries,
        min_points=spec.conditions.min_points,
        checkins_needed=checkins[0] if checkins else None,
        checkins_days=checkins[1] if checkins else None,
        member_seconds=int(member_for.total_seconds()) if member_for else None,
        joined_after=spec.conditions.joined_after,
        keyword=spec.keyword,
        seed=seed.hex(),
        commitment=commitment_of(seed),
        created_by=created_by,
        created_at=now,
        calendar_delivery_id=calendar_delivery_id,
    )
    session.add(lottery)
    await session.flush()
    return lottery


async def set_message(session: AsyncSession, lottery_id: int, message_id: int) -> None:
    await session.execute(
        update(LOTTERY).where(LOTTERY.c.id == lottery_id).values(message_id=message_id)
    )


async def get_lottery(session: AsyncSession, lottery_id: int) -> Lottery | None:
    return await session.get(Lottery, lottery_id, populate_existing=True)


# --- entering ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a member may not enter; `key` is the translation, `values` fill it in."""

    key: str
    values: dict[str, Any] = field(default_factory=dict)


class Entry(StrEnum):
    ENTERED = "entered"
    ALREADY = "already"
    CLOSED = "closed"  # drawn, drawing, cancelled — or full (the N-th entrant came first)
    REFUSED = "refused"  # a condition is not met: see `refusal`


@dataclass(frozen=True, slots=True)
class EntryResult:
    status: Entry
    count: int = 0  # entrants afterwards (when entered)
    completes: bool = False  # this entry was the N-th of a "draw at N entries" lottery
    refusal: Refusal | None = None


async def check_conditions(
    session: AsyncSession, lottery: Any, *, user_id: int, now: datetime, tz: ZoneInfo
) -> Refusal | None:
    """The first condition of `lottery` (a Lottery, or its row) the member does not meet."""
    chat_id = lottery.chat_id
    if lottery.min_points:
        have = await points.balance(session, chat_id=chat_id, user_id=user_id)
        if have < lottery.min_points:
            return Refusal("why_points", {"need": lottery.min_points, "have": have})
    if lottery.checkins_needed and lottery.checkins_days:
        today = local_day(now, tz)
        first = today - timedelta(days=lottery.checkins_days - 1)
        done = await session.scalar(
            select(func.count())
            .select_from(ACTIVITY)
            .where(
                ACTIVITY.c.chat_id == chat_id,
                ACTIVITY.c.user_id == user_id,
                ACTIVITY.c.day >= first,
                ACTIVITY.c.day <= today,
                ACTIVITY.c.checked_in.is_(True),
            )
        )
        if int(done or 0) < lottery.checkins_needed:
            return Refusal(
                "why_checkins",
                {
                    "needed": lottery.checkins_needed,
                    "days": lottery.checkins_days,
                    "done": int(done or 0),
                },
            )
    if lottery.member_seconds or lottery.joined_after:
        row = (
            await session.execute(
                select(MEMBER.c.joined_at, MEMBER.c.first_seen).where(
                    MEMBER.c.chat_id == chat_id, MEMBER.c.user_id == user_id
                )
            )
        ).first()
        joined_at = row.joined_at if row else None
        if lottery.member_seconds:
            since = joined_at or (row.first_seen if row else None)
            if since is None or since > now - timedelta(seconds=lottery.member_seconds):
                return Refusal(
                    "why_member",
                    {
                        "need": timedelta(seconds=lottery.member_seconds),
                        "since": since.astimezone(tz).date() if since else None,
                    },
                )
        if lottery.joined_after and (joined_at is None or joined_at < lottery.joined_after):
            return Refusal(
                "why_joined",
                {
                    "after": lottery.joined_after.astimezone(tz).date(),
                    "joined": joined_at.astimezone(tz).date() if joined_at else None,
                },
            )
    return None


@dataclass(frozen=True, slots=True)
class Press:
    """What an entry needs to know first, read in one statement (`load_press`)."""

    lottery: Any  # the lottery's row (its columns as attributes), None if there is none
    status: str | None  # the member's roster status in the lottery's group
    entered: bool  # already an entrant


def _press(dialect: str) -> Any:
    user = bindparam("user")
    status = (
        select(MEMBER.c.status)
        .where(MEMBER.c.chat_id == LOTTERY.c.chat_id, MEMBER.c.user_id == user)
        .scalar_subquery()
    )
    entered = (
        select(ENTRY.c.user_id)
        .where(ENTRY.c.lottery_id == LOTTERY.c.id, ENTRY.c.user_id == user)
        .exists()
    )
    return select(LOTTERY, status.label("member_status"), entered.label("entered")).where(
        LOTTERY.c.id == bindparam("id")
    )


async def load_press(session: AsyncSession, lottery_id: int, user_id: int) -> Press:
    """The lottery, the member's roster status and whether they entered: one prepared read
    (a Join press is a hot path: 3% of all updates)."""
    row = (
        await session.execute(
            prepared(session, "lottery.press", _press), {"id": lottery_id, "user": user_id}
        )
    ).first()
    if row is None:
        return Press(None, None, False)
    return Press(row, row.member_status, bool(row.entered))


def _insert_entry(dialect: str) -> Any:
    columns = ("lottery_id", "user_id", "name", "username", "via", "entered_at")
    return (
        insert_for(dialect, ENTRY)
        .values({name: bindparam(name) for name in columns})
        .on_conflict_do_nothing(index_elements=["lottery_id", "user_id"])
        .returning(ENTRY.c.user_id)
    )


def _count_entry(dialect: str) -> Any:
    # Count the entry only while the lottery is open and not full. This UPDATE locks the row,
    # so the draw's claim (open → drawing) waits for entries in flight and sees them all.
    return (
        update(LOTTERY)
        .where(
            LOTTERY.c.id == bindparam("lottery"),
            LOTTERY.c.state == State.OPEN.value,
            or_(
                LOTTERY.c.draw_entries.is_(None),
                LOTTERY.c.entry_count < LOTTERY.c.draw_entries,
            ),
        )
        .values(entry_count=LOTTERY.c.entry_count + 1)
        .returning(LOTTERY.c.entry_count, LOTTERY.c.draw_entries)
    )


async def enter(
    session: AsyncSession,
    *,
    lottery_id: int,
    user_id: int,
    name: str,
    username: str | None,
    now: datetime,
    tz: ZoneInfo,
    via: str,
    press: Press | None = None,
) -> EntryResult:
    """Enter a member into an open lottery, once; checks every condition server-side.

    The caller has checked that the lottery belongs to the chat the member acted in and that
    the member is in the group. Writes the entry, the count and the day's participation flag
    in the caller's transaction. `press`: `load_press` already done in this transaction.
    """
    if press is None:
        press = await load_press(session, lottery_id, user_id)
    lottery = press.lottery
    if lottery is None or lottery.state != State.OPEN:
        return EntryResult(Entry.CLOSED)
    if press.entered:
        return EntryResult(Entry.ALREADY, lottery.entry_count)
    refusal = await check_conditions(session, lottery, user_id=user_id, now=now, tz=tz)
    if refusal is not None:
        return EntryResult(Entry.REFUSED, refusal=refusal)

    inserted = (
        await session.execute(
            prepared(session, "lottery.insert_entry", _insert_entry),
            {
                "lottery_id": lottery_id,
                "user_id": user_id,
                "name": name[:255],
                "username": username,
                "via": via,
                "entered_at": now,
            },
        )
    ).scalar()
    if inserted is None:  # a concurrent press of the same member got there first
        return EntryResult(Entry.ALREADY, lottery.entry_count)
    counted = (
        await session.execute(
            prepared(session, "lottery.count_entry", _count_entry), {"lottery": lottery_id}
        )
    ).first()
    if counted is None:
        # Closed (or full) meanwhile: take back our own, uncommitted row.
        await session.execute(
            delete(ENTRY).where(ENTRY.c.lottery_id == lottery_id, ENTRY.c.user_id == user_id)
        )
        return EntryResult(Entry.CLOSED)
    count, needed = int(counted[0]), counted[1]
    await mark_participation(
        session,
        chat_id=lottery.chat_id,
        user_id=user_id,
        name=name,
        username=username,
        when=now,
        day=local_day(now, tz),
        kind="lottery_entered",
    )
    return EntryResult(Entry.ENTERED, count, completes=needed is not None and count >= needed)


# --- drawing -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pick:
    """An entrant the draw or a reroll went through: a winner, or one skipped."""

    user_id: int
    name: str
    rank: int
    round: int
    outcome: str  # won | skipped


@dataclass(frozen=True, slots=True)
class DrawOutcome:
    lottery: Lottery
    entrants: int
    winners: list[Pick]  # every winner so far, by round then rank
    skipped: list[Pick]

    def of_round(self, round: int) -> tuple[list[Pick], list[Pick]]:
        return (
            [p for p in self.winners if p.round == round],
            [p for p in self.skipped if p.round == round],
        )


async def _walk(session: AsyncSession, lottery: Lottery, *, needed: int, round: int) -> int:
    """Go down the ranking from the cursor until `needed` winners still in the group are found.

    Records each position passed (rank, outcome, round) and moves the cursor; returns the
    number of winners found (fewer than `needed` when the ranking runs out).
    """
    assert lottery.id is not None
    rows = (
        await session.execute(
            select(ENTRY.c.user_id, MEMBER.c.status, ENTRY.c.rank)
            .select_from(
                ENTRY.outerjoin(
                    MEMBER,
                    and_(MEMBER.c.chat_id == lottery.chat_id, MEMBER.c.user_id == ENTRY.c.user_id),
                )
            )
            .where(ENTRY.c.lottery_id == lottery.id)
        )
    ).all()
    status = {int(user_id): state for user_id, state, _ in rows}
    fixed = {int(u): r for u, _, r in rows if u < 0 and r is not None}
    order = ranking(lottery.seed_bytes, lottery.id, status, fixed)
    position, found, marks = lottery.cursor, 0, []
    while found < needed and position < len(order):
        user_id = order[position]
        position += 1
        left = status[user_id] in LEFT_STATUSES
        found += 0 if left else 1
        marks.append(
            {
                "b_lottery": lottery.id,
                "b_user": user_id,
                "b_rank": position,
                "b_outcome": "skipped" if left else "won",
                "b_round": round,
            }
        )
    if marks:
        await session.execute(
            update(ENTRY)
            .where(
                ENTRY.c.lottery_id == bindparam("b_lottery"),
                ENTRY.c.user_id == bindparam("b_user"),
            )
            .values(
                rank=bindparam("b_rank"),
                outcome=bindparam("b_outcome"),
                round=bindparam("b_round"),
            ),
            marks,
        )
    await session.execute(
        update(LOTTERY).where(LOTTERY.c.id == lottery.id).values(cursor=position)
    )
    lottery.cursor = position
    return found


async def claim_draw(
    session: AsyncSession, lottery_id: int, *, now: datetime, by: str | None = None
) -> bool:
    """Draw an open lottery, exactly once: claim it (open → drawing) and choose the winners.

    Returns False when it was not open (already drawn, being drawn by someone else,
    cancelled, unknown). Commit, then announce, then `mark_announced`.
    """
    claimed = await session.execute(
        update(LOTTERY)
        .where(LOTTERY.c.id == lottery_id, LOTTERY.c.state == State.OPEN.value)
        .values(state=State.DRAWING.value, claimed_at=now, claimed_by=by, drawn_at=now)
    )
    if claimed.rowcount != 1:
        return False
    lottery = await get_lottery(session, lottery_id)
    assert lottery is not None
    await _walk(session, lottery, needed=lottery.winners, round=0)
    return True


def _abandoned(
    *, now: datetime, lease: timedelta, me: str | None, process_lease: timedelta | None
) -> Any:
    """A draw claimed longer than `lease` ago, or by a process that stopped (bot.cluster)."""
    old = LOTTERY.c.claimed_at <= now - lease
    if me is None or process_lease is None:
        return old
    stopped = claimed_by_stopped_process(LOTTERY.c.claimed_by, me=me, now=now, lease=process_lease)
    return or_(old, stopped)


async def reclaim_announcement(
    session: AsyncSession,
    lottery_id: int,
    *,
    now: datetime,
    lease: timedelta,
    me: str | None = None,
    process_lease: timedelta | None = None,
) -> bool:
    """Take over the announcement of a draw whose process stopped before announcing it.

    A claim older than `lease`, or held by a process that has stopped beating for
    `process_lease`, is considered abandoned (the process died between the draw and the
    announcement); whoever moves its `claimed_at` first announces it.
    """
    result = await session.execute(
        update(LOTTERY)
        .where(
            LOTTERY.c.id == lottery_id,
            LOTTERY.c.state == State.DRAWING.value,
            _abandoned(now=now, lease=lease, me=me, process_lease=process_lease),
        )
        .values(claimed_at=now, claimed_by=me)
    )
    return result.rowcount == 1


async def begin_announcement(
    session: AsyncSession, lottery_id: int, *, now: datetime | None
) -> None:
    """Record that the announcement is being sent (None: it certainly was not, retry later)."""
    await session.execute(
        update(LOTTERY)
        .where(LOTTERY.c.id == lottery_id, LOTTERY.c.state == State.DRAWING.value)
        .values(announcing_at=now)
    )


async def mark_announced(
    session: AsyncSession, lottery_id: int, *, announcement_id: int | None
) -> None:
    await session.execute(
        update(LOTTERY)
        .where(LOTTERY.c.id == lottery_id, LOTTERY.c.state == State.DRAWING.value)
        .values(state=State.DRAWN.value, announcement_id=announcement_id)
    )


async def load_outcome(session: AsyncSession, lottery_id: int) -> DrawOutcome | None:
    """The draw as recorded: winners and skipped entrants of every round."""
    lottery = await get_lottery(session, lottery_id)
    if lottery is None:
        return None
    rows = (
        await session.execute(
            select(ENTRY.c.user_id, ENTRY.c.name, ENTRY.c.rank, ENTRY.c.round, ENTRY.c.outcome)
            .where(ENTRY.c.lottery_id == lottery_id, ENTRY.c.outcome.is_not(None))
            .order_by(ENTRY.c.round, ENTRY.c.rank)
        )
    ).all()
    picks = [Pick(int(r.user_id), r.name, int(r.rank), int(r.round), r.outcome) for r in rows]
    return DrawOutcome(
        lottery=lottery,
        entrants=lottery.entry_count,
        winners=[p for p in picks if p.outcome == "won"],
        skipped=[p for p in picks if p.outcome == "skipped"],
    )


class Reroll(StrEnum):
    DONE = "done"
    NOT_DRAWN = "not_drawn"  # still open, cancelled or unknown
    IN_PROGRESS = "in_progress"  # drawn but the announcement is under way


@dataclass(frozen=True, slots=True)
class RerollResult:
    status: Reroll
    round: int = 0
    outcome: DrawOutcome | None = None


async def reroll(session: AsyncSession, lottery_id: int, *, count: int) -> RerollResult:
    """Draw `count` more winners from the same ranking, continuing after the last position used.

    Taking the row lock first (the UPDATE) makes concurrent rerolls take turns.
    """
    if not 1 <= count <= MAX_REROLL:
        raise ValueError("reroll 1..MAX_REROLL winners")
    bumped = await session.execute(
        update(LOTTERY)
        .where(LOTTERY.c.id == lottery_id, LOTTERY.c.state == State.DRAWN.value)
        .values(rerolls=LOTTERY.c.rerolls + 1)
    )
    if bumped.rowcount != 1:
        lottery = await get_lottery(session, lottery_id)
        if lottery is not None and lottery.state == State.DRAWING:
            return RerollResult(Reroll.IN_PROGRESS)
        return RerollResult(Reroll.NOT_DRAWN)
    lottery = await get_lottery(session, lottery_id)
    assert lottery is not None
    await _walk(session, lottery, needed=count, round=lottery.rerolls)
    return RerollResult(Reroll.DONE, lottery.rerolls, await load_outcome(session, lottery_id))


async def cancel(session: AsyncSession, lottery_id: int, *, now: datetime) -> bool:
    """Cancel an open lottery; False when it is not open any more."""
    result = await session.execute(
        update(LOTTERY)
        .where(LOTTERY.c.id == lottery_id, LOTTERY.c.state == State.OPEN.value)
        .values(state=State.CANCELLED.value, closed_at=now)
    )
    return result.rowcount == 1


async def claim_count_edit(
    session: AsyncSession, lottery_id: int, *, now: datetime, interval: timedelta
) -> Lottery | None:
    """Claim the right to update the post's entrant count: it changed, and the last edit (by
    any process) was at least `interval` ago. Returns the lottery with the count to show."""
    result = await session.execute(
        update(LOTTERY)
        .where(
            LOTTERY.c.id == lottery_id,
            LOTTERY.c.state == State.OPEN.value,
            LOTTERY.c.message_id.is_not(None),
            LOTTERY.c.shown_count != LOTTERY.c.entry_count,
            or_(
                LOTTERY.c.count_edited_at.is_(None),
                LOTTERY.c.count_edited_at <= now - interval,
            ),
        )
        .values(shown_count=LOTTERY.c.entry_count, count_edited_at=now)
    )
    if result.rowcount != 1:
        return None
    return await get_lottery(session, lottery_id)


# --- reading -----------------------------------------------------------------------------------


async def entrants(session: AsyncSession, lottery_id: int) -> list[LotteryEntry]:
    """Every entry of a lottery, in the order they came in."""
    rows = await session.scalars(
        select(LotteryEntry)
        .where(LotteryEntry.lottery_id == lottery_id)
        .order_by(LotteryEntry.entered_at, LotteryEntry.user_id)  # type: ignore[arg-type]
    )
    return list(rows)


async def chat_lotteries(
    session: AsyncSession, chat_id: int, *, recent_since: datetime, limit: int = 20
) -> list[Lottery]:
    """Open lotteries of a chat, then those finished since `recent_since` (newest first)."""
    rows = await session.scalars(
        select(Lottery)
        .where(
            Lottery.chat_id == chat_id,
            or_(
                LOTTERY.c.state.in_([State.OPEN.value, State.DRAWING.value]),
                LOTTERY.c.drawn_at >= recent_since,
                LOTTERY.c.closed_at >= recent_since,
            ),
        )
        .order_by(LOTTERY.c.id.desc())
        .limit(limit)
    )
    found = list(rows)
    opened = [x for x in found if x.state == State.OPEN]
    return opened + [x for x in found if x.state != State.OPEN]


@dataclass(frozen=True, slots=True)
class Agenda:
    """What the scheduler must do, read at start-up and by the periodic sweep."""

    due: list[int]  # open lotteries to draw now (time passed, or N entrants reached)
    abandoned: list[int]  # drawn but never announced (the process died): announce
    upcoming: list[tuple[int, datetime]]  # open lotteries with a draw time ahead
    stale_counts: list[int]  # open lotteries whose post shows an old count


async def agenda(
    session: AsyncSession,
    *,
    now: datetime,
    lease: timedelta,
    me: str | None = None,
    process_lease: timedelta | None = None,
) -> Agenda:
    open_ = LOTTERY.c.state == State.OPEN.value
    due = await session.scalars(
        select(LOTTERY.c.id)
        .where(
            open_,
            or_(
                LOTTERY.c.draw_at <= now,
                and_(
                    LOTTERY.c.draw_entries.is_not(None),
                    LOTTERY.c.entry_count >= LOTTERY.c.draw_entries,
                ),
            ),
        )
        .order_by(LOTTERY.c.draw_at, LOTTERY.c.id)
    )
    abandoned = await session.scalars(
        select(LOTTERY.c.id).where(
            LOTTERY.c.state == State.DRAWING.value,
            _abandoned(now=now, lease=lease, me=me, process_lease=process_lease),
        )
    )
    upcoming = await session.execute(
        select(LOTTERY.c.id, LOTTERY.c.draw_at).where(open_, LOTTERY.c.draw_at > now)
    )
    stale = await session.scalars(
        select(LOTTERY.c.id).where(
            open_,
            LOTTERY.c.message_id.is_not(None),
            LOTTERY.c.shown_count != LOTTERY.c.entry_count,
        )
    )
    return Agenda(
        due=[int(i) for i in due],
        abandoned=[int(i) for i in abandoned],
        upcoming=[(int(i), at) for i, at in upcoming.all()],
        stale_counts=[int(i) for i in stale],
    )


# --- keywords (口令) on the hot path -----------------------------------------------------------


class KeywordIndex:
    """Open keyword lotteries by chat, so the filter on every group message is one dict lookup.

    Rebuilt from the database at start-up and periodically (lotteries opened by another
    process); changes made by this process are applied at once.
    """

    def __init__(self) -> None:
        self.by_chat: dict[int, dict[str, tuple[int, ...]]] = {}

    def lookup(self, chat_id: int, text: str) -> tuple[int, ...]:
        words = self.by_chat.get(chat_id)
        if words is None:
            return ()
        return words.get(normalize_keyword(text), ())

    def add(self, chat_id: int, keyword: str, lottery_id: int) -> None:
        words = self.by_chat.setdefault(chat_id, {})
        words[keyword] = (*words.get(keyword, ()), lottery_id)

    def discard(self, lottery_id: int) -> None:
        for chat_id in list(self.by_chat):
            words = self.by_chat[chat_id]
            for keyword in list(words):
                ids = tuple(i for i in words[keyword] if i != lottery_id)
                if ids:
                    words[keyword] = ids
                else:
                    del words[keyword]
            if not words:
                del self.by_chat[chat_id]

    def replace(self, rows: Iterable[tuple[int, int, str]]) -> None:
        fresh = KeywordIndex()
        for lottery_id, chat_id, keyword in rows:
            fresh.add(chat_id, keyword, lottery_id)
        self.by_chat = fresh.by_chat


async def open_keywords(session: AsyncSession) -> list[tuple[int, int, str]]:
    """(lottery id, chat id, keyword) of every open lottery that has a keyword."""
    rows = await session.execute(
        select(LOTTERY.c.id, LOTTERY.c.chat_id, LOTTERY.c.keyword).where(
            LOTTERY.c.state == State.OPEN.value, LOTTERY.c.keyword.is_not(None)
        )
    )
    return [(int(i), int(c), k) for i, c, k in rows.all()]


@dataclass
class LotteryRuntime:
    """Per-process state of the lottery feature (in `services.extras["lottery"]`)."""

    keywords: KeywordIndex = field(default_factory=KeywordIndex)
    seed_source: Callable[[], bytes] = new_seed
    count_pending: set[int] = field(default_factory=set)  # lotteries with a count edit queued


# --- verification ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verification:
    lottery: Lottery
    commitment_ok: bool
    ranking: list[int]  # every entrant, in draw order
    tickets: dict[int, str]  # user id → HMAC hex ("" for an erased entrant: rank recorded)
    expected: list[int]  # winners recomputed from the ranking and the recorded skips
    recorded: list[int]  # winners as stored (and announced)
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.commitment_ok and not self.problems and self.expected == self.recorded


async def verify(session: AsyncSession, lottery_id: int) -> Verification | None:
    """Recompute a finished draw from the stored entrants and the revealed seed.

    Checks that SHA-256(seed) is the published commitment, that every recorded position is
    where the HMAC ranking puts that entrant, and that the winners are exactly the first
    entrants of the ranking, in order, apart from those recorded as skipped (they had left the
    group — the one fact that comes from the roster at draw time rather than from the seed).
    Returns None for an unknown lottery.
    """
    lottery = await get_lottery(session, lottery_id)
    if lottery is None:
        return None
    entries = await entrants(session, lottery_id)
    seed = lottery.seed_bytes
    fixed = fixed_positions(entries)
    order = ranking(seed, lottery_id, [e.user_id for e in entries], fixed)
    by_user = {e.user_id: e for e in entries}
    problems: list[str] = []
    for entry in entries:
        if entry.rank is not None and (
            entry.rank > len(order) or order[entry.rank - 1] != entry.user_id
        ):
            problems.append(f"user {entry.user_id} is recorded at rank {entry.rank}")
        if entry.outcome is not None and (entry.rank is None or entry.rank > lottery.cursor):
            problems.append(f"user {entry.user_id} has an outcome beyond the positions drawn")
    expected = []
    for position, user_id in enumerate(order[: lottery.cursor], start=1):
        entry = by_user[user_id]
        if entry.outcome is None:
            problems.append(f"position {position} (user {user_id}) was passed without a record")
        if entry.outcome != "skipped":
            expected.append(user_id)
    recorded = [
        e.user_id
        for e in sorted(
            (e for e in entries if e.outcome == "won"), key=lambda e: (e.rank or 0, e.user_id)
        )
    ]
    first_round = [e for e in entries if e.round == 0 and e.outcome is not None]
    first_won = sum(1 for e in first_round if e.outcome == "won")
    last = max((e.rank or 0 for e in first_round), default=0)
    if lottery.revealed and first_won < lottery.winners and last < len(order):
        problems.append("the draw stopped before finding enough winners")
    return Verification(
        lottery=lottery,
        commitment_ok=commitment_of(seed) == lottery.commitment,
        ranking=order,
        tickets={u: "" if u in fixed else ticket(seed, lottery_id, u).hex() for u in order},
        expected=expected,
        recorded=recorded,
        problems=problems,
    )


def verification_report(result: Verification, *, shown_after: int = 5) -> str:
    """Plain-text report of `verify` for the command line (English, not translated)."""
    lottery = result.lottery
    entries_by_rank = {u: i for i, u in enumerate(result.ranking, start=1)}
    lines = [
        f"Lottery #{lottery.id} in chat {lottery.chat_id}: {lottery.prize}",
        f"State: {lottery.state}; drawn at {lottery.drawn_at:%Y-%m-%d %H:%M:%S} UTC; "
        f"{len(result.ranking)} entrants; {lottery.winners} winner(s); "
        f"{lottery.rerolls} reroll(s)",
        f"Seed (revealed):        {lottery.seed}",
        f"Commitment (published): {lottery.commitment}",
        f"SHA-256(seed):          {commitment_of(lottery.seed_bytes)}  "
        + ("OK" if result.commitment_ok else "DOES NOT MATCH THE COMMITMENT"),
        f'Ranking by HMAC-SHA256(seed, "{lottery.id}:<user_id>"), lowest first:',
    ]
    shown = min(len(result.ranking), lottery.cursor + shown_after)
    for user_id in result.ranking[:shown]:
        shown_ticket = result.tickets[user_id]
        lines.append(
            f"  {entries_by_rank[user_id]:>5}. {user_id:>14}  "
            + (f"{shown_ticket[:16]}…" if shown_ticket else "(erased: position as recorded)")
        )
    if shown < len(result.ranking):
        lines.append(f"  … {len(result.ranking) - shown} more")
    lines.append("Winners recomputed: " + (", ".join(map(str, result.expected)) or "none"))
    lines.append("Winners recorded:   " + (", ".join(map(str, result.recorded)) or "none"))
    lines.extend(f"Problem: {problem}" for problem in result.problems)
    if result.ok:
        lines.append("MATCH: the recorded winners are the ones the seed and the entrants give.")
    else:
        lines.append("MISMATCH: the recorded draw does not follow from the seed and entrants.")
    return "\n".join(lines)
