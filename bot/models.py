"""Core tables: chats, the member roster, daily activity rollups, operators and connections.

Every table that belongs to a chat has a `chat_id` foreign key to `chat.id`; that is how a
group's rows are found and moved when it becomes a supergroup (see `bot.chats.migrate_chat`).
Feature modules define their own tables in their own `bot/<feature>.py` modules the same way.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import DDL, BigInteger, Column, ForeignKey, Index, event, text
from sqlmodel import Field, SQLModel

from bot.db import UTCDateTime


def chat_fk(*, primary_key: bool = False, index: bool = False) -> Column:
    """The standard `chat_id` column: BIGINT, references chat.id, deleted with the chat."""
    return Column(
        "chat_id",
        BigInteger,
        ForeignKey("chat.id", ondelete="CASCADE"),
        primary_key=primary_key,
        index=index,
        nullable=False,
    )


def utc_column(*, nullable: bool = True, index: bool = False) -> Column:
    return Column(UTCDateTime(), nullable=nullable, index=index)


class Chat(SQLModel, table=True):
    """A group (or supergroup) the bot has been added to, with its settings."""

    id: int = Field(sa_type=BigInteger, primary_key=True)
    type: str = Field(max_length=16)
    title: str = Field(default="", max_length=255)
    username: str | None = Field(default=None, max_length=64)
    timezone: str = Field(default="UTC", max_length=64)
    language: str = Field(default="en", max_length=8)
    active: bool = Field(default=True)
    bot_status: str = Field(default="member", max_length=16)
    can_delete: bool = Field(default=False)
    can_restrict: bool = Field(default=False)
    can_pin: bool = Field(default=False)
    can_invite: bool = Field(default=False)
    sees_all_messages: bool = Field(default=False)
    sees_all_since: datetime | None = Field(default=None, sa_column=utc_column())
    admins_refreshed_at: datetime | None = Field(default=None, sa_column=utc_column())
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))


class ChatMigration(SQLModel, table=True):
    """Old group id → new supergroup id, so late updates for the old id find the new one."""

    __tablename__ = "chat_migration"

    old_chat_id: int = Field(sa_type=BigInteger, primary_key=True)
    new_chat_id: int = Field(sa_type=BigInteger, index=True)
    migrated_at: datetime = Field(sa_column=utc_column(nullable=False))


class Member(SQLModel, table=True):
    """The roster: one row per (chat, user) ever seen in the group."""

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    user_id: int = Field(sa_type=BigInteger, primary_key=True)
    display_name: str = Field(default="", max_length=255)
    username: str | None = Field(default=None, max_length=64)
    # member | left | kicked; "member" with joined_at NULL means seen before any join event.
    status: str = Field(default="member", max_length=16)
    first_seen: datetime = Field(sa_column=utc_column(nullable=False))
    joined_at: datetime | None = Field(default=None, sa_column=utc_column())
    left_at: datetime | None = Field(default=None, sa_column=utc_column())
    status_changed_at: datetime | None = Field(default=None, sa_column=utc_column())
    last_active: datetime | None = Field(default=None, sa_column=utc_column())
    message_count: int = Field(default=0)
    # Recent-activity state, so WAU/MAU need one roster row per member instead of 30 days of
    # rollups: `active_day` is the latest chat-local day the member was active (date ordinal),
    # bit k of `active_mask` means "active on active_day - k" (k < 62). See bot.activity.
    active_day: int | None = Field(default=None)
    active_mask: int = Field(default=0, sa_type=BigInteger)


class DailyActivity(SQLModel, table=True):
    """Per (chat, user, chat-local day) rollup every KPI is computed from."""

    __tablename__ = "daily_activity"
    __table_args__ = (
        Index("ix_daily_activity_chat_day", "chat_id", "day"),
        # Join cohorts (retention) without scanning every member's day: joins are rare.
        Index(
            "ix_daily_activity_joined",
            "chat_id",
            "day",
            sqlite_where=text("joins > 0"),
            postgresql_where=text("joins > 0"),
        ),
    )

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    user_id: int = Field(sa_type=BigInteger, primary_key=True)
    day: date = Field(primary_key=True)
    messages: int = Field(default=0)
    # Unix time of the day's first message (ties in top contributors); an integer, so the
    # activity flush binds it without a type conversion per row.
    first_message_ts: int | None = Field(default=None, sa_type=BigInteger)
    edits: int = Field(default=0)
    joins: int = Field(default=0)
    leaves: int = Field(default=0)
    checked_in: bool = Field(default=False)
    poll_answered: bool = Field(default=False)
    lottery_entered: bool = Field(default=False)


class ChatDay(SQLModel, table=True):
    """Per (chat, chat-local day) totals of `daily_activity`, kept by database triggers.

    A report over many days reads one row per day instead of every member's rows. The
    triggers (below) apply each rollup row's change, so every writer — the activity flush,
    joins, leaves, participation, migrations, erasure — keeps them exact at no cost to the
    Python side. `active` = members active that day (DAU); `participants` = members with a
    check-in, poll answer or lottery entry.
    """

    __tablename__ = "chat_day"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    day: date = Field(primary_key=True)
    messages: int = Field(default=0)
    active: int = Field(default=0)
    joins: int = Field(default=0)
    leaves: int = Field(default=0)
    checkins: int = Field(default=0)
    participants: int = Field(default=0)


class ChatHour(SQLModel, table=True):
    """Messages per chat and UTC hour (the activity heat map, bot.heatmap).

    Kept in UTC hours so a group's local weekday/hour is worked out when it is read, with the
    time zone rules of that moment: a DST change (or a new /settimezone) never leaves a
    wrong bucket behind. Written by the activity flush, one batched upsert per flush.
    """

    __tablename__ = "chat_hour"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    hour_start: datetime = Field(sa_column=Column(UTCDateTime(), primary_key=True))
    messages: int = Field(default=0)


def _totals_of(row: str, *, pg: bool) -> dict[str, str]:
    """What one daily_activity row (NEW or OLD) adds to its chat_day row, as SQL."""
    cast = "::int" if pg else ""
    return {
        "messages": f"{row}.messages",
        "active": f"({row}.messages > 0 OR {row}.checked_in OR {row}.poll_answered"
        f" OR {row}.lottery_entered){cast}",
        "joins": f"{row}.joins",
        "leaves": f"{row}.leaves",
        "checkins": f"({row}.checked_in){cast}",
        "participants": f"({row}.checked_in OR {row}.poll_answered OR {row}.lottery_entered)"
        f"{cast}",
    }


def _add(row: str, *, pg: bool) -> str:
    values = _totals_of(row, pg=pg)
    return (
        f"INSERT INTO chat_day (chat_id, day, {', '.join(values)})"
        f" VALUES ({row}.chat_id, {row}.day, {', '.join(values.values())})"
        " ON CONFLICT (chat_id, day) DO UPDATE SET "
        + ", ".join(f"{c} = chat_day.{c} + excluded.{c}" for c in values)
    )


def _subtract(row: str, *, pg: bool) -> str:
    values = _totals_of(row, pg=pg)
    return (
        "UPDATE chat_day SET "
        + ", ".join(f"{c} = {c} - {v}" for c, v in values.items())
        + f" WHERE chat_id = {row}.chat_id AND day = {row}.day"
    )


def _change(*, pg: bool) -> str:
    new, old = _totals_of("NEW", pg=pg), _totals_of("OLD", pg=pg)
    return (
        "UPDATE chat_day SET "
        + ", ".join(f"{c} = {c} + {new[c]} - {old[c]}" for c in new)
        + " WHERE chat_id = NEW.chat_id AND day = NEW.day"
    )


def _active(row: str) -> str:
    return (
        f"({row}.messages > 0 OR {row}.checked_in OR {row}.poll_answered OR {row}.lottery_entered)"
    )


def _fold_member_state(*, pg: bool) -> str:
    """Add NEW.day to the member's recent-activity state (as bot.activity.fold_day does)."""
    day = (
        "(NEW.day - DATE '0001-01-01' + 1)"
        if pg
        else "CAST(julianday(NEW.day) - 1721424.5 AS INTEGER)"
    )
    one = "CAST(1 AS BIGINT)" if pg else "1"
    full = (1 << 62) - 1
    return (
        "UPDATE member SET active_mask = CASE"
        " WHEN active_day IS NULL THEN 1"
        f" WHEN {day} >= active_day THEN (CASE WHEN {day} - active_day >= 62 THEN 0"
        f" ELSE (active_mask << ({day} - active_day)) & {full} END) | 1"
        f" WHEN active_day - {day} < 62 THEN active_mask | ({one} << (active_day - {day}))"
        " ELSE active_mask END,"
        f" active_day = CASE WHEN active_day IS NULL OR {day} > active_day THEN {day}"
        " ELSE active_day END"
        " WHERE chat_id = NEW.chat_id AND user_id = NEW.user_id"
    )


SAME_DAY_ROW = "OLD.chat_id = NEW.chat_id AND OLD.day = NEW.day"
# The member state changes only when a rollup row becomes active (a member's first message,
# check-in, vote or entry of the day), so most flushed rows skip it.
BECAME_ACTIVE = f"{_active('NEW')} AND NOT ({_active('OLD')} AND {SAME_DAY_ROW})"
CHAT_DAY_TRIGGERS_SQLITE = [
    f"CREATE TRIGGER chat_day_insert AFTER INSERT ON daily_activity BEGIN {_add('NEW', pg=False)};"
    " END",
    f"CREATE TRIGGER chat_day_update AFTER UPDATE ON daily_activity WHEN {SAME_DAY_ROW}"
    f" BEGIN {_change(pg=False)}; END",
    f"CREATE TRIGGER chat_day_move AFTER UPDATE ON daily_activity WHEN NOT ({SAME_DAY_ROW})"
    f" BEGIN {_subtract('OLD', pg=False)}; {_add('NEW', pg=False)}; END",
    f"CREATE TRIGGER chat_day_delete AFTER DELETE ON daily_activity BEGIN"
    f" {_subtract('OLD', pg=False)}; END",
    f"CREATE TRIGGER member_state_insert AFTER INSERT ON daily_activity WHEN {_active('NEW')}"
    f" BEGIN {_fold_member_state(pg=False)}; END",
    f"CREATE TRIGGER member_state_update AFTER UPDATE ON daily_activity WHEN {BECAME_ACTIVE}"
    f" BEGIN {_fold_member_state(pg=False)}; END",
]
CHAT_DAY_TRIGGERS_POSTGRESQL = [
    "CREATE OR REPLACE FUNCTION chat_day_totals() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    f" IF TG_OP = 'INSERT' THEN IF {_active('NEW')} THEN {_fold_member_state(pg=True)};"
    " END IF;"
    f" ELSIF TG_OP = 'UPDATE' THEN IF {BECAME_ACTIVE} THEN {_fold_member_state(pg=True)};"
    " END IF; END IF;"
    f" IF TG_OP = 'UPDATE' AND {SAME_DAY_ROW} THEN {_change(pg=True)}; RETURN NULL; END IF;"
    f" IF TG_OP <> 'INSERT' THEN {_subtract('OLD', pg=True)}; END IF;"
    f" IF TG_OP <> 'DELETE' THEN {_add('NEW', pg=True)}; END IF;"
    " RETURN NULL; END $$",
    "CREATE TRIGGER chat_day_totals AFTER INSERT OR UPDATE OR DELETE ON daily_activity"
    " FOR EACH ROW EXECUTE FUNCTION chat_day_totals()",
]
CHAT_DAY_TRIGGERS_DROP = {
    "sqlite": [
        f"DROP TRIGGER IF EXISTS {name}"
        for name in (
            "chat_day_insert",
            "chat_day_update",
            "chat_day_move",
            "chat_day_delete",
            "member_state_insert",
            "member_state_update",
        )
    ],
    "postgresql": [
        "DROP TRIGGER IF EXISTS chat_day_totals ON daily_activity",
        "DROP FUNCTION IF EXISTS chat_day_totals()",
    ],
}


def chat_day_triggers(dialect: str) -> list[str]:
    """The DDL creating the chat_day triggers (used by create_all and by the migration)."""
    return CHAT_DAY_TRIGGERS_POSTGRESQL if dialect == "postgresql" else CHAT_DAY_TRIGGERS_SQLITE


for _dialect in ("sqlite", "postgresql"):
    for _statement in chat_day_triggers(_dialect):
        event.listen(
            SQLModel.metadata, "after_create", DDL(_statement).execute_if(dialect=_dialect)
        )


class ChatAdmin(SQLModel, table=True):
    """Cached administrator list of a chat (refreshed after a TTL or on chat_member changes)."""

    __tablename__ = "chat_admin"

    chat_id: int = Field(sa_column=chat_fk(primary_key=True))
    user_id: int = Field(sa_type=BigInteger, primary_key=True)
    status: str = Field(max_length=16)  # creator | administrator


class UserProfile(SQLModel, table=True):
    """What the bot knows about a person outside any group: private chat, language, connection."""

    __tablename__ = "user_profile"

    user_id: int = Field(sa_type=BigInteger, primary_key=True)
    first_name: str = Field(default="", max_length=255)
    username: str | None = Field(default=None, max_length=64)
    language_code: str | None = Field(default=None, max_length=16)
    language: str | None = Field(default=None, max_length=8)  # chosen with /language
    started_at: datetime | None = Field(default=None, sa_column=utc_column())
    connected_chat_id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, ForeignKey("chat.id", ondelete="SET NULL"), nullable=True),
    )
