"""The operator check (admins, anonymous admins, owners), its cache, and /groups connections."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.models import Chat, UserProfile
from tests import factories as f

GROUP = f.group(-1001000000001, "Ops <b>Group</b>")
OTHER = f.group(-1001000000002, "Other")
ADMIN = f.user(10, "Ada")
MEMBER = f.user(20, "Max")
OWNER = f.user(424242, "Owner")  # in BOT_OWNERS (tests/conftest.py settings)
CHANNEL = {"id": -1003000000000, "type": "channel", "title": "Some Channel"}


async def setup_group(tg, chat=GROUP) -> None:
    await tg.feed(f.my_chat_member(chat, ADMIN, "left", "administrator", date=tg.now()))
    tg.api.set_admins(chat["id"], ADMIN)
    tg.api.clear()


async def language_of(tg, chat_id=GROUP["id"]) -> str:
    async with tg.db() as session:
        return (await session.get(Chat, chat_id)).language


async def test_admin_may_change_language(tg):
    await setup_group(tg)
    await tg.feed(f.message(GROUP, ADMIN, "/language zh", date=tg.now()))
    assert await language_of(tg) == "zh"
    assert "简体中文" in tg.api.sent_texts()[-1]


async def test_non_admin_is_refused_and_nothing_changes(tg):
    await setup_group(tg)
    await tg.feed(f.message(GROUP, MEMBER, "/language zh", date=tg.now()))
    assert await language_of(tg) == "en"
    assert tg.api.sent_texts() == ["Only the group's operators (admins) can use this command."]


async def test_anonymous_admin_of_this_group_is_an_operator(tg):
    await setup_group(tg)
    await tg.feed(
        f.message(GROUP, f.ANONYMOUS_ADMIN, "/language zh", date=tg.now(), sender_chat=GROUP)
    )
    assert await language_of(tg) == "zh"
    assert not tg.api.of("getChatAdministrators")  # recognised without asking Telegram


async def test_anonymous_sender_from_another_chat_is_not(tg):
    await setup_group(tg)
    await tg.feed(
        f.message(GROUP, f.SERVICE_CHANNEL_BOT, "/language zh", date=tg.now(), sender_chat=CHANNEL)
    )
    await tg.feed(
        f.message(GROUP, f.ANONYMOUS_ADMIN, "/language zh", date=tg.now(), sender_chat=OTHER)
    )
    assert await language_of(tg) == "en"
    assert len(tg.api.sent_texts()) == 2


async def test_owner_is_an_operator_everywhere(tg):
    await setup_group(tg)
    await tg.feed(f.message(GROUP, OWNER, "/language zh", date=tg.now()))
    assert await language_of(tg) == "zh"


async def test_admin_list_is_cached_then_refreshed_after_ttl(tg):
    await setup_group(tg)
    for _ in range(3):
        await tg.feed(f.message(GROUP, ADMIN, "/language en", date=tg.now()))
    assert len(tg.api.of("getChatAdministrators")) == 1
    tg.clock.advance(minutes=11)
    await tg.feed(f.message(GROUP, ADMIN, "/language en", date=tg.now()))
    assert len(tg.api.of("getChatAdministrators")) == 2


async def test_demotion_takes_effect_at_once(tg):
    await setup_group(tg)
    await tg.feed(f.message(GROUP, ADMIN, "/language zh", date=tg.now()))
    assert await language_of(tg) == "zh"
    # Demoted: Telegram tells us with a chat_member update; no refetch needed.
    await tg.feed(f.chat_member(GROUP, OWNER, ADMIN, "administrator", "member", date=tg.now()))
    await tg.feed(f.message(GROUP, ADMIN, "/language en", date=tg.now()))
    assert await language_of(tg) == "zh"
    assert len(tg.api.of("getChatAdministrators")) == 1
    # Promoted again: allowed at once.
    await tg.feed(f.chat_member(GROUP, OWNER, ADMIN, "member", "administrator", date=tg.now()))
    await tg.feed(f.message(GROUP, ADMIN, "/language en", date=tg.now()))
    assert await language_of(tg) == "en"


async def test_promotion_of_a_member_lets_them_in(tg):
    await setup_group(tg)
    await tg.feed(f.message(GROUP, MEMBER, "/language zh", date=tg.now()))  # fills the cache
    await tg.feed(f.chat_member(GROUP, ADMIN, MEMBER, "member", "administrator", date=tg.now()))
    await tg.feed(f.message(GROUP, MEMBER, "/language zh", date=tg.now()))
    assert await language_of(tg) == "zh"


async def test_settimezone_validates_and_explains(tg):
    await setup_group(tg)
    await tg.feed(f.message(GROUP, ADMIN, "/settimezone Mars/Olympus", date=tg.now()))
    await tg.feed(f.message(GROUP, ADMIN, "/settimezone", date=tg.now()))
    await tg.feed(f.message(GROUP, ADMIN, "/settimezone asia/shanghai", date=tg.now()))
    texts = tg.api.sent_texts()
    assert "Mars/Olympus" in texts[0] and "/settimezone Asia/Shanghai" in texts[0]
    assert "Example" in texts[1]
    assert "Asia/Shanghai" in texts[2] and "20:00" in texts[2]  # 12:00 UTC is 20:00 there
    async with tg.db() as session:
        assert (await session.get(Chat, GROUP["id"])).timezone == "Asia/Shanghai"
    assert tg.services.chats.cached(GROUP["id"]) is None or (
        tg.services.chats.cached(GROUP["id"]).timezone.key == "Asia/Shanghai"
    )


async def test_language_usage_error(tg):
    await setup_group(tg)
    await tg.feed(f.message(GROUP, ADMIN, "/language fr", date=tg.now()))
    assert "/language zh" in tg.api.sent_texts()[0]
    assert await language_of(tg) == "en"


# --- connections (/groups) -------------------------------------------------------------------


async def test_groups_lists_operated_groups_and_connects(tg):
    await setup_group(tg)
    await setup_group(tg, OTHER)
    tg.api.set_admins(OTHER["id"], MEMBER)  # Ada does not operate OTHER
    await tg.feed(f.message(GROUP, ADMIN, "hi", date=tg.now()))
    await tg.flush()
    chat = f.private(ADMIN)
    await tg.feed(f.message(chat, ADMIN, "/groups", date=tg.now()))
    markup = tg.api.of("sendMessage")[-1].params["reply_markup"]
    buttons = [b for row in markup["inline_keyboard"] for b in row]
    assert [b["callback_data"] for b in buttons] == [f"groups:{GROUP['id']}"]
    assert buttons[0]["text"] == "Ops <b>Group</b>"  # button text is plain, not parsed

    await tg.feed(f.callback(ADMIN, f"groups:{GROUP['id']}", chat=chat, date=tg.now()))
    edit = tg.api.of("editMessageText")[-1].params
    assert "Ops &lt;b&gt;Group&lt;/b&gt;" in edit["text"]
    # Operator commands sent privately now apply to the group.
    await tg.feed(f.message(chat, ADMIN, "/language zh", date=tg.now()))
    assert await language_of(tg) == "zh"
    await tg.feed(f.message(chat, ADMIN, "/settimezone Europe/Paris", date=tg.now()))
    async with tg.db() as session:
        assert (await session.get(Chat, GROUP["id"])).timezone == "Europe/Paris"


async def test_connection_rechecks_rights_every_time(tg):
    await setup_group(tg)
    chat = f.private(ADMIN)
    await tg.feed(f.callback(ADMIN, f"groups:{GROUP['id']}", chat=chat, date=tg.now()))
    await tg.feed(f.chat_member(GROUP, OWNER, ADMIN, "administrator", "member", date=tg.now()))
    await tg.feed(f.message(chat, ADMIN, "/language zh", date=tg.now()))
    assert await language_of(tg) == "en"
    assert "no longer an operator" in tg.api.sent_texts()[-1]


async def test_forged_connection_callback_is_refused(tg):
    await setup_group(tg)
    chat = f.private(MEMBER)
    await tg.feed(f.callback(MEMBER, f"groups:{GROUP['id']}", chat=chat, date=tg.now()))
    await tg.feed(f.callback(MEMBER, "groups:not-a-number", chat=chat, date=tg.now()))
    answers = tg.api.of("answerCallbackQuery")
    assert len(answers) == 2 and all(a.params.get("show_alert") for a in answers)
    async with tg.db() as session:
        profile = await session.get(UserProfile, MEMBER["id"])
    assert profile is None or profile.connected_chat_id is None


async def test_operator_command_in_private_without_a_group_explains(tg):
    chat = f.private(ADMIN)
    await tg.feed(f.message(chat, ADMIN, "/settimezone Asia/Tokyo", date=tg.now()))
    assert "/groups" in tg.api.sent_texts()[0]


async def test_private_language_without_a_group_sets_mine(tg):
    chat = f.private(MEMBER)
    await tg.feed(f.message(chat, MEMBER, "/language zh", date=tg.now()))
    await tg.feed(f.message(chat, MEMBER, "/help", date=tg.now()))
    assert "中文" in tg.api.sent_texts()[0]
    assert "所有成员" in tg.api.sent_texts()[1]


async def test_groups_for_someone_without_groups(tg):
    chat = f.private(MEMBER)
    await tg.feed(f.message(chat, MEMBER, "/groups", date=tg.now()))
    assert "don't see a group" in tg.api.sent_texts()[0]


async def test_owner_sees_all_active_groups(tg):
    await setup_group(tg)
    await setup_group(tg, OTHER)
    await tg.feed(f.message(f.private(OWNER), OWNER, "/groups", date=tg.now()))
    markup = tg.api.of("sendMessage")[-1].params["reply_markup"]
    assert len(markup["inline_keyboard"]) == 2


async def test_refresh_failure_means_no_rights(tg):
    await setup_group(tg)
    tg.clock.advance(hours=1)
    tg.api.fail("getChatAdministrators", 400, "Bad Request: chat not found")
    await tg.feed(f.message(GROUP, ADMIN, "/language zh", date=tg.now() + timedelta(seconds=1)))
    assert await language_of(tg) == "en"
    async with tg.db() as session:
        assert (await session.scalars(select(Chat))).all()
