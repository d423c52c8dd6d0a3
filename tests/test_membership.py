"""Chat registration, the roster, daily rollups, joins/leaves and group migrations."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select

from bot.models import Chat, ChatMigration, DailyActivity, Member
from bot.sending import send_text
from tests import factories as f
from tests.conftest import both_databases

GROUP = f.group(-1001000000001, "Test Group")
ALICE = f.user(1, "Alice", username="alice")
BOB = f.user(2, "Bob", language_code="zh-hans")
ADMIN = f.user(10, "Ada", language_code="zh-hans")


async def add_bot(tg, status: str = "member", chat=GROUP, actor=ADMIN) -> None:
    await tg.feed(f.my_chat_member(chat, actor, "left", status, date=tg.now()))


async def rollup(tg, chat_id: int = GROUP["id"]) -> dict[tuple[int, date], DailyActivity]:
    async with tg.db() as session:
        rows = await session.scalars(select(DailyActivity).where(DailyActivity.chat_id == chat_id))
        return {(r.user_id, r.day): r for r in rows}


async def roster(tg, chat_id: int = GROUP["id"]) -> dict[int, Member]:
    async with tg.db() as session:
        rows = await session.scalars(select(Member).where(Member.chat_id == chat_id))
        return {r.user_id: r for r in rows}


# --- the bot's own membership -----------------------------------------------------------------


async def test_added_to_group_registers_and_greets_once_in_adders_language(tg):
    await add_bot(tg)
    # The same addition also arrives as a service message; it must not greet again.
    await tg.feed(
        f.new_members(
            GROUP,
            [f.BOT_USER]
            if hasattr(f, "BOT_USER")
            else [{"id": 999000, "is_bot": True, "first_name": "Community Bot"}],
            date=tg.now(),
            adder=ADMIN,
        )
    )
    await add_bot(tg)  # a replayed my_chat_member: still one greeting

    async with tg.db() as session:
        chat = await session.get(Chat, GROUP["id"])
    assert chat.title == "Test Group" and chat.type == "supergroup" and chat.active
    assert chat.language == "zh"  # the adding admin uses Chinese and BOT_LANGUAGE is unset
    assert chat.timezone == "UTC"
    greetings = tg.api.sent_texts(GROUP["id"])
    assert len(greetings) == 1
    assert "删除消息" in greetings[0] and "隐私模式" in greetings[0]  # rights + partial visibility
    assert not chat.sees_all_messages


async def test_bot_language_setting_wins_over_the_adder(tg):
    tg.services.chats._default_language = "en"
    await add_bot(tg)
    async with tg.db() as session:
        assert (await session.get(Chat, GROUP["id"])).language == "en"


async def test_added_as_admin_sees_everything_and_reports_rights(tg):
    await add_bot(tg, "administrator")
    async with tg.db() as session:
        chat = await session.get(Chat, GROUP["id"])
    assert chat.sees_all_messages and chat.sees_all_since == tg.now()
    assert chat.can_delete and chat.can_restrict and chat.can_pin and chat.can_invite
    assert "✅" in tg.api.sent_texts()[0] and "❌" not in tg.api.sent_texts()[0]


async def test_promotion_later_updates_visibility_and_tells_operators(tg):
    await add_bot(tg)
    tg.clock.advance(hours=1)
    await tg.feed(f.my_chat_member(GROUP, ADMIN, "member", "administrator", date=tg.now()))
    async with tg.db() as session:
        chat = await session.get(Chat, GROUP["id"])
    assert chat.sees_all_messages and chat.sees_all_since == tg.now()
    texts = tg.api.sent_texts()
    assert len(texts) == 2 and "👁" in texts[1]


async def test_removed_marks_inactive_and_nothing_more_is_sent(tg):
    await add_bot(tg)
    tg.api.clear()
    await tg.feed(f.my_chat_member(GROUP, ADMIN, "member", "kicked", date=tg.now()))
    async with tg.db() as session:
        chat = await session.get(Chat, GROUP["id"])
    assert not chat.active and chat.bot_status == "kicked"
    sent = await send_text(tg.app.bot, tg.services, GROUP["id"], "scheduled post")
    assert sent == [] and tg.api.calls == []
    # Re-added later: active again, greeted again (a new addition).
    await add_bot(tg)
    assert len(tg.api.sent_texts()) == 1


async def test_forbidden_on_send_deactivates_the_chat(tg):
    await add_bot(tg)
    tg.api.fail("sendMessage", 403, "Forbidden: bot was kicked from the supergroup chat")
    assert await send_text(tg.app.bot, tg.services, GROUP["id"], "hello") == []
    async with tg.db() as session:
        assert not (await session.get(Chat, GROUP["id"])).active


# --- messages, roster, rollups ------------------------------------------------------------------


async def test_messages_build_roster_and_daily_rollups(tg):
    await add_bot(tg)
    t0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    await tg.feed(
        f.message(GROUP, ALICE, "one", date=t0),
        f.message(GROUP, ALICE, "/help", date=t0 + timedelta(minutes=1)),
        f.message(GROUP, BOB, "hi", date=t0 + timedelta(minutes=2)),
        f.message(GROUP, ALICE, "next day", date=t0 + timedelta(days=1)),
        f.edited(GROUP, ALICE, "one!", date=t0, edit_date=t0 + timedelta(minutes=5)),
    )
    await tg.flush()
    days = await rollup(tg)
    d1, d2 = date(2026, 11, 25), date(2026, 11, 26)
    assert (days[(1, d1)].messages, days[(1, d1)].edits) == (2, 1)
    assert days[(2, d1)].messages == 1 and days[(1, d2)].messages == 1
    members = await roster(tg)
    assert members[1].message_count == 3 and members[2].message_count == 1
    assert members[1].display_name == "Alice" and members[1].username == "alice"
    assert members[1].first_seen == t0 and members[1].last_active == t0 + timedelta(days=1)
    assert members[1].joined_at is None  # seen talking, never seen joining


async def test_service_accounts_bots_and_channels_are_not_counted(tg):
    await add_bot(tg)
    now = tg.now()
    channel = {"id": -1002000000000, "type": "channel", "title": "News"}
    await tg.feed(
        f.message(
            GROUP,
            f.TELEGRAM_SERVICE,
            "forwarded from linked channel",
            date=now,
            sender_chat=channel,
            is_automatic_forward=True,
        ),
        f.message(GROUP, f.ANONYMOUS_ADMIN, "anonymous admin", date=now, sender_chat=GROUP),
        f.message(GROUP, f.SERVICE_CHANNEL_BOT, "as a channel", date=now, sender_chat=channel),
        f.message(GROUP, f.user(77, "SomeBot", is_bot=True), "beep", date=now),
        f.message(
            GROUP, {"id": 999000, "is_bot": True, "first_name": "Community Bot"}, "me", date=now
        ),
        f.message(GROUP, f.TELEGRAM_SERVICE, "777000 without sender_chat", date=now),
        f.message(GROUP, ALICE, "real", date=now),
    )
    await tg.flush()
    assert set(await roster(tg)) == {1}
    assert [(k, r.messages) for k, r in (await rollup(tg)).items()] == [((1, now.date()), 1)]


async def test_day_is_the_chat_local_day_telegram_stamped(tg):
    await add_bot(tg)
    await tg.services.chats.update_settings(GROUP["id"], timezone="Asia/Shanghai")
    # 16:30 UTC is 00:30 the next day in Shanghai; 15:59 UTC is 23:59 the same day.
    late = datetime(2026, 11, 24, 15, 59, tzinfo=UTC)
    after_midnight = datetime(2026, 11, 24, 16, 30, tzinfo=UTC)
    tg.clock.set(datetime(2026, 11, 26, 3, 0, tzinfo=UTC))  # processed much later (backlog)
    await tg.feed(
        f.message(GROUP, ALICE, "a", date=late), f.message(GROUP, ALICE, "b", date=after_midnight)
    )
    await tg.flush()
    days = await rollup(tg)
    assert days[(1, date(2026, 11, 24))].messages == 1
    assert days[(1, date(2026, 11, 25))].messages == 1


async def test_unknown_group_is_registered_on_first_message(tg):
    await tg.feed(f.message(GROUP, ALICE, "the bot was here before its database", date=tg.now()))
    await tg.flush()
    async with tg.db() as session:
        assert (await session.get(Chat, GROUP["id"])) is not None
    assert 1 in await roster(tg)


# --- joins and leaves ---------------------------------------------------------------------------


async def test_join_seen_both_ways_counts_once(tg):
    await add_bot(tg, "administrator")
    t = tg.now()
    await tg.feed(
        f.chat_member(GROUP, BOB, BOB, "left", "member", date=t),
        f.new_members(GROUP, [BOB], date=t),
    )
    days = await rollup(tg)
    assert days[(2, t.date())].joins == 1
    member = (await roster(tg))[2]
    assert member.status == "member" and member.joined_at == t


async def test_join_then_leave_then_late_service_message_is_one_join_one_leave(tg):
    await add_bot(tg, "administrator")
    t = tg.now()
    await tg.feed(
        f.chat_member(GROUP, BOB, BOB, "left", "member", date=t),
        f.chat_member(GROUP, BOB, BOB, "member", "left", date=t + timedelta(seconds=1)),
        f.new_members(GROUP, [BOB], date=t),
        f.left_member(GROUP, BOB, date=t + timedelta(seconds=1)),
    )
    row = (await rollup(tg))[(2, t.date())]
    assert (row.joins, row.leaves) == (1, 1)
    assert (await roster(tg))[2].status == "left"


async def test_rejoin_later_counts_again_and_kick_is_recorded(tg):
    await add_bot(tg, "administrator")
    t = tg.now()
    await tg.feed(f.new_members(GROUP, [BOB], date=t))
    await tg.feed(f.left_member(GROUP, BOB, date=t + timedelta(hours=1), remover=ADMIN))
    assert (await roster(tg))[2].status == "kicked"
    await tg.feed(f.chat_member(GROUP, BOB, BOB, "left", "member", date=t + timedelta(days=1)))
    days = await rollup(tg)
    assert days[(2, t.date())].joins == 1 and days[(2, t.date())].leaves == 1
    assert days[(2, (t + timedelta(days=1)).date())].joins == 1


async def test_member_seen_talking_before_join_event_still_counts_the_join(tg):
    await add_bot(tg)
    t = tg.now()
    await tg.feed(f.message(GROUP, BOB, "hi", date=t))
    await tg.flush()
    await tg.feed(f.new_members(GROUP, [BOB], date=t - timedelta(seconds=30)))
    assert (await rollup(tg))[(2, t.date())].joins == 1


async def test_bots_joining_are_not_members(tg):
    await add_bot(tg)
    await tg.feed(
        f.new_members(GROUP, [f.user(55, "Spam", is_bot=True)], date=tg.now(), adder=ADMIN)
    )
    assert await roster(tg) == {}


async def test_restricted_member_is_still_in_the_chat(tg):
    await add_bot(tg, "administrator")
    t = tg.now()
    await tg.feed(
        f.chat_member(GROUP, BOB, BOB, "left", "member", date=t),
        f.chat_member(GROUP, ADMIN, BOB, "member", "restricted", date=t + timedelta(minutes=1)),
    )
    row = (await rollup(tg))[(2, t.date())]
    assert (row.joins, row.leaves) == (1, 0)


# --- group → supergroup migration ---------------------------------------------------------

OLD = f.group(-4000001, "Small Group", "group")
NEW = f.group(-1004000001, "Small Group", "supergroup")


async def _history_in_old_group(tg) -> datetime:
    await add_bot(tg, chat=OLD)
    await tg.services.chats.update_settings(OLD["id"], timezone="Europe/Berlin", language="zh")
    t = tg.now()
    await tg.feed(f.message(OLD, ALICE, "before", date=t), f.new_members(OLD, [BOB], date=t))
    await tg.flush()
    return t


async def _assert_moved(tg, t: datetime) -> None:
    async with tg.db() as session:
        assert await session.get(Chat, OLD["id"]) is None
        chat = await session.get(Chat, NEW["id"])
        assert (
            chat.type == "supergroup"
            and chat.timezone == "Europe/Berlin"
            and chat.language == "zh"
        )
        assert (await session.get(ChatMigration, OLD["id"])).new_chat_id == NEW["id"]
        left_behind = await session.scalar(
            select(func.count())
            .select_from(DailyActivity)
            .where(DailyActivity.chat_id == OLD["id"])
        )
        assert left_behind == 0
    members = await roster(tg, NEW["id"])
    assert set(members) == {1, 2}


@both_databases
async def test_migration_to_chat_id_first(tg):
    t = await _history_in_old_group(tg)
    await tg.feed(f.message(OLD, ADMIN, None, date=t, migrate_to_chat_id=NEW["id"]))
    await tg.feed(f.message(NEW, ADMIN, None, date=t, migrate_from_chat_id=OLD["id"]))
    await _assert_moved(tg, t)
    assert (await rollup(tg, NEW["id"]))[(1, t.date())].messages == 1


@both_databases
async def test_migration_from_chat_id_first_merges_early_rows_of_the_new_id(tg):
    t = await _history_in_old_group(tg)
    # The supergroup speaks before the migration is processed: its rows must merge, not clash.
    await tg.feed(f.message(NEW, ALICE, "after", date=t))
    await tg.flush()
    await tg.feed(f.message(NEW, ADMIN, None, date=t, migrate_from_chat_id=OLD["id"]))
    await tg.feed(f.message(OLD, ADMIN, None, date=t, migrate_to_chat_id=NEW["id"]))
    await tg.feed(f.message(NEW, ADMIN, None, date=t, migrate_from_chat_id=OLD["id"]))  # duplicate
    await _assert_moved(tg, t)
    days = await rollup(tg, NEW["id"])
    assert days[(1, t.date())].messages == 2  # 1 before + 1 after, summed
    assert days[(2, t.date())].joins == 1
    assert (await roster(tg, NEW["id"]))[1].message_count == 2


async def test_buffered_activity_of_the_old_id_follows_the_migration(tg):
    t = await _history_in_old_group(tg)
    await tg.feed(f.message(OLD, ALICE, "buffered, not yet flushed", date=t))
    await tg.services.chats.migrate(OLD["id"], NEW["id"])  # e.g. learned from ChatMigrated
    await tg.flush()
    assert (await rollup(tg, NEW["id"]))[(1, t.date())].messages == 2


async def test_chat_migrated_error_on_send_moves_the_chat_and_resends(tg):
    await _history_in_old_group(tg)
    tg.api.clear()
    tg.api.fail(
        "sendMessage",
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
        migrate_to_chat_id=NEW["id"],
    )
    sent = await send_text(tg.app.bot, tg.services, OLD["id"], "digest")
    assert [c.params["chat_id"] for c in tg.api.of("sendMessage")] == [OLD["id"], NEW["id"]]
    assert sent and sent[0].chat_id == NEW["id"]
    async with tg.db() as session:
        assert await session.get(Chat, OLD["id"]) is None and await session.get(Chat, NEW["id"])
