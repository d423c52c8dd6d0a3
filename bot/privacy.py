"""Privacy: erasing a member's personal data on request, and remembering that they opted out.

Erasure (`erase`) runs in the caller's transaction and is idempotent. Rows that group KPIs are
computed from (the roster, the daily rollups, poll votes, lottery entries of finished draws,
moderation history) are not deleted but reassigned to a random pseudonymous id — one per
group, a random negative 63-bit number that cannot be derived from the user id — with every
name dropped; rows that only matter to the person (check-ins, points, warnings, private
profile, caches) are deleted; where the person appears as the author of something else (a
poll, a calendar post, a points grant) the reference is cleared. `DECISIONS` lists every
column that can hold a person's id or name and what erasure does with it; a test fails when a
table gains such a column without a decision.

The opt-out is `HMAC-SHA256(secret, "<user_id>")` (hex), with the secret from PRIVACY_SALT or,
when unset, derived from the bot token: the database alone does not let anyone test whether a
given user id opted out. `OptOuts` holds the opted-out digests in memory so that the activity
recorder's check is a set lookup; each user id is hashed at most once (until the opt-outs
change).
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Table,
    and_,
    delete,
    false,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from bot.activity import COUNTS, FLAGS, merge_states
from bot.checkins import Checkin
from bot.dashboard_auth import DashboardLogin
from bot.invites import InviteJoinRequest, InviteLink, JoinSource, ReferralCredit
from bot.lottery import ENTRY, LOTTERY, ranking
from bot.lottery import State as LotteryState
from bot.models import Chat, ChatAdmin, DailyActivity, Member, UserProfile, utc_column
from bot.moderation import MemberWarning, ModLogEntry
from bot.points import PointsBalance, PointsLedger
from bot.polls import Poll, PollVote
from bot.rules import Newcomer

# How long an erasure confirmation button works.
CONFIRM_TIME = timedelta(minutes=10)
# The moderation actions whose reason is the member's own words (reports, "@admin" messages).
OWN_WORDS_ACTIONS = frozenset({"report"})
ERASED = "[erased]"


# --- tables ----------------------------------------------------------------------------------


class OptOut(SQLModel, table=True):
    """Someone whose activity is not recorded: everywhere (chat_id NULL) or in one group."""

    __tablename__ = "privacy_optout"

    id: int | None = Field(default=None, primary_key=True)
    digest: str = Field(max_length=64, index=True)  # HMAC-SHA256(secret, user id), hex
    chat_id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, ForeignKey("chat.id", ondelete="CASCADE"), nullable=True),
    )
    created_at: datetime = Field(sa_column=utc_column(nullable=False))


class ErasureRequest(SQLModel, table=True):
    """A /forgetme or /forget waiting for its confirmation button (then done or expired).

    Once done, the subject's id is cleared from the row (and the requester's, when it was the
    subject): the request itself must not keep what it erased.
    """

    __tablename__ = "erasure_request"

    id: int | None = Field(default=None, primary_key=True)
    token: str = Field(max_length=32)  # random, part of the button's data
    requested_by: int | None = Field(default=None, sa_type=BigInteger)
    subject_id: int | None = Field(default=None, sa_type=BigInteger)
    # The group an operator's /forget applies to; NULL: every group (the member's /forgetme).
    chat_id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, ForeignKey("chat.id", ondelete="CASCADE"), nullable=True),
    )
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    state: str = Field(default="pending", max_length=10)  # pending | done | cancelled


# --- what erasure does, per column -----------------------------------------------------------


class Rule(StrEnum):
    PSEUDONYM = "pseudonym"  # the id becomes the group's pseudonym (aggregates unchanged)
    BLANK = "blank"  # a name on a pseudonymised row: emptied
    DELETE = "delete"  # rows of the person are deleted
    CLEAR = "clear"  # the person as author of something else: the reference is cleared
    OPT_OUT = "opt_out"  # the hashed opt-out itself (no id stored)
    NOT_A_PERSON = "not_a_person"  # looks like it, is not (a process name, a chat's username)


DECISIONS: dict[tuple[str, str], Rule] = {
    # roster and rollups: KPIs (DAU/WAU/MAU, retention, top contributors) come from these
    ("member", "user_id"): Rule.PSEUDONYM,
    ("member", "display_name"): Rule.BLANK,
    ("member", "username"): Rule.BLANK,
    ("daily_activity", "user_id"): Rule.PSEUDONYM,
    # votes count in poll summaries and turnout; entries in finished draws must stay verifiable
    ("poll_vote", "user_id"): Rule.PSEUDONYM,
    ("lottery_entry", "user_id"): Rule.PSEUDONYM,  # open lotteries: the entry is withdrawn
    ("lottery_entry", "name"): Rule.BLANK,
    ("lottery_entry", "username"): Rule.BLANK,
    ("lottery_form", "user_id"): Rule.DELETE,  # an operator's unfinished /lottery form
    # moderation history stays as a pseudonymous record; names and own words go
    ("mod_log", "target_id"): Rule.PSEUDONYM,
    ("mod_log", "target_name"): Rule.BLANK,
    ("mod_log", "actor_id"): Rule.PSEUDONYM,
    ("mod_log", "actor_name"): Rule.BLANK,
    # only the person's own
    ("checkin", "user_id"): Rule.DELETE,
    ("points_ledger", "user_id"): Rule.DELETE,
    ("points_balance", "user_id"): Rule.DELETE,
    ("warning", "user_id"): Rule.DELETE,
    ("newcomer", "user_id"): Rule.DELETE,
    ("newcomer", "name"): Rule.DELETE,
    ("chat_admin", "user_id"): Rule.DELETE,  # a cache, asked again from Telegram
    ("user_profile", "user_id"): Rule.DELETE,
    ("user_profile", "first_name"): Rule.DELETE,
    ("user_profile", "username"): Rule.DELETE,
    # the person as the author of the group's things
    ("points_ledger", "actor_id"): Rule.CLEAR,
    ("warning", "created_by"): Rule.CLEAR,
    ("word_filter", "created_by"): Rule.CLEAR,
    ("poll", "created_by"): Rule.CLEAR,
    ("survey", "created_by"): Rule.CLEAR,
    ("lottery", "created_by"): Rule.CLEAR,
    ("calendar_post", "created_by"): Rule.CLEAR,
    ("calendar_approval", "decided_by"): Rule.CLEAR,
    ("calendar_chat", "paused_by"): Rule.CLEAR,
    ("group_rules", "updated_by"): Rule.CLEAR,
    ("kpi_target", "set_by"): Rule.CLEAR,
    ("inactive_purge", "requested_by"): Rule.CLEAR,
    ("erasure_request", "requested_by"): Rule.CLEAR,
    ("erasure_request", "subject_id"): Rule.CLEAR,
    ("privacy_optout", "digest"): Rule.OPT_OUT,
    # where members came from (bot.invites): joins by source and referral counts stay the same
    ("join_source", "user_id"): Rule.PSEUDONYM,
    ("join_source", "referrer_id"): Rule.PSEUDONYM,
    ("invite_link", "referrer_id"): Rule.PSEUDONYM,  # a member's own link: its owner
    ("referral_credit", "user_id"): Rule.PSEUDONYM,
    ("referral_credit", "referrer_id"): Rule.PSEUDONYM,
    ("invite_link", "creator_id"): Rule.CLEAR,
    ("campaign", "created_by"): Rule.CLEAR,
    ("campaign", "ended_by"): Rule.CLEAR,
    ("campaign", "name"): Rule.NOT_A_PERSON,  # an operator's name for a campaign
    ("campaign", "claimed_by"): Rule.NOT_A_PERSON,  # a process
    ("invite_join_request", "user_id"): Rule.DELETE,
    ("dashboard_login", "user_id"): Rule.DELETE,  # sign-in links
    ("invite_link", "name"): Rule.NOT_A_PERSON,  # an operator's name for a channel
    ("join_source", "link_name"): Rule.NOT_A_PERSON,  # 〃 of another link
    ("invite_join_request", "link_name"): Rule.NOT_A_PERSON,
    # not people
    ("chat", "username"): Rule.NOT_A_PERSON,  # the group's public @name
    ("calendar_delivery", "claimed_by"): Rule.NOT_A_PERSON,  # a process
    ("digest_run", "claimed_by"): Rule.NOT_A_PERSON,  # a process
    ("lottery", "claimed_by"): Rule.NOT_A_PERSON,  # 〃
    ("update_inbox", "owner"): Rule.NOT_A_PERSON,  # the process handling a kept update
    ("poll", "claimed_by"): Rule.NOT_A_PERSON,  # 〃
    ("survey", "claimed_by"): Rule.NOT_A_PERSON,  # 〃
    ("newcomer", "claimed_by"): Rule.NOT_A_PERSON,  # 〃
}

# Column names that may hold a person's id or name (the completeness test uses this).
PERSON_COLUMN = re.compile(
    r"(^|_)(user|actor|target|subject|voter|member|admin|owner|referrer|creator)(_id)?$"
    r"|_by$|(^|_)name$|username|first_name|last_name"
)


def person_columns(tables: list[Table]) -> set[tuple[str, str]]:
    """Every (table, column) whose name says it may identify a person."""
    return {
        (table.name, column.name)
        for table in tables
        for column in table.columns
        if PERSON_COLUMN.search(column.name) and not column.name.endswith("chat_id")
    }


# --- the opt-out -----------------------------------------------------------------------------


async def load_opt_outs(session: AsyncSession) -> list[tuple[str, int | None]]:
    rows = await session.execute(select(OptOut.digest, OptOut.chat_id))
    return [(digest, chat_id) for digest, chat_id in rows]


async def record_opt_out(
    session: AsyncSession, digest: str, chat_id: int | None, now: datetime
) -> None:
    scope = OptOut.chat_id.is_(None) if chat_id is None else OptOut.chat_id == chat_id  # type: ignore[union-attr]
    exists = await session.scalar(select(OptOut.id).where(OptOut.digest == digest, scope))
    if exists is None:
        session.add(OptOut(digest=digest, chat_id=chat_id, created_at=now))


async def remove_opt_outs(session: AsyncSession, digest: str) -> int:
    """/rememberme: lift every opt-out of this person (theirs and operators' per group)."""
    result = await session.execute(delete(OptOut).where(OptOut.digest == digest))  # type: ignore[arg-type]
    return result.rowcount or 0


# --- confirmation requests -------------------------------------------------------------------


async def create_request(
    session: AsyncSession,
    *,
    requested_by: int,
    subject_id: int,
    chat_id: int | None,
    now: datetime,
) -> ErasureRequest:
    """A pending erasure; requests nobody confirmed in time are deleted on the way."""
    await session.execute(
        delete(ErasureRequest).where(
            ErasureRequest.state == "pending",  # type: ignore[arg-type]
            ErasureRequest.created_at <= now - CONFIRM_TIME,  # type: ignore[operator]
        )
    )
    request = ErasureRequest(
        token=secrets.token_hex(8),
        requested_by=requested_by,
        subject_id=subject_id,
        chat_id=chat_id,
        created_at=now,
    )
    session.add(request)
    await session.flush()
    return request


class Claim(StrEnum):
    OK = "ok"
    DONE = "done"  # already erased (a second press)
    EXPIRED = "expired"  # too late, cancelled, or unknown
    NOT_YOURS = "not_yours"


@dataclass(frozen=True, slots=True)
class ClaimResult:
    status: Claim
    request: ErasureRequest | None = None


async def claim_request(
    session: AsyncSession, request_id: int, token: str, presser: int | None, now: datetime
) -> ClaimResult:
    """Take a pending request for execution (pending → done), exactly once.

    The caller erases in the same transaction; nothing in the button's data is trusted
    beyond finding the row: the token must match and the presser must be the requester
    (the handler decides who may press for an anonymous administrator).
    """
    request = await session.get(ErasureRequest, request_id)
    if request is None or not hmac.compare_digest(request.token, token):
        return ClaimResult(Claim.EXPIRED)
    if request.state == "done":
        return ClaimResult(Claim.DONE)
    if request.requested_by != presser:
        return ClaimResult(Claim.NOT_YOURS, request)
    claimed = await session.execute(
        update(ErasureRequest)
        .where(
            ErasureRequest.id == request_id,  # type: ignore[arg-type]
            ErasureRequest.state == "pending",  # type: ignore[arg-type]
            ErasureRequest.created_at > now - CONFIRM_TIME,  # type: ignore[operator]
        )
        .values(state="done")
    )
    if claimed.rowcount != 1:
        await session.refresh(request)
        return ClaimResult(Claim.DONE if request.state == "done" else Claim.EXPIRED, request)
    await session.refresh(request)
    return ClaimResult(Claim.OK, request)


async def cancel_request(
    session: AsyncSession, request_id: int, token: str, presser: int | None
) -> bool:
    request = await session.get(ErasureRequest, request_id)
    if (
        request is None
        or not hmac.compare_digest(request.token, token)
        or request.requested_by != presser
        or request.state != "pending"
    ):
        return False
    await session.delete(request)
    return True


# --- erasure ---------------------------------------------------------------------------------


def new_pseudonym() -> int:
    """A random negative 63-bit id (Telegram's user ids are positive): never derivable."""
    return -(secrets.randbelow((1 << 63) - 1) + 1)


@dataclass(slots=True)
class Erasure:
    """What `erase` did, for the log and the tests."""

    chats: dict[int, int] = field(default_factory=dict)  # chat id → its pseudonym
    deleted: int = 0
    pseudonymised: int = 0
    withdrawn_entries: int = 0

    def pseudonym(self, chat_id: int) -> int:
        if chat_id not in self.chats:
            self.chats[chat_id] = new_pseudonym()
        return self.chats[chat_id]


MEMBER = Member.__table__  # type: ignore[attr-defined]
ACTIVITY = DailyActivity.__table__  # type: ignore[attr-defined]
VOTE = PollVote.__table__  # type: ignore[attr-defined]
POLL = Poll.__table__  # type: ignore[attr-defined]
MODLOG = ModLogEntry.__table__  # type: ignore[attr-defined]
ADMINS = ChatAdmin.__table__  # type: ignore[attr-defined]
CHAT = Chat.__table__  # type: ignore[attr-defined]

# Deleted outright: (table, person column). Tables with a chat_id are limited to the scope.
DELETED: list[tuple[Table, str]] = [
    (Checkin.__table__, "user_id"),  # type: ignore[attr-defined]
    (PointsLedger.__table__, "user_id"),  # type: ignore[attr-defined]
    (PointsBalance.__table__, "user_id"),  # type: ignore[attr-defined]
    (MemberWarning.__table__, "user_id"),  # type: ignore[attr-defined]
    (Newcomer.__table__, "user_id"),  # type: ignore[attr-defined]
    (ChatAdmin.__table__, "user_id"),  # type: ignore[attr-defined]
    (UserProfile.__table__, "user_id"),  # type: ignore[attr-defined]
    (InviteJoinRequest.__table__, "user_id"),  # type: ignore[attr-defined]
    (DashboardLogin.__table__, "user_id"),  # type: ignore[attr-defined]
]

# Ids moved to the group's pseudonym by one UPDATE per group (tables with a chat_id); the
# roster, rollups, votes, lottery entries and moderation log have their own steps in `erase`.
PSEUDONYMISED: list[tuple[Table, str]] = [
    (JoinSource.__table__, "user_id"),  # type: ignore[attr-defined]
    (JoinSource.__table__, "referrer_id"),  # type: ignore[attr-defined]
    (InviteLink.__table__, "referrer_id"),  # type: ignore[attr-defined]
    (ReferralCredit.__table__, "user_id"),  # type: ignore[attr-defined]
    (ReferralCredit.__table__, "referrer_id"),  # type: ignore[attr-defined]
]


def _cleared_columns() -> list[tuple[Table, str]]:
    tables = {table.name: table for table in SQLModel.metadata.sorted_tables}
    return [
        (tables[name], column)
        for (name, column), rule in DECISIONS.items()
        if rule is Rule.CLEAR and name in tables and name != "erasure_request"
    ]


def _in_scope(table: Table, chat_ids: set[int] | None) -> list[object]:
    if chat_ids is None:
        return []
    if "chat_id" not in table.c:
        return [false()]  # a global table: only erased by the member's own /forgetme
    return [table.c.chat_id.in_(chat_ids)]


def _scrub(text: str, names: list[str]) -> str:
    for name in names:
        if name:
            text = re.sub(re.escape(name), ERASED, text, flags=re.IGNORECASE)
    return text


async def erase(
    session: AsyncSession,
    user_id: int,
    *,
    chat_ids: set[int] | None = None,
    pseudonyms: dict[int, int] | None = None,
) -> Erasure:
    """Erase a person's data (everywhere, or in `chat_ids`), in the caller's transaction.

    Idempotent: a second run finds nothing of theirs. The per-chat day totals are kept by the
    rollup triggers, and reassigning a rollup row to another id within its chat and day
    changes none of them. `pseudonyms` (chat → pseudonym of an earlier run) makes a later
    sweep merge rows written meanwhile (by a process that had not learnt the opt-out yet)
    into the same pseudonymous member, so nobody is counted twice.
    """
    done = Erasure(chats=dict(pseudonyms or {}))
    earlier = set(done.chats)
    names = await _known_names(session, user_id, chat_ids)

    # Roster and rollups → the group's pseudonym, names dropped.
    chats = set(
        await session.scalars(
            select(MEMBER.c.chat_id).where(
                MEMBER.c.user_id == user_id, *_in_scope(MEMBER, chat_ids)
            )
        )
    ) | set(
        await session.scalars(
            select(ACTIVITY.c.chat_id)
            .where(ACTIVITY.c.user_id == user_id, *_in_scope(ACTIVITY, chat_ids))
            .distinct()
        )
    )
    for chat_id in sorted(chats):
        pseudonym = done.pseudonym(chat_id)
        if chat_id in earlier:
            done.pseudonymised += await _merge_member(session, chat_id, user_id, pseudonym)
            continue
        moved = await session.execute(
            update(ACTIVITY)
            .where(ACTIVITY.c.chat_id == chat_id, ACTIVITY.c.user_id == user_id)
            .values(user_id=pseudonym)
        )
        done.pseudonymised += moved.rowcount or 0
        moved = await session.execute(
            update(MEMBER)
            .where(MEMBER.c.chat_id == chat_id, MEMBER.c.user_id == user_id)
            .values(user_id=pseudonym, display_name="", username=None)
        )
        done.pseudonymised += moved.rowcount or 0

    # Poll votes → the poll's group's pseudonym.
    vote_chats = (
        await session.execute(
            select(POLL.c.chat_id, VOTE.c.poll_id)
            .join(POLL, POLL.c.id == VOTE.c.poll_id)
            .where(VOTE.c.user_id == user_id, *_in_scope(POLL, chat_ids))
        )
    ).all()
    for chat_id, poll_id in vote_chats:
        if chat_id in earlier:  # the pseudonym's vote (if any) stands; this one goes
            pseudonym_voted = await session.scalar(
                select(VOTE.c.poll_id).where(
                    VOTE.c.poll_id == poll_id, VOTE.c.user_id == done.pseudonym(chat_id)
                )
            )
            if pseudonym_voted is not None:
                await session.execute(
                    delete(VOTE).where(VOTE.c.poll_id == poll_id, VOTE.c.user_id == user_id)
                )
                continue
        moved = await session.execute(
            update(VOTE)
            .where(VOTE.c.poll_id == poll_id, VOTE.c.user_id == user_id)
            .values(user_id=done.pseudonym(chat_id))
        )
        done.pseudonymised += moved.rowcount or 0

    for table, column in PSEUDONYMISED:
        found = await session.scalars(
            select(table.c.chat_id)
            .where(table.c[column] == user_id, *_in_scope(table, chat_ids))
            .distinct()
        )
        for chat_id in sorted(set(found)):
            moved = await session.execute(
                update(table)
                .where(table.c.chat_id == chat_id, table.c[column] == user_id)
                .values({column: done.pseudonym(chat_id)})
            )
            done.pseudonymised += moved.rowcount or 0

    await _erase_lottery_entries(session, user_id, chat_ids, done)
    await _erase_mod_log(session, user_id, chat_ids, done, names)

    # The operator cache: their rows go, and those groups ask Telegram again at the next
    # check (an operator who erased their data stays an operator).
    admin_of = list(
        await session.scalars(
            select(ADMINS.c.chat_id).where(
                ADMINS.c.user_id == user_id, *_in_scope(ADMINS, chat_ids)
            )
        )
    )
    if admin_of:
        await session.execute(
            update(CHAT).where(CHAT.c.id.in_(admin_of)).values(admins_refreshed_at=None)
        )
    for table, column in DELETED:
        result = await session.execute(
            delete(table).where(table.c[column] == user_id, *_in_scope(table, chat_ids))
        )
        done.deleted += result.rowcount or 0
    for table, column in _cleared_columns():
        value = None if table.c[column].nullable else 0
        await session.execute(
            update(table)
            .where(table.c[column] == user_id, *_in_scope(table, chat_ids))
            .values({column: value})
        )
    # Requests that named them (confirmed or not) keep no id of theirs.
    requests = ErasureRequest.__table__  # type: ignore[attr-defined]
    await session.execute(
        delete(requests).where(
            requests.c.subject_id == user_id,
            requests.c.state != "done",
            *_in_scope(requests, chat_ids),
        )
    )
    for column in ("subject_id", "requested_by"):
        await session.execute(
            update(requests)
            .where(requests.c[column] == user_id, *_in_scope(requests, chat_ids))
            .values({column: None})
        )
    return done


async def _merge_member(session: AsyncSession, chat_id: int, user_id: int, pseudonym: int) -> int:
    """Fold rows written under the real id after an erasure into the group's pseudonym.

    A rollup row of a day the pseudonym already has is added to it and deleted (the triggers
    then count the member once that day); other days are reassigned. The roster rows merge
    their counters and activity states (`merge_states`, as a group migration does).
    """
    merged = 0
    rows = (
        await session.execute(
            select(ACTIVITY).where(ACTIVITY.c.chat_id == chat_id, ACTIVITY.c.user_id == user_id)
        )
    ).mappings()
    for row in list(rows):
        key = and_(ACTIVITY.c.chat_id == chat_id, ACTIVITY.c.day == row["day"])
        target = (
            (await session.execute(select(ACTIVITY).where(key, ACTIVITY.c.user_id == pseudonym)))
            .mappings()
            .first()
        )
        if target is None:
            await session.execute(
                update(ACTIVITY)
                .where(key, ACTIVITY.c.user_id == user_id)
                .values(user_id=pseudonym)
            )
        else:
            firsts = [v for v in (target["first_message_ts"], row["first_message_ts"]) if v]
            values: dict[str, object] = {c: target[c] + row[c] for c in COUNTS}
            values.update({f: bool(target[f] or row[f]) for f in FLAGS})
            values["first_message_ts"] = min(firsts) if firsts else None
            await session.execute(delete(ACTIVITY).where(key, ACTIVITY.c.user_id == user_id))
            await session.execute(
                update(ACTIVITY).where(key, ACTIVITY.c.user_id == pseudonym).values(**values)
            )
        merged += 1
    late = await session.get(Member, (chat_id, user_id), populate_existing=True)
    if late is None:
        return merged
    kept = await session.get(Member, (chat_id, pseudonym), populate_existing=True)
    if kept is None:
        await session.execute(
            update(MEMBER)
            .where(MEMBER.c.chat_id == chat_id, MEMBER.c.user_id == user_id)
            .values(user_id=pseudonym, display_name="", username=None)
        )
        return merged + 1
    kept.message_count += late.message_count
    kept.first_seen = min(kept.first_seen, late.first_seen)
    if late.last_active and (kept.last_active is None or late.last_active > kept.last_active):
        kept.last_active = late.last_active
    if late.status_changed_at and (
        kept.status_changed_at is None or late.status_changed_at > kept.status_changed_at
    ):
        kept.status, kept.status_changed_at = late.status, late.status_changed_at
        kept.joined_at, kept.left_at = late.joined_at or kept.joined_at, late.left_at
    kept.active_day, kept.active_mask = merge_states(
        kept.active_day, kept.active_mask, late.active_day, late.active_mask
    )
    await session.delete(late)
    await session.flush()
    return merged + 1


async def _known_names(
    session: AsyncSession, user_id: int, chat_ids: set[int] | None
) -> list[str]:
    """The person's names and @usernames as stored, to scrub them from free texts about them."""
    rows = await session.execute(
        select(MEMBER.c.display_name, MEMBER.c.username).where(
            MEMBER.c.user_id == user_id, *_in_scope(MEMBER, chat_ids)
        )
    )
    names: set[str] = set()
    for display_name, username in rows:
        names.add(display_name)
        if username:
            names.update({f"@{username}", username})
    if chat_ids is None:
        profile = await session.get(UserProfile, user_id)
        if profile is not None:
            names.add(profile.first_name)
            if profile.username:
                names.update({f"@{profile.username}", profile.username})
    # Longest first, so "@alice_w" goes before "alice"; very short names are not scrubbed
    # from free text (they would mangle unrelated words).
    return sorted((n for n in names if len(n) >= 3), key=len, reverse=True)


async def _erase_lottery_entries(
    session: AsyncSession, user_id: int, chat_ids: set[int] | None, done: Erasure
) -> None:
    """Open lotteries: the entry is withdrawn. Drawn ones: pseudonymised at its fixed rank.

    A drawn lottery's ranking is HMAC(seed, "<lottery>:<user id>"): once the id is replaced,
    that entrant's ticket cannot be recomputed, so its position in the ranking (which the
    entrant list with HMACs published after the draw already showed) is recorded in `rank`;
    `bot.lottery.ranking` places pseudonymised entrants at their recorded positions and
    verifies everybody else against the seed as before.
    """
    rows = (
        await session.execute(
            select(LOTTERY.c.id, LOTTERY.c.chat_id, LOTTERY.c.state, LOTTERY.c.seed)
            .join(ENTRY, ENTRY.c.lottery_id == LOTTERY.c.id)
            .where(ENTRY.c.user_id == user_id, *_in_scope(LOTTERY, chat_ids))
        )
    ).all()
    for lottery_id, chat_id, state, seed in rows:
        where = and_(ENTRY.c.lottery_id == lottery_id, ENTRY.c.user_id == user_id)
        if state == LotteryState.OPEN:
            await session.execute(delete(ENTRY).where(where))
            await session.execute(
                update(LOTTERY)
                .where(LOTTERY.c.id == lottery_id)
                .values(entry_count=LOTTERY.c.entry_count - 1)
            )
            done.withdrawn_entries += 1
            continue
        values: dict[str, object] = {
            "user_id": done.pseudonym(chat_id),
            "name": "",
            "username": None,
        }
        if state in (LotteryState.DRAWING, LotteryState.DRAWN):
            entrants = (
                await session.execute(
                    select(ENTRY.c.user_id, ENTRY.c.rank).where(ENTRY.c.lottery_id == lottery_id)
                )
            ).all()
            fixed = {u: r for u, r in entrants if u < 0 and r is not None}
            order = ranking(bytes.fromhex(seed), lottery_id, [u for u, _ in entrants], fixed)
            values["rank"] = order.index(user_id) + 1
        await session.execute(update(ENTRY).where(where).values(**values))
        done.pseudonymised += 1


async def _erase_mod_log(
    session: AsyncSession,
    user_id: int,
    chat_ids: set[int] | None,
    done: Erasure,
    names: list[str],
) -> None:
    """Moderation history: kept with the group's pseudonym, names and their own words gone."""
    entries = (
        await session.execute(
            select(MODLOG).where(
                or_(MODLOG.c.target_id == user_id, MODLOG.c.actor_id == user_id),
                *_in_scope(MODLOG, chat_ids),
            )
        )
    ).all()
    for entry in entries:
        pseudonym = done.pseudonym(entry.chat_id)
        values: dict[str, object] = {"reason": _scrub(entry.reason or "", names)}
        if entry.target_id == user_id:
            values.update(target_id=pseudonym, target_name="")
        if entry.actor_id == user_id:
            values.update(actor_id=pseudonym, actor_name="")
            if entry.action in OWN_WORDS_ACTIONS:
                values["reason"] = ""
        await session.execute(update(MODLOG).where(MODLOG.c.id == entry.id).values(**values))
        done.pseudonymised += 1
