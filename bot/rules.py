"""Rules, the welcome message and the join check (入群门槛), without Telegram.

A group's rules and welcome are stored as the HTML Telegram gave us for the operator's
message (`Message.text_html`), so bold, links and lists survive. The join check keeps one
`Newcomer` row per (chat, member): the latest join, claimed exactly once, and — while a check
is pending — its deadline, which is what the timeout job is rebuilt from after a restart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Column, Index, Text, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from bot.cluster import claimed_by_stopped_process
from bot.db import insert_for, prepared, upsert
from bot.driver_session import Executor
from bot.models import chat_fk, utc_column
from bot.timeparse import parse_duration

# Joins reported twice (chat_member update and service message) carry nearly the same time.
SAME_JOIN_WINDOW = timedelta(seconds=5)

DEFAULT_CHECK_TIME = timedelta(minutes=5)
MIN_CHECK_TIME = timedelta(minutes=1)
MAX_CHECK_TIME = timedelta(days=1)
CHECK_ACTIONS = ("mute", "kick", "ban")
MAX_ANSWERS = 8
MAX_ANSWER_LENGTH = 40
MAX_QUESTION_LENGTH = 300
READ_RULES = "ok"  # the expected answer of the default check ("I have read the rules")

WELCOME_PLACEHOLDERS = ("{name}", "{group}", "{rules}", "{count}")


class GroupRules(SQLModel, table=True):
    """A group's rules as Telegram HTML, and whether /rules opens them in a private chat."""

    __tablename__ = "group_rules"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    text_html: str = Field(sa_column=Column(Text, nullable=False))
    private: bool = Field(default=False)
    updated_by: int | None = Field(default=None, sa_type=BigInteger)
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))


class WelcomeSettings(SQLModel, table=True):
    """The welcome template and the last welcome sent (deleted when the next one goes out)."""

    __tablename__ = "welcome_settings"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    enabled: bool = Field(default=False)
    text_html: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    last_message_id: int | None = Field(default=None, sa_type=BigInteger)


class JoinCheckSettings(SQLModel, table=True):
    """How newcomers are checked: the question (None: "I have read the rules"), time, action."""

    __tablename__ = "join_check_settings"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    enabled: bool = Field(default=False)
    question: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    answers: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # \n-joined
    correct: int | None = Field(default=None)  # index into answers, from 0
    timeout_seconds: int = Field(default=int(DEFAULT_CHECK_TIME.total_seconds()))
    action: str = Field(default="mute", max_length=8)  # mute | kick | ban

    @property
    def answer_list(self) -> list[str]:
        return self.answers.split("\n") if self.answers else []


class Newcomer(SQLModel, table=True):
    """The latest join of a member and the state of their join check.

    state: none (no check) | pending | passed | failed | left (gone before deciding).
    """

    __tablename__ = "newcomer"
    __table_args__ = (Index("ix_newcomer_state_deadline", "state", "deadline"),)

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    user_id: int = Field(sa_type=BigInteger, primary_key=True)
    name: str = Field(default="", max_length=255)
    joined_at: datetime = Field(sa_column=utc_column(nullable=False))
    state: str = Field(default="none", max_length=8)
    expected: str | None = Field(default=None, max_length=8)  # "ok" or the answer index
    action: str | None = Field(default=None, max_length=8)  # taken on failure, fixed at join
    deadline: datetime | None = Field(default=None, sa_column=utc_column())
    message_id: int | None = Field(default=None, sa_type=BigInteger)
    # A failed check: the process that decided it, and when its action was taken (a
    # failure whose process stopped before acting is acted on by another; bot.cluster).
    claimed_by: str | None = Field(default=None, max_length=64)
    acted_at: datetime | None = Field(default=None, sa_column=utc_column())


# --- rules --------------------------------------------------------------------------------


async def get_rules(session: AsyncSession, chat_id: int) -> GroupRules | None:
    return await session.get(GroupRules, chat_id)


async def set_rules(
    session: AsyncSession, chat_id: int, text_html: str, *, by: int | None, now: datetime
) -> None:
    await upsert(
        session,
        GroupRules.__table__,  # type: ignore[attr-defined]
        [{"chat_id": chat_id, "text_html": text_html, "updated_by": by, "updated_at": now}],
        key=("chat_id",),
        update=lambda new: {
            "text_html": new.text_html,
            "updated_by": new.updated_by,
            "updated_at": new.updated_at,
        },
    )


async def clear_rules(session: AsyncSession, chat_id: int) -> bool:
    row = await session.get(GroupRules, chat_id)
    if row is None:
        return False
    await session.delete(row)
    return True


async def set_rules_private(session: AsyncSession, chat_id: int, private: bool) -> bool:
    """Show rules in a private chat (True) or in the group; False if there are no rules."""
    result = await session.execute(
        update(GroupRules).where(GroupRules.chat_id == chat_id).values(private=private)
    )
    return bool(result.rowcount)


# --- welcome ------------------------------------------------------------------------------


async def welcome_settings(session: AsyncSession, chat_id: int) -> WelcomeSettings:
    return await session.get(WelcomeSettings, chat_id) or WelcomeSettings(chat_id=chat_id)


async def save_welcome(session: AsyncSession, chat_id: int, **values: object) -> None:
    row = {"chat_id": chat_id, **values}
    await upsert(
        session,
        WelcomeSettings.__table__,  # type: ignore[attr-defined]
        [row],
        key=("chat_id",),
        update=lambda new: {name: getattr(new, name) for name in values},
    )


@dataclass(frozen=True, slots=True)
class RenderedWelcome:
    text: str
    rules_button: bool  # {rules} was used: attach a button opening the rules


def render_welcome(
    template: str, *, name_html: str, group_html: str, count: int | None
) -> RenderedWelcome:
    """Fill the placeholders of an operator's HTML template with already-escaped values.

    Only the four known placeholders are replaced (no str.format: braces in the operator's
    text stay as they are). `{rules}` becomes a button, so it is removed from the text.
    """
    text = template.replace("{name}", name_html).replace("{group}", group_html)
    text = text.replace("{count}", str(count) if count is not None else "")
    rules_button = "{rules}" in text
    if rules_button:
        text = text.replace("{rules}", "")
        lines = [line.rstrip() for line in text.split("\n")]
        text = "\n".join(lines).strip()
    return RenderedWelcome(text, rules_button)


def needs_member_count(template: str) -> bool:
    return "{count}" in template


# --- the join check: configuration ----------------------------------------------------------


def _join_features(dialect: str) -> Any:
    chat = bindparam("chat")

    def enabled(model: Any) -> Any:
        table = model.__table__
        return select(table.c.enabled).where(table.c.chat_id == chat).scalar_subquery()

    return select(
        enabled(JoinCheckSettings).label("check"), enabled(WelcomeSettings).label("welcome")
    )


async def join_features_on(session: Executor, chat_id: int) -> bool:
    """Whether the join check or the welcome is on in the group: one prepared read, so a
    join in a group with neither (most groups) loads no settings."""
    row = (
        await session.execute(
            prepared(session, "rules.join_features", _join_features), {"chat": chat_id}
        )
    ).one()
    return bool(row.check) or bool(row.welcome)


def _newcomer_state(dialect: str) -> Any:
    table = Newcomer.__table__  # type: ignore[attr-defined]
    return select(table.c.state, table.c.joined_at).where(
        table.c.chat_id == bindparam("chat"), table.c.user_id == bindparam("user")
    )


async def newcomer_state(session: Executor, chat_id: int, user_id: int) -> Any:
    """The state and join time of a member's latest join (None: never seen joining)."""
    return (
        await session.execute(
            prepared(session, "rules.newcomer_state", _newcomer_state),
            {"chat": chat_id, "user": user_id},
        )
    ).first()


async def check_settings(session: AsyncSession, chat_id: int) -> JoinCheckSettings:
    return await session.get(JoinCheckSettings, chat_id) or JoinCheckSettings(chat_id=chat_id)


async def save_check_settings(session: AsyncSession, chat_id: int, **values: object) -> None:
    await upsert(
        session,
        JoinCheckSettings.__table__,  # type: ignore[attr-defined]
        [{"chat_id": chat_id, **values}],
        key=("chat_id",),
        update=lambda new: {name: getattr(new, name) for name in values},
    )


class VerifyArgsError(ValueError):
    """Bad /verify arguments; `key` names the explanation in the catalogue."""

    def __init__(self, key: str, **values: object) -> None:
        super().__init__(key)
        self.key = key
        self.values = values


QUOTES = {'"': '"', "“": "”", "「": "」", "『": "』", "'": "'"}


def split_quoted(text: str) -> list[str]:
    """Split on whitespace, keeping "quoted parts" (also “…” and 「…」) together."""
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        close = QUOTES.get(text[i])
        if close is not None:
            end = text.find(close, i + 1)
            if end == -1:
                raise VerifyArgsError("rules.verify_unclosed_quote")
            tokens.append(text[i + 1 : end])
            i = end + 1
            continue
        start = i
        while i < n and not text[i].isspace():
            i += 1
        tokens.append(text[start:i])
    return tokens


@dataclass(slots=True)
class VerifyChange:
    """What one /verify command changes (None: leave as it is)."""

    enabled: bool | None = None
    question: str | None = None
    answers: list[str] | None = None
    correct: int | None = None  # from 0
    clear_question: bool = False
    timeout: timedelta | None = None
    action: str | None = None

    def values(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.enabled is not None:
            out["enabled"] = self.enabled
        if self.clear_question:
            out.update(question=None, answers=None, correct=None)
        elif self.question is not None and self.answers is not None:
            out.update(question=self.question, answers="\n".join(self.answers))
            out["correct"] = self.correct
        if self.timeout is not None:
            out["timeout_seconds"] = int(self.timeout.total_seconds())
        if self.action is not None:
            out["action"] = self.action
        return out


ON_WORDS = {"on", "yes", "开", "开启"}
OFF_WORDS = {"off", "no", "关", "关闭"}


def parse_verify_args(text: str) -> VerifyChange:
    """`on|off`, `question "…" answers "a|b|c" correct N`, `question off`, `time 5m`,
    `action mute|kick|ban`, in any combination and order."""
    tokens = split_quoted(text)
    change = VerifyChange()
    i = 0

    def value(name: str) -> str:
        if i + 1 >= len(tokens):
            raise VerifyArgsError("rules.verify_missing_value", word=name)
        return tokens[i + 1]

    while i < len(tokens):
        word = tokens[i].lower()
        if word in ON_WORDS:
            change.enabled, i = True, i + 1
        elif word in OFF_WORDS:
            change.enabled, i = False, i + 1
        elif word in {"question", "问题"}:
            question = value(word).strip()
            if question.lower() in OFF_WORDS:
                change.clear_question = True
            elif not question or len(question) > MAX_QUESTION_LENGTH:
                raise VerifyArgsError("rules.verify_bad_question", limit=MAX_QUESTION_LENGTH)
            else:
                change.question = question
            i += 2
        elif word in {"answers", "answer", "答案"}:
            raw = value(word).replace("｜", "|")
            answers = [a.strip() for a in raw.split("|") if a.strip()]
            if not 2 <= len(answers) <= MAX_ANSWERS or any(
                len(a) > MAX_ANSWER_LENGTH for a in answers
            ):
                raise VerifyArgsError(
                    "rules.verify_bad_answers", most=MAX_ANSWERS, length=MAX_ANSWER_LENGTH
                )
            change.answers, i = answers, i + 2
        elif word in {"correct", "正确"}:
            raw = value(word)
            if not raw.isdigit():
                raise VerifyArgsError("rules.verify_bad_correct", value=raw)
            change.correct, i = int(raw) - 1, i + 2
        elif word in {"time", "timeout", "limit", "时间", "时限"}:
            raw = value(word)
            delta = parse_duration(raw)
            if delta is None or not MIN_CHECK_TIME <= delta <= MAX_CHECK_TIME:
                raise VerifyArgsError("rules.verify_bad_time", value=raw)
            change.timeout, i = delta, i + 2
        elif word in {"action", "动作", "处理"}:
            raw = value(word).lower()
            if raw not in CHECK_ACTIONS:
                raise VerifyArgsError("rules.verify_bad_action", value=raw)
            change.action, i = raw, i + 2
        else:
            raise VerifyArgsError("rules.verify_unknown_word", word=tokens[i])
    if change.question is not None or change.answers is not None or change.correct is not None:
        if change.question is None or change.answers is None or change.correct is None:
            raise VerifyArgsError("rules.verify_incomplete_question")
        if not 0 <= change.correct < len(change.answers):
            raise VerifyArgsError("rules.verify_bad_correct", value=str(change.correct + 1))
    return change


# --- the join check: newcomers -------------------------------------------------------------


async def claim_join(
    session: AsyncSession, *, chat_id: int, user_id: int, name: str, when: datetime
) -> bool:
    """Record a join at `when` exactly once; False when it is the same join seen again
    (the other report of it, within SAME_JOIN_WINDOW) or a stale report of an older one."""
    table = Newcomer.__table__  # type: ignore[attr-defined]
    stmt = insert_for(session.get_bind().dialect.name, table).values(
        chat_id=chat_id,
        user_id=user_id,
        name=name[:255],
        joined_at=when,
        state="none",
        expected=None,
        action=None,
        deadline=None,
        message_id=None,
        claimed_by=None,
        acted_at=None,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["chat_id", "user_id"],
        set_={
            "name": stmt.excluded.name,
            "joined_at": stmt.excluded.joined_at,
            "state": "none",
            "expected": None,
            "action": None,
            "deadline": None,
            "message_id": None,
            "claimed_by": None,
            "acted_at": None,
        },
        where=table.c.joined_at < when - SAME_JOIN_WINDOW,
    )
    result = await session.execute(stmt)
    return bool(result.rowcount)


def check_token(joined_at: datetime) -> int:
    """Ties a button to one join, so a button from an earlier join does nothing."""
    return int(joined_at.timestamp())


@dataclass(frozen=True, slots=True)
class PendingCheck:
    chat_id: int
    user_id: int
    token: int
    deadline: datetime
    question: str | None
    choices: list[tuple[int, str]]  # (answer index, answer), in the order shown


async def start_check(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    settings: JoinCheckSettings,
    now: datetime,
    rng: random.Random,
) -> PendingCheck:
    """Make the claimed join's check pending; the question and action are fixed now."""
    row = await session.get(Newcomer, (chat_id, user_id), populate_existing=True)
    assert row is not None, "claim_join first"
    answers = settings.answer_list
    custom = settings.question is not None and len(answers) >= 2 and settings.correct is not None
    row.state = "pending"
    row.expected = str(settings.correct) if custom else READ_RULES
    row.action = settings.action
    row.deadline = now + timedelta(seconds=settings.timeout_seconds)
    choices = list(enumerate(answers)) if custom else []
    rng.shuffle(choices)  # a fixed position would be learnt by bots
    return PendingCheck(
        chat_id,
        user_id,
        check_token(row.joined_at),
        row.deadline,
        settings.question if custom else None,
        choices,
    )


async def note_check_message(
    session: AsyncSession, chat_id: int, user_id: int, token: int, message_id: int
) -> None:
    row = await session.get(Newcomer, (chat_id, user_id))
    if row is not None and check_token(row.joined_at) == token:
        row.message_id = message_id


async def pending_check(
    session: AsyncSession, chat_id: int, user_id: int, token: int
) -> Newcomer | None:
    """The newcomer's check if it is still pending and belongs to the join `token` names."""
    row = await session.get(Newcomer, (chat_id, user_id), populate_existing=True)
    if row is None or row.state != "pending" or check_token(row.joined_at) != token:
        return None
    return row


async def conclude_check(
    session: AsyncSession,
    *,
    chat_id: int,
    user_id: int,
    token: int,
    state: str,
    now: datetime | None = None,
    by: str | None = None,
) -> Newcomer | None:
    """Move a pending check to `state` (passed | failed | left) exactly once; `by` names
    the deciding process (kept for failures, whose action follows).

    With `now`, only a check whose deadline has passed is concluded (the timeout). Returns
    the row when this call made the change, None when someone else already did.
    """
    row = await pending_check(session, chat_id, user_id, token)
    if row is None:
        return None
    conditions = [
        Newcomer.chat_id == chat_id,
        Newcomer.user_id == user_id,
        Newcomer.state == "pending",
        Newcomer.joined_at == row.joined_at,
    ]
    if now is not None:
        conditions.append(Newcomer.deadline <= now)  # type: ignore[operator]
    result = await session.execute(
        update(Newcomer).where(*conditions).values(state=state, claimed_by=by)
    )
    if not result.rowcount:
        return None
    row.state = state
    row.claimed_by = by
    return row


async def mark_acted(session: AsyncSession, row: Newcomer, *, now: datetime) -> None:
    """The failure's action (delete, kick/ban, log) was taken."""
    await session.execute(
        update(Newcomer)
        .where(
            Newcomer.chat_id == row.chat_id,
            Newcomer.user_id == row.user_id,
            Newcomer.joined_at == row.joined_at,
        )
        .values(acted_at=now)
    )


async def reclaim_failures(
    session: AsyncSession, *, me: str, now: datetime, lease: timedelta
) -> list[Newcomer]:
    """Failed checks whose deciding process stopped before acting: now this process's."""
    stopped = claimed_by_stopped_process(Newcomer.claimed_by, me=me, now=now, lease=lease)
    rows = list(
        await session.scalars(
            select(Newcomer).where(
                Newcomer.state == "failed", Newcomer.acted_at.is_(None), stopped
            )
        )
    )
    mine = []
    for row in rows:
        result = await session.execute(
            update(Newcomer)
            .where(
                Newcomer.chat_id == row.chat_id,
                Newcomer.user_id == row.user_id,
                Newcomer.joined_at == row.joined_at,
                Newcomer.claimed_by == row.claimed_by,
                Newcomer.acted_at.is_(None),
            )
            .values(claimed_by=me)
        )
        if result.rowcount:
            row.claimed_by = me
            mine.append(row)
    return mine


async def pending_checks(session: AsyncSession) -> list[Newcomer]:
    """Every check still waiting for an answer (their deadlines re-arm the timeout jobs)."""
    return list(
        await session.scalars(
            select(Newcomer).where(Newcomer.state == "pending").order_by(Newcomer.deadline)
        )
    )


def answer_is_correct(row: Newcomer, choice: str) -> bool:
    return row.expected is not None and choice == row.expected
