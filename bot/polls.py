"""Polls, quizzes and surveys (投票 / 问卷): parsing, storage, votes, tallies and summaries.

A poll is a native Telegram poll the bot sent; it is stored keyed by Telegram's poll id and
its message. Votes come from `poll_answer` updates (non-anonymous polls only; one row per
member, a changed vote updates it, an empty vote deletes it) and count as participation in
the daily rollups. Tallies come from `poll` updates and from stopPoll's answer: they are
Telegram's own counts, so they also cover anonymous polls. A survey is several polls sent one
after another under one title and closed together.

Closing is claimed in the database (`claim_close`, a conditional UPDATE) by whoever closes —
the schedule (schedules/polls.py) or /closepoll — so a poll is stopped and summarised once.

Everything here is plain functions over an AsyncSession with the clock passed in, except the
small Telegram-facing part at the end (`publish_poll`, `stop_telegram_poll`), which follows
bot/sending.py's handling of ChatMigrated and Forbidden.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Integer,
    and_,
    bindparam,
    delete,
    distinct,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel
from telegram import Bot, InputPollOption, Message
from telegram import Poll as TelegramPoll
from telegram.constants import PollLimit
from telegram.error import BadRequest, ChatMigrated, Forbidden

from bot.activity import mark_participation
from bot.cluster import PROCESS, claimed_by_stopped_process
from bot.db import excluded, insert_for, prepared, upsert
from bot.i18n import t
from bot.models import DailyActivity, chat_fk, utc_column
from bot.services import Services
from bot.text import escape, utf16_len
from bot.timeparse import parse_when

log = logging.getLogger(__name__)

# --- limits (Telegram's, from PTB 22.8 / Bot API 10.0, and our own) -------------------------

MAX_QUESTION = int(PollLimit.MAX_QUESTION_LENGTH)  # 300
MAX_OPTION = int(PollLimit.MAX_OPTION_LENGTH)  # 100
MAX_OPTIONS = int(PollLimit.MAX_OPTION_NUMBER)  # 12 (it was 10 before Bot API 9.6)
MIN_OPTIONS = 2  # Telegram accepts 1, but a poll with one answer is not a question
MAX_EXPLANATION = int(PollLimit.MAX_EXPLANATION_LENGTH)  # 200
MAX_TITLE = 255
MIN_SURVEY_QUESTIONS = 2
MAX_SURVEY_QUESTIONS = 10  # a group may receive ~20 messages a minute from a bot
BAR_WIDTH = 10

Kind = Literal["poll", "survey"]

# --- tables ----------------------------------------------------------------------------------


class Survey(SQLModel, table=True):
    """A titled sequence of polls, closed together and summarised in one message."""

    __tablename__ = "survey"

    id: int | None = Field(default=None, primary_key=True)
    chat_id: int = Field(sa_column=chat_fk(index=True))
    title: str = Field(max_length=MAX_TITLE)
    header_message_id: int | None = Field(default=None, sa_type=BigInteger)
    state: str = Field(default="open", max_length=16)  # open | closing | closed
    created_by: int = Field(sa_type=BigInteger)
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    close_at: datetime | None = Field(default=None, sa_column=utc_column())
    claimed_at: datetime | None = Field(default=None, sa_column=utc_column())
    claimed_by: str | None = Field(default=None, max_length=64)  # the closing process
    close_attempts: int = Field(default=0)
    closed_at: datetime | None = Field(default=None, sa_column=utc_column())
    summary_message_id: int | None = Field(default=None, sa_type=BigInteger)


class Poll(SQLModel, table=True):
    """A poll the bot sent. `id` is the number operators use (/closepoll 12)."""

    __tablename__ = "poll"

    id: int | None = Field(default=None, primary_key=True)
    chat_id: int = Field(sa_column=chat_fk(index=True))
    telegram_poll_id: str = Field(max_length=64, unique=True)
    message_id: int = Field(sa_type=BigInteger)
    survey_id: int | None = Field(
        default=None,
        sa_column=Column(
            Integer, ForeignKey("survey.id", ondelete="CASCADE"), nullable=True, index=True
        ),
    )
    position: int = Field(default=0)  # order within its survey
    question: str = Field(max_length=MAX_QUESTION)
    kind: str = Field(default="regular", max_length=8)  # regular | quiz
    anonymous: bool = Field(default=False)
    multiple: bool = Field(default=False)
    correct_option: int | None = Field(default=None)  # 0-based
    explanation: str | None = Field(default=None, max_length=MAX_EXPLANATION)
    # Standalone polls close through their own row; a survey's polls through the survey's.
    state: str = Field(default="open", max_length=16)  # open | closing | closed
    created_by: int = Field(sa_type=BigInteger)
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    close_at: datetime | None = Field(default=None, sa_column=utc_column())
    claimed_at: datetime | None = Field(default=None, sa_column=utc_column())
    claimed_by: str | None = Field(default=None, max_length=64)  # the closing process
    close_attempts: int = Field(default=0)
    stopped_at: datetime | None = Field(default=None, sa_column=utc_column())
    closed_at: datetime | None = Field(default=None, sa_column=utc_column())
    total_voters: int | None = Field(default=None)  # Telegram's count; None: never told
    tally_final: bool = Field(default=False)  # the tally of the closed poll
    summary_message_id: int | None = Field(default=None, sa_type=BigInteger)
    # A poll posted by the content calendar: the delivery it was posted for, so a retried
    # delivery finds its poll instead of posting a second one (UNIQUE: one poll per delivery).
    calendar_delivery_id: int | None = Field(
        default=None, sa_column=Column(Integer, nullable=True, unique=True, index=True)
    )


class PollOption(SQLModel, table=True):
    """One answer option, with Telegram's latest count of its voters."""

    __tablename__ = "poll_option"

    poll_id: int = Field(
        sa_column=Column(Integer, ForeignKey("poll.id", ondelete="CASCADE"), primary_key=True)
    )
    position: int = Field(primary_key=True)
    text: str = Field(max_length=MAX_OPTION)
    persistent_id: str | None = Field(default=None, max_length=64)
    voter_count: int = Field(default=0)


class PollVote(SQLModel, table=True):
    """A member's current answer to a non-anonymous poll (option positions, "0,2")."""

    __tablename__ = "poll_vote"

    poll_id: int = Field(
        sa_column=Column(Integer, ForeignKey("poll.id", ondelete="CASCADE"), primary_key=True)
    )
    user_id: int = Field(sa_type=BigInteger, primary_key=True, index=True)
    option_ids: str = Field(max_length=64)
    voted_at: datetime = Field(sa_column=utc_column(nullable=False))
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))


class PollSettings(SQLModel, table=True):
    """Per-group poll settings."""

    __tablename__ = "poll_settings"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    quiz_points: int = Field(default=0)  # points for a right quiz answer; 0 = off


POLL_TABLE = Poll.__table__  # type: ignore[attr-defined]
SURVEY_TABLE = Survey.__table__  # type: ignore[attr-defined]
VOTE_TABLE = PollVote.__table__  # type: ignore[attr-defined]
SETTINGS_TABLE = PollSettings.__table__  # type: ignore[attr-defined]

# --- parsing what operators type -------------------------------------------------------------


class PollInputError(ValueError):
    """Bad /poll or /survey input; `key` names the message in polls.yaml (polls.error.*)."""

    def __init__(self, key: str, **values: Any) -> None:
        super().__init__(key)
        self.key = key
        self.values = values


@dataclass(frozen=True, slots=True)
class PollSpec:
    """A poll to send, validated against Telegram's limits."""

    question: str
    options: tuple[str, ...]
    anonymous: bool = False
    multiple: bool = False
    correct_option: int | None = None  # 0-based
    explanation: str | None = None
    close_at: datetime | None = None

    @property
    def is_quiz(self) -> bool:
        return self.correct_option is not None


@dataclass(frozen=True, slots=True)
class SurveySpec:
    title: str
    questions: tuple[PollSpec, ...]
    close_at: datetime | None = None


# Flags are words before the question. Bare words count only in lower case, so a question may
# begin with "Anonymous …", "Quiz: …" or "Close the office …"; `key=value` forms in any case.
ANONYMOUS_WORDS = frozenset({"anonymous", "anon", "匿名"})
MULTI_WORDS = frozenset({"multi", "multiple", "多选"})
QUIZ_KEYS = frozenset({"quiz", "测验", "答题"})
CLOSE_KEYS = frozenset({"close", "closes", "截止", "结束"})
# `quiz=2`, `close=2h`; also `quiz:2` / `截止：2h` when the value is attached.
_KEY_VALUE = re.compile(r"^([^\W\d]+)(?:\s*[=＝](.*)|[:：](.+))$")
_LOOKS_LIKE_FLAG = re.compile(r"^[a-z]{3,}=")
_EXPLAIN = re.compile(r"^(?:explain|explanation|解析|解释)\s*[:：]\s*(.*)$", re.IGNORECASE | re.S)
_SEPARATOR = re.compile(r"[|｜]")


def command_body(text: str | None) -> str:
    """The text after `/command[@bot]` (newlines kept, for multi-line forms)."""
    if not text:
        return ""
    parts = text.split(None, 1)
    return parts[1] if len(parts) > 1 else ""


def _read_flags(head: str, *, now: datetime, tz: ZoneInfo) -> tuple[dict[str, Any], str]:
    """Peel the flags off the front of `head`; returns (flags, the rest: the question)."""
    flags: dict[str, Any] = {}
    words = head.split()
    i = 0
    while i < len(words):
        word = words[i]
        if word in ANONYMOUS_WORDS:
            flags["anonymous"] = True
            i += 1
            continue
        if word in MULTI_WORDS:
            flags["multiple"] = True
            i += 1
            continue
        if word in QUIZ_KEYS:
            raise PollInputError("quiz_needs_option")
        if word in CLOSE_KEYS:
            raise PollInputError("close_needs_time")
        match = _KEY_VALUE.match(word)
        key = match.group(1).lower() if match else ""
        value = ((match.group(2) or match.group(3) or "") if match else "").strip()
        if key in QUIZ_KEYS:
            if not value.isdigit():
                raise PollInputError("quiz_needs_option")
            flags["quiz"] = int(value)
            i += 1
            continue
        if key in CLOSE_KEYS:
            rest = ([value] if value else []) + words[i + 1 :]
            found = parse_when(rest, now=now, tz=tz)
            if found is None:
                raise PollInputError("close_unreadable", value=" ".join(rest[:2]))
            moment, used = found
            if moment <= now:
                raise PollInputError("close_past", value=" ".join(rest[:used]))
            flags["close_at"] = moment
            i += 1 + used - (1 if value else 0)
            continue
        if _LOOKS_LIKE_FLAG.match(word):
            raise PollInputError("unknown_flag", flag=word)
        break
    return flags, " ".join(words[i:])


def _segments(body: str) -> list[str]:
    """`Q | a | b` (or one per line when no `|` is used)."""
    if _SEPARATOR.search(body):
        parts = _SEPARATOR.split(body)
    else:
        parts = body.split("\n")
    parts = [part.strip() for part in parts]
    while len(parts) > 1 and not parts[-1]:
        parts.pop()  # a trailing separator
    return parts


def parse_poll(
    body: str,
    *,
    now: datetime,
    tz: ZoneInfo,
    in_survey: bool = False,
) -> PollSpec:
    """Read `[anonymous] [multi] [quiz=N] [close=WHEN] Question? | a | b [| explain: …]`.

    Raises PollInputError naming what is wrong. In a survey, `anonymous` and `close=` belong
    to the survey (its first line), not to a question.
    """
    segments = _segments(body.strip())
    if not segments or not segments[0]:
        raise PollInputError("question_missing")
    flags, question = _read_flags(segments[0], now=now, tz=tz)
    if in_survey and "anonymous" in flags:
        raise PollInputError("survey_anonymous")
    if in_survey and "close_at" in flags:
        raise PollInputError("survey_close_on_question")
    options: list[str] = []
    explanation: str | None = None
    for segment in segments[1:]:
        match = _EXPLAIN.match(segment)
        if match:
            if explanation is not None:
                raise PollInputError("explanation_twice")
            explanation = match.group(1).strip()
            continue
        options.append(segment)

    problems = poll_problems(
        question,
        options,
        multiple=bool(flags.get("multiple")),
        quiz=flags.get("quiz"),
        explanation=explanation,
    )
    if problems:
        raise problems[0]
    correct = flags["quiz"] - 1 if "quiz" in flags else None
    return PollSpec(
        question=question,
        options=tuple(options),
        anonymous=bool(flags.get("anonymous")),
        multiple=bool(flags.get("multiple")),
        correct_option=correct,
        explanation=explanation or None,
        close_at=flags.get("close_at"),
    )


def poll_problems(
    question: str,
    options: Sequence[str],
    *,
    multiple: bool,
    quiz: int | None,
    explanation: str | None,
) -> list[PollInputError]:
    """Every way a poll breaks Telegram's limits or our rules, in the order /poll reports them.

    `quiz` is the number of the right option counted from 1. Shared by /poll (which reports the
    first problem) and the content calendar's poll posts (which report them all, with lines).
    """
    found: list[PollInputError] = []
    if not question:
        found.append(PollInputError("question_missing"))
    elif utf16_len(question) > MAX_QUESTION:
        found.append(
            PollInputError("question_long", length=utf16_len(question), limit=MAX_QUESTION)
        )
    if len(options) < MIN_OPTIONS:
        found.append(PollInputError("too_few_options", count=len(options), minimum=MIN_OPTIONS))
    if len(options) > MAX_OPTIONS:
        found.append(PollInputError("too_many_options", count=len(options), limit=MAX_OPTIONS))
    seen: set[str] = set()
    for number, option in enumerate(options, start=1):
        if not option:
            found.append(PollInputError("option_empty", number=number))
        elif utf16_len(option) > MAX_OPTION:
            found.append(
                PollInputError(
                    "option_long", number=number, length=utf16_len(option), limit=MAX_OPTION
                )
            )
        elif option.casefold() in seen:
            found.append(PollInputError("option_twice", option=option, number=number))
        seen.add(option.casefold())
    if quiz is not None:
        if not 1 <= quiz <= len(options):
            found.append(PollInputError("quiz_out_of_range", number=quiz, count=len(options)))
        elif multiple:
            found.append(PollInputError("quiz_multi"))
    if explanation is not None:
        if quiz is None:
            found.append(PollInputError("explanation_without_quiz"))
        elif utf16_len(explanation) > MAX_EXPLANATION:
            found.append(
                PollInputError(
                    "explanation_long", length=utf16_len(explanation), limit=MAX_EXPLANATION
                )
            )
    return found


def parse_survey(body: str, *, now: datetime, tz: ZoneInfo) -> SurveySpec:
    """`[close=WHEN] Title` on the first line, then one question per line (poll syntax).

    Errors about a question carry its number in `values["question"]`.
    """
    lines = [line.strip() for line in body.strip().split("\n")]
    lines = [line for line in lines if line]
    if not lines:
        raise PollInputError("survey_title_missing")
    flags, title = _read_flags(lines[0], now=now, tz=tz)
    if flags.get("anonymous"):
        raise PollInputError("survey_anonymous")
    if "multiple" in flags or "quiz" in flags:
        raise PollInputError("survey_flag_on_title")
    if _SEPARATOR.search(title):
        raise PollInputError("survey_one_per_line")
    if not title:
        raise PollInputError("survey_title_missing")
    if utf16_len(title) > MAX_TITLE:
        raise PollInputError("title_long", length=utf16_len(title), limit=MAX_TITLE)
    questions: list[PollSpec] = []
    for number, line in enumerate(lines[1:], start=1):
        if not _SEPARATOR.search(line):
            raise PollInputError("survey_line_without_options", question=number)
        try:
            questions.append(parse_poll(line, now=now, tz=tz, in_survey=True))
        except PollInputError as exc:
            exc.values["question"] = number
            raise
    if len(questions) < MIN_SURVEY_QUESTIONS:
        raise PollInputError("survey_too_few", count=len(questions), minimum=MIN_SURVEY_QUESTIONS)
    if len(questions) > MAX_SURVEY_QUESTIONS:
        raise PollInputError("survey_too_many", count=len(questions), limit=MAX_SURVEY_QUESTIONS)
    return SurveySpec(title=title, questions=tuple(questions), close_at=flags.get("close_at"))


# --- recording polls, votes and tallies ------------------------------------------------------


async def record_poll(
    session: AsyncSession,
    *,
    chat_id: int,
    message: Message,
    spec: PollSpec,
    created_by: int,
    now: datetime,
    close_at: datetime | None,
    survey_id: int | None = None,
    position: int = 0,
    calendar_delivery_id: int | None = None,
) -> Poll:
    """Store a poll the bot just sent (its Telegram id, message and options)."""
    sent = message.poll
    assert sent is not None
    row = Poll(
        chat_id=chat_id,
        telegram_poll_id=sent.id,
        message_id=message.message_id,
        survey_id=survey_id,
        position=position,
        question=spec.question,
        kind="quiz" if spec.is_quiz else "regular",
        anonymous=spec.anonymous,
        multiple=spec.multiple,
        correct_option=spec.correct_option,
        explanation=spec.explanation,
        created_by=created_by,
        created_at=now,
        close_at=close_at,
        calendar_delivery_id=calendar_delivery_id,
    )
    session.add(row)
    await session.flush()
    persistent = [getattr(option, "persistent_id", None) for option in sent.options]
    for position_, text in enumerate(spec.options):
        session.add(
            PollOption(
                poll_id=row.id,
                position=position_,
                text=text,
                persistent_id=persistent[position_] if position_ < len(persistent) else None,
            )
        )
    await session.flush()
    return row


@dataclass(frozen=True, slots=True)
class PollRef:
    id: int
    chat_id: int


def _find_poll(dialect: str) -> Any:
    return select(POLL_TABLE.c.id, POLL_TABLE.c.chat_id).where(
        POLL_TABLE.c.telegram_poll_id == bindparam("telegram_id")
    )


async def find_poll(session: AsyncSession, telegram_poll_id: str) -> PollRef | None:
    """Our poll with this Telegram id (None: a poll this bot did not send)."""
    row = (
        await session.execute(
            prepared(session, "polls.find", _find_poll), {"telegram_id": telegram_poll_id}
        )
    ).first()
    return PollRef(row[0], row[1]) if row else None


async def quiz_points_setting(session: AsyncSession, chat_id: int) -> int:
    value = await session.scalar(
        select(PollSettings.quiz_points).where(PollSettings.chat_id == chat_id)
    )
    return int(value or 0)


async def set_quiz_points(session: AsyncSession, chat_id: int, points: int) -> None:
    await upsert(
        session,
        SETTINGS_TABLE,
        [{"chat_id": chat_id, "quiz_points": points}],
        key=("chat_id",),
        update=lambda new: {"quiz_points": new.quiz_points},
    )


async def award_quiz_points(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    poll_id: int,
    amount: int,
    now: datetime,
) -> bool:
    """THE single place where a right quiz answer earns points (once per member per quiz).

    Awards through the points ledger; the source key makes it idempotent (quizzes cannot be
    re-voted anyway). Runs inside the vote's transaction.
    """
    from bot import points

    return await points.award(
        session,
        chat_id=chat_id,
        user_id=user_id,
        amount=amount,
        reason="quiz",
        source="quiz",
        source_key=f"quiz:{poll_id}:{user_id}",
        now=now,
    )


VoteOutcome = Literal["voted", "changed", "retracted", "ignored"]


def _vote_context(dialect: str) -> Any:
    voted = (
        select(VOTE_TABLE.c.user_id)
        .where(VOTE_TABLE.c.poll_id == POLL_TABLE.c.id, VOTE_TABLE.c.user_id == bindparam("user"))
        .exists()
    )
    return select(
        POLL_TABLE.c.chat_id, POLL_TABLE.c.kind, POLL_TABLE.c.correct_option, voted.label("voted")
    ).where(POLL_TABLE.c.id == bindparam("poll"))


def _retract(dialect: str) -> Any:
    return delete(VOTE_TABLE).where(
        VOTE_TABLE.c.poll_id == bindparam("poll"), VOTE_TABLE.c.user_id == bindparam("user")
    )


def _vote(dialect: str) -> Any:
    new = excluded(VOTE_TABLE)
    return (
        insert_for(dialect, VOTE_TABLE)
        .values(
            poll_id=bindparam("poll_id"),
            user_id=bindparam("user_id"),
            option_ids=bindparam("option_ids"),
            voted_at=bindparam("now"),
            updated_at=bindparam("now"),
        )
        .on_conflict_do_update(
            index_elements=["poll_id", "user_id"],
            set_={"option_ids": new.option_ids, "updated_at": new.updated_at},
        )
    )


async def record_vote(
    session: AsyncSession,
    *,
    poll_id: int,
    user_id: int,
    name: str,
    username: str | None,
    option_ids: Sequence[int],
    now: datetime,
    day: date,
) -> VoteOutcome:
    """Record a member's answer (a change replaces it, an empty answer retracts it).

    A vote marks the member's participation on `day` (the chat-local day the answer was
    received: poll_answer updates carry no date). A retraction removes the vote but not the
    participation: they did take part that day.
    """
    poll = (
        await session.execute(
            prepared(session, "polls.vote_context", _vote_context),
            {"poll": poll_id, "user": user_id},
        )
    ).first()
    if poll is None:
        return "ignored"
    if not option_ids:
        result = await session.execute(
            prepared(session, "polls.retract", _retract), {"poll": poll_id, "user": user_id}
        )
        return "retracted" if result.rowcount else "ignored"
    existed = bool(poll.voted)
    await session.execute(
        prepared(session, "polls.vote", _vote),
        {
            "poll_id": poll_id,
            "user_id": user_id,
            "option_ids": ",".join(str(i) for i in sorted(set(option_ids))),
            "now": now,
        },
    )
    await mark_participation(
        session,
        chat_id=poll.chat_id,
        user_id=user_id,
        name=name,
        username=username,
        when=now,
        day=day,
        kind="poll_answered",
    )
    if poll.kind == "quiz" and poll.correct_option in option_ids and not existed:
        amount = await quiz_points_setting(session, poll.chat_id)
        if amount > 0:
            await award_quiz_points(
                session,
                chat_id=poll.chat_id,
                user_id=user_id,
                poll_id=poll_id,
                amount=amount,
                now=now,
            )
    return "changed" if existed else "voted"


async def record_tally(
    session: AsyncSession,
    *,
    poll_id: int,
    counts: Sequence[int],
    total_voters: int,
    final: bool,
) -> bool:
    """Store Telegram's counts for a poll; once the final tally is in, later ones are ignored."""
    poll = await session.get(Poll, poll_id)
    if poll is None or (poll.tally_final and not final):
        return False
    options = await session.scalars(select(PollOption).where(PollOption.poll_id == poll_id))
    for option in options:
        if option.position < len(counts):
            option.voter_count = counts[option.position]
    poll.total_voters = total_voters
    poll.tally_final = poll.tally_final or final
    return True


def tally_of(telegram_poll: TelegramPoll) -> tuple[list[int], int]:
    return [
        option.voter_count for option in telegram_poll.options
    ], telegram_poll.total_voter_count


# --- closing: claims and outcomes -------------------------------------------------------------


def _closing_table(kind: Kind) -> Any:
    return SURVEY_TABLE if kind == "survey" else POLL_TABLE


async def claim_close(
    session: AsyncSession,
    kind: Kind,
    row_id: int,
    *,
    now: datetime,
    lease: timedelta,
    by: str | None = None,
    process_lease: timedelta | None = None,
) -> bool:
    """Take the close of a poll/survey for this caller; False when someone else has it.

    A claim older than `lease` is considered abandoned (the process died or Telegram failed)
    and may be taken again, so a close is never lost; so is a claim of a process that has
    stopped beating for `process_lease` (bot.cluster). It is never done twice while the
    first attempt is alive.
    """
    table = _closing_table(kind)
    conditions = [table.c.id == row_id]
    if kind == "poll":
        conditions.append(table.c.survey_id.is_(None))
    abandoned = table.c.claimed_at <= now - lease
    if by is not None and process_lease is not None:
        stopped = claimed_by_stopped_process(
            table.c.claimed_by, me=by, now=now, lease=process_lease
        )
        abandoned = or_(abandoned, stopped)
    result = await session.execute(
        update(table)
        .where(
            *conditions,
            or_(table.c.state == "open", and_(table.c.state == "closing", abandoned)),
        )
        .values(
            state="closing",
            claimed_at=now,
            claimed_by=by,
            close_attempts=table.c.close_attempts + 1,
        )
    )
    return result.rowcount == 1


async def polls_to_close(session: AsyncSession, kind: Kind, row_id: int) -> list[Poll]:
    """The polls a close covers: the poll itself, or a survey's polls in order."""
    if kind == "poll":
        poll = await session.get(Poll, row_id)
        return [poll] if poll else []
    return list(
        await session.scalars(select(Poll).where(Poll.survey_id == row_id).order_by(Poll.position))
    )


async def mark_stopped(session: AsyncSession, poll_id: int, *, now: datetime) -> None:
    await session.execute(
        update(POLL_TABLE).where(POLL_TABLE.c.id == poll_id).values(stopped_at=now)
    )


async def mark_closed(
    session: AsyncSession,
    kind: Kind,
    row_id: int,
    *,
    now: datetime,
    summary_message_id: int | None,
) -> None:
    table = _closing_table(kind)
    await session.execute(
        update(table)
        .where(table.c.id == row_id)
        .values(state="closed", closed_at=now, summary_message_id=summary_message_id)
    )
    if kind == "survey":
        await session.execute(
            update(POLL_TABLE)
            .where(POLL_TABLE.c.survey_id == row_id)
            .values(state="closed", closed_at=now)
        )


@dataclass(frozen=True, slots=True)
class PendingClose:
    kind: Kind
    row_id: int
    when: datetime


async def pending_closes(
    session: AsyncSession,
    *,
    lease: timedelta,
    now: datetime | None = None,
    process_lease: timedelta | None = None,
) -> list[PendingClose]:
    """Every close the schedule owes: timed open polls/surveys, and claims to retry (at
    once when their process has stopped beating for `process_lease`)."""
    stopped: set[str] = set()
    if now is not None and process_lease is not None:
        stopped = set(
            await session.scalars(
                select(PROCESS.c.token).where(PROCESS.c.seen_at < now - process_lease)
            )
        )
    found: list[PendingClose] = []
    for kind, table in (("poll", POLL_TABLE), ("survey", SURVEY_TABLE)):
        conditions = [table.c.survey_id.is_(None)] if kind == "poll" else []
        rows = await session.execute(
            select(
                table.c.id, table.c.state, table.c.close_at, table.c.claimed_at, table.c.claimed_by
            ).where(
                *conditions,
                or_(
                    and_(table.c.state == "open", table.c.close_at.is_not(None)),
                    table.c.state == "closing",
                ),
            )
        )
        for row_id, state, close_at, claimed_at, claimed_by in rows:
            when = close_at if state == "open" else claimed_at + lease
            if state == "closing" and claimed_by in stopped and now is not None:
                when = min(when, now)
            found.append(PendingClose(kind, row_id, when))  # type: ignore[arg-type]
    return found


# --- results ---------------------------------------------------------------------------------


def percent(part: int, whole: int) -> int:
    """Whole percent, rounded half up (3 of 8 → 38)."""
    if whole <= 0:
        return 0
    return (200 * part + whole) // (2 * whole)


def bar(part: int, whole: int, width: int = BAR_WIDTH) -> str:
    """A text bar of `width` cells, filled in proportion (rounded half up)."""
    filled = 0 if whole <= 0 else min(width, (2 * width * part + whole) // (2 * whole))
    return "█" * filled + "░" * (width - filled)


@dataclass(frozen=True, slots=True)
class OptionResult:
    text: str
    count: int
    percent: int
    bar: str
    correct: bool


@dataclass(frozen=True, slots=True)
class PollResult:
    """What a summary says about one poll; all arithmetic is done here."""

    poll_id: int
    question: str
    kind: str
    anonymous: bool
    multiple: bool
    options: tuple[OptionResult, ...]
    voters: int
    active: int  # active members in the poll's period (never fewer than the voters)
    turnout: int | None  # percent of active members who voted
    right: int | None = None  # quizzes: voters who chose the correct option
    right_percent: int | None = None
    correct_text: str | None = None
    explanation: str | None = None


def compute_result(
    poll: Poll, options: Sequence[PollOption], counts: Sequence[int], voters: int, active: int
) -> PollResult:
    """Percentages are of voters (for multiple-answer polls they add up to more than 100)."""
    active = max(active, voters)
    rows = []
    for option, count in zip(options, counts, strict=True):
        rows.append(
            OptionResult(
                text=option.text,
                count=count,
                percent=percent(count, voters),
                bar=bar(count, voters),
                correct=poll.kind == "quiz" and option.position == poll.correct_option,
            )
        )
    right = right_percent = correct_text = None
    if poll.kind == "quiz" and poll.correct_option is not None:
        right = counts[poll.correct_option] if poll.correct_option < len(counts) else 0
        right_percent = percent(right, voters)
        correct_text = options[poll.correct_option].text
    return PollResult(
        poll_id=poll.id or 0,
        question=poll.question,
        kind=poll.kind,
        anonymous=poll.anonymous,
        multiple=poll.multiple,
        options=tuple(rows),
        voters=voters,
        active=active,
        turnout=percent(voters, active) if active else None,
        right=right,
        right_percent=right_percent,
        correct_text=correct_text,
        explanation=poll.explanation,
    )


async def poll_options(session: AsyncSession, poll_id: int) -> list[PollOption]:
    return list(
        await session.scalars(
            select(PollOption).where(PollOption.poll_id == poll_id).order_by(PollOption.position)
        )
    )


async def counts_of(
    session: AsyncSession, poll: Poll, options: Sequence[PollOption]
) -> tuple[list[int], int]:
    """Per-option counts and voters: Telegram's tally when known, else our recorded votes."""
    if poll.total_voters is not None:
        return [option.voter_count for option in options], poll.total_voters
    counts = [0] * len(options)
    voters = 0
    for option_ids in await session.scalars(
        select(PollVote.option_ids).where(PollVote.poll_id == poll.id)
    ):
        voters += 1
        for raw in option_ids.split(","):
            if raw.isdigit() and int(raw) < len(counts):
                counts[int(raw)] += 1
    return counts, voters


ACTIVE = or_(
    DailyActivity.messages > 0,
    DailyActivity.checked_in.is_(True),
    DailyActivity.poll_answered.is_(True),
    DailyActivity.lottery_entered.is_(True),
)


async def active_members(session: AsyncSession, chat_id: int, first: date, last: date) -> int:
    """Distinct members active (DESIGN §4) on any chat-local day from `first` to `last`."""
    value = await session.scalar(
        select(func.count(distinct(DailyActivity.user_id))).where(
            DailyActivity.chat_id == chat_id,
            DailyActivity.day >= first,
            DailyActivity.day <= last,
            ACTIVE,
        )
    )
    return int(value or 0)


def period_days(start: datetime, end: datetime, tz: ZoneInfo) -> tuple[date, date]:
    return start.astimezone(tz).date(), max(start, end).astimezone(tz).date()


async def poll_result(
    session: AsyncSession, poll: Poll, *, tz: ZoneInfo, until: datetime
) -> PollResult:
    options = await poll_options(session, poll.id)  # type: ignore[arg-type]
    counts, voters = await counts_of(session, poll, options)
    first, last = period_days(poll.created_at, poll.closed_at or until, tz)
    active = await active_members(session, poll.chat_id, first, last)
    return compute_result(poll, options, counts, voters, active)


@dataclass(frozen=True, slots=True)
class SurveyResult:
    survey_id: int
    title: str
    questions: tuple[PollResult, ...]
    respondents: int  # members who answered at least one question
    completed: int  # members who answered every question
    completed_percent: int
    active: int
    turnout: int | None


async def survey_result(
    session: AsyncSession, survey: Survey, *, tz: ZoneInfo, until: datetime
) -> SurveyResult:
    polls = await polls_to_close(session, "survey", survey.id)  # type: ignore[arg-type]
    questions = [await poll_result(session, poll, tz=tz, until=until) for poll in polls]
    ids = [poll.id for poll in polls]
    answered = (
        await session.execute(
            select(PollVote.user_id, func.count(distinct(PollVote.poll_id)))
            .where(PollVote.poll_id.in_(ids))
            .group_by(PollVote.user_id)
        )
    ).all()
    respondents = len(answered)
    completed = sum(1 for _, count in answered if count == len(ids))
    first, last = period_days(survey.created_at, survey.closed_at or until, tz)
    active = max(await active_members(session, survey.chat_id, first, last), respondents)
    return SurveyResult(
        survey_id=survey.id or 0,
        title=survey.title,
        questions=tuple(questions),
        respondents=respondents,
        completed=completed,
        completed_percent=percent(completed, respondents),
        active=active,
        turnout=percent(respondents, active) if active else None,
    )


# --- rendering (HTML; every user-supplied string escaped here) -------------------------------


def _option_lines(result: PollResult) -> list[str]:
    lines = []
    for option in result.options:
        mark = " ✅" if option.correct else ""
        lines.append(
            f"<code>{option.bar}</code> {option.percent}% · {option.count} — "
            f"{escape(option.text)}{mark}"
        )
    return lines


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _poll_notes(lang: str, result: PollResult) -> list[str]:
    lines = []
    if result.multiple:
        lines.append(t(lang, "polls.summary_multi"))
    if result.anonymous:
        lines.append(t(lang, "polls.summary_anonymous"))
    return lines


def _turnout(lang: str, voters: int, active: int, turnout: int | None, key: str) -> str:
    if turnout is None:
        return t(lang, f"polls.{key}_no_active", voters=voters)
    return t(lang, f"polls.{key}", voters=voters, active=active, turnout=turnout)


def render_poll_summary(lang: str, result: PollResult) -> str:
    lines = [
        t(lang, "polls.summary_title", id=result.poll_id),
        f"<b>{escape(_one_line(result.question))}</b>",
        *_option_lines(result),
        _turnout(lang, result.voters, result.active, result.turnout, "summary_voters"),
    ]
    if result.correct_text is not None:
        lines.append(
            t(
                lang,
                "polls.summary_quiz",
                answer=escape(_one_line(result.correct_text)),
                right=result.right,
                voters=result.voters,
                percent=result.right_percent,
            )
        )
        if result.explanation:
            lines.append(f"💡 {escape(_one_line(result.explanation))}")
    lines.extend(_poll_notes(lang, result))
    return "\n".join(lines)


def render_survey_summary(lang: str, result: SurveyResult) -> str:
    lines = [t(lang, "polls.survey_summary_title", title=escape(_one_line(result.title)))]
    for number, question in enumerate(result.questions, start=1):
        lines.append("")
        lines.append(f"<b>{number}. {escape(_one_line(question.question))}</b>")
        lines.extend(_option_lines(question))
        lines.append(t(lang, "polls.survey_question_voters", voters=question.voters))
        if question.correct_text is not None:
            lines.append(
                t(
                    lang,
                    "polls.summary_quiz",
                    answer=escape(_one_line(question.correct_text)),
                    right=question.right,
                    voters=question.voters,
                    percent=question.right_percent,
                )
            )
    lines.append("")
    lines.append(
        t(
            lang,
            "polls.survey_completed",
            respondents=result.respondents,
            completed=result.completed,
            questions=len(result.questions),
            percent=result.completed_percent,
        )
    )
    lines.append(
        _turnout(lang, result.respondents, result.active, result.turnout, "survey_turnout")
    )
    return "\n".join(lines)


# --- listing (/polls) ------------------------------------------------------------------------


@dataclass
class Listing:
    open: list[tuple[Poll | Survey, list[PollResult]]] = field(default_factory=list)
    recent: list[tuple[Poll | Survey, list[PollResult]]] = field(default_factory=list)
    surveys: dict[int, SurveyResult] = field(default_factory=dict)


async def list_polls(
    session: AsyncSession,
    chat_id: int,
    *,
    tz: ZoneInfo,
    now: datetime,
    open_limit: int = 10,
    recent_limit: int = 5,
) -> Listing:
    """Open polls/surveys (newest first) and the most recently closed ones, with results."""
    listing = Listing()
    for closed, limit, into in (
        (False, open_limit, listing.open),
        (True, recent_limit, listing.recent),
    ):
        state = Poll.state == "closed" if closed else Poll.state != "closed"
        polls = list(
            await session.scalars(
                select(Poll)
                .where(Poll.chat_id == chat_id, Poll.survey_id.is_(None), state)
                .order_by((Poll.closed_at if closed else Poll.created_at).desc(), Poll.id.desc())
                .limit(limit)
            )
        )
        s_state = Survey.state == "closed" if closed else Survey.state != "closed"
        surveys = list(
            await session.scalars(
                select(Survey)
                .where(Survey.chat_id == chat_id, s_state)
                .order_by(
                    (Survey.closed_at if closed else Survey.created_at).desc(), Survey.id.desc()
                )
                .limit(limit)
            )
        )
        items: list[tuple[datetime, Poll | Survey, list[PollResult]]] = []
        for poll in polls:
            result = await poll_result(session, poll, tz=tz, until=now)
            items.append((poll.closed_at or poll.created_at, poll, [result]))
        for survey in surveys:
            summary = await survey_result(session, survey, tz=tz, until=now)
            listing.surveys[survey.id] = summary  # type: ignore[index]
            items.append((survey.closed_at or survey.created_at, survey, list(summary.questions)))
        items.sort(key=lambda item: item[0], reverse=True)
        into.extend((row, results) for _, row, results in items[:limit])
    return listing


def _local(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _compact(result: PollResult) -> str:
    return " · ".join(
        f"{escape(_one_line(o.text))} {o.count} ({o.percent}%)" for o in result.options
    )


def render_listing(lang: str, listing: Listing, tz: ZoneInfo) -> str:
    if not listing.open and not listing.recent:
        return t(lang, "polls.list_empty")
    lines: list[str] = []
    for title_key, items in (("list_open", listing.open), ("list_recent", listing.recent)):
        if not items:
            continue
        if lines:
            lines.append("")
        lines.append(t(lang, f"polls.{title_key}"))
        for row, results in items:
            if row.closed_at is not None:
                when = t(lang, "polls.list_closed_at", at=_local(row.closed_at, tz))
            elif row.close_at is not None:
                when = t(lang, "polls.list_closes_at", at=_local(row.close_at, tz))
            else:
                when = t(lang, "polls.list_no_close")
            if isinstance(row, Survey):
                summary = listing.surveys[row.id]  # type: ignore[index]
                ids = ", ".join(f"#{r.poll_id}" for r in results)
                lines.append(
                    t(
                        lang,
                        "polls.list_survey",
                        id=row.id,
                        title=escape(_one_line(row.title)),
                        polls=ids,
                        respondents=summary.respondents,
                        completed=summary.completed,
                        when=when,
                    )
                )
                for number, result in enumerate(results, start=1):
                    lines.append(f"  {number}. {escape(_one_line(result.question))}")
                    lines.append(f"     {_compact(result)}")
                continue
            result = results[0]
            lines.append(
                t(
                    lang,
                    "polls.list_poll",
                    id=row.id,
                    question=escape(_one_line(row.question)),
                    voters=result.voters,
                    when=when,
                )
            )
            lines.append(f"  {_compact(result)}")
    return "\n".join(lines)


# --- Telegram: sending and stopping ----------------------------------------------------------


def send_kwargs(spec: PollSpec) -> dict[str, Any]:
    """sendPoll arguments; texts are plain (no parse mode), whatever the bot's Defaults say."""
    kwargs: dict[str, Any] = {
        "question": spec.question,
        "options": [InputPollOption(text, text_parse_mode=None) for text in spec.options],
        "is_anonymous": spec.anonymous,
        "question_parse_mode": None,
        "explanation_parse_mode": None,
        # PTB adds the Defaults' parse_mode to every send; sendPoll has no such parameter.
        "api_kwargs": {"parse_mode": None},
    }
    if spec.multiple:
        kwargs["allows_multiple_answers"] = True
    if spec.is_quiz:
        kwargs["type"] = TelegramPoll.QUIZ
        kwargs["correct_option_ids"] = [spec.correct_option]
        if spec.explanation:
            kwargs["explanation"] = spec.explanation
    return kwargs


async def send_poll_message(
    bot: Bot, services: Services, chat_id: int, spec: PollSpec
) -> Message | None:
    """sendPoll, following a migration; None when the chat is closed to the bot."""
    info = await services.chats.get(chat_id)
    if info is not None and not info.active:
        return None
    try:
        return await bot.send_poll(chat_id, **send_kwargs(spec))
    except ChatMigrated as exc:
        await services.activity.flush()
        await services.chats.migrate(chat_id, exc.new_chat_id)
        return await bot.send_poll(exc.new_chat_id, **send_kwargs(spec))
    except Forbidden as exc:
        log.info("chat %s is closed to the bot (%s); deactivating", chat_id, exc.message)
        await services.chats.deactivate(chat_id, bot_status="kicked")
        return None


async def publish_poll(
    bot: Bot,
    services: Services,
    chat_id: int,
    spec: PollSpec,
    *,
    created_by: int,
    survey_id: int | None = None,
    position: int = 0,
    close_at: datetime | None = None,
) -> Poll | None:
    """Send a poll to a group and store it; None when the group is closed to the bot.

    The caller schedules its close (schedules.polls.schedule_close) when it has a close time.
    Usable by any feature that posts polls (e.g. the content calendar).
    """
    message = await send_poll_message(bot, services, chat_id, spec)
    if message is None or message.poll is None:
        return None
    async with services.db.begin() as session:
        return await record_poll(
            session,
            chat_id=message.chat_id,
            message=message,
            spec=spec,
            created_by=created_by,
            now=services.clock(),
            close_at=close_at or spec.close_at,
            survey_id=survey_id,
            position=position,
        )


# Telegram's answers when there is nothing left to stop: the poll is already closed or its
# message is gone. The close goes on to the summary.
STOP_GONE = (
    "poll has already been closed",
    "message to stop not found",
    "message can't be stopped",
    "message with poll to stop not found",
)


async def stop_telegram_poll(bot: Bot, services: Services, poll: Poll) -> TelegramPoll | None:
    """stopPoll; returns the final poll, or None when Telegram has nothing to stop.

    Transient failures (network, rate limits after the limiter's retries) raise, so the
    caller retries later.
    """
    chat_id = poll.chat_id
    info = await services.chats.get(chat_id)
    if info is not None and not info.active:
        return None
    try:
        try:
            return await bot.stop_poll(chat_id, poll.message_id)
        except ChatMigrated as exc:
            await services.activity.flush()
            await services.chats.migrate(chat_id, exc.new_chat_id)
            return await bot.stop_poll(exc.new_chat_id, poll.message_id)
    except Forbidden as exc:
        log.info("chat %s is closed to the bot (%s); deactivating", chat_id, exc.message)
        await services.chats.deactivate(chat_id, bot_status="kicked")
        return None
    except BadRequest as exc:
        # Telegram refused for good (already closed, message deleted, …): retrying won't help.
        level = (
            logging.INFO if any(r in exc.message.lower() for r in STOP_GONE) else logging.WARNING
        )
        log.log(level, "stopPoll for poll %s refused: %s", poll.id, exc.message)
        return None
