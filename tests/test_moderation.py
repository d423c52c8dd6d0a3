"""Sanctions, warnings, the moderation log: the Bot API calls they make and their refusals."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.moderation import MemberWarning, ModerationSettings
from tests import factories as f
from tests.conftest import both_databases
from tests.moderation_support import (
    ADMIN,
    CHANNEL,
    GROUP,
    HOSTILE,
    MEMBER,
    NO_PERMISSIONS,
    command,
    last_text,
    log_entries,
    say,
    setup_group,
)
from tests.recording import BOT_USER, DEFAULT_PERMISSIONS
from tests.telegram_html import visible_text


def until(tg, **delta) -> int:
    return int((tg.now() + timedelta(**delta)).timestamp())


# --- mute / unmute ----------------------------------------------------------------------------


@both_databases
async def test_mute_by_reply_with_duration_and_reason(tg):
    await setup_group(tg)
    target = await say(tg, MEMBER, "spam spam")
    await command(tg, ADMIN, "/mute 30m flooding the chat", reply_to=target)

    (call,) = tg.api.of("restrictChatMember")
    assert call.params == {
        "chat_id": GROUP["id"],
        "user_id": MEMBER["id"],
        "permissions": NO_PERMISSIONS,
        "until_date": until(tg, minutes=30),
        "use_independent_chat_permissions": True,
    }
    text = last_text(tg)
    assert "Max" in text and "30m" in text and "flooding the chat" in text
    (entry,) = await log_entries(tg)
    assert (entry.action, entry.actor_id, entry.target_id) == ("mute", ADMIN["id"], MEMBER["id"])
    assert entry.duration == 1800 and entry.reason == "flooding the chat"


async def test_mute_without_duration_is_until_unmuted(tg):
    await setup_group(tg)
    await say(tg, MEMBER, "hi")
    await tg.flush()
    await command(tg, ADMIN, "/mute @max")
    (call,) = tg.api.of("restrictChatMember")
    assert "until_date" not in call.params
    assert call.params["permissions"] == NO_PERMISSIONS
    assert "until an operator unmutes" in last_text(tg)


async def test_unmute_restores_the_groups_default_permissions(tg):
    await setup_group(tg)
    defaults = dict(DEFAULT_PERMISSIONS, can_send_polls=False, can_send_photos=False)
    tg.api.chat_permissions[GROUP["id"]] = defaults
    await command(tg, ADMIN, f"/unmute {MEMBER['id']}")
    (call,) = tg.api.of("restrictChatMember")
    assert call.params["permissions"] == defaults
    assert "until_date" not in call.params
    assert tg.api.of("getChat")


async def test_durations_out_of_range_or_unreadable_are_explained(tg):
    await setup_group(tg)
    target = await say(tg, MEMBER, "x")
    for bad in ("10s", "400d", "5x", "30"):
        await command(tg, ADMIN, f"/mute {bad} why", reply_to=target)
        text = last_text(tg)
        assert f"<code>{bad}</code>" in text and "Example" in text, text
    assert not tg.api.of("restrictChatMember")


async def test_longest_allowed_duration_is_sent_as_a_date(tg):
    await setup_group(tg)
    target = await say(tg, MEMBER, "x")
    await command(tg, ADMIN, "/ban 365d", reply_to=target)
    (call,) = tg.api.of("banChatMember")
    assert call.params["until_date"] == until(tg, days=365)


# --- ban / unban / kick ---------------------------------------------------------------------


async def test_ban_by_username_from_the_roster_then_unban(tg):
    await setup_group(tg)
    await say(tg, MEMBER, "hello")
    await tg.flush()
    await command(tg, ADMIN, "/ban @MAX 7d scam links")
    (ban,) = tg.api.of("banChatMember")
    assert ban.params == {
        "chat_id": GROUP["id"],
        "user_id": MEMBER["id"],
        "until_date": until(tg, days=7),
    }
    assert "1w" in last_text(tg) and "scam links" in last_text(tg)
    await command(tg, ADMIN, "/unban @max")
    (unban,) = tg.api.of("unbanChatMember")
    assert unban.params == {
        "chat_id": GROUP["id"],
        "user_id": MEMBER["id"],
        "only_if_banned": True,
    }
    assert [e.action for e in await log_entries(tg)] == ["ban", "unban"]


async def test_kick_is_ban_then_unban(tg):
    await setup_group(tg)
    target = await say(tg, MEMBER, "ads")
    await command(tg, ADMIN, "/kick off-topic ads", reply_to=target)
    methods = [c.method for c in tg.api.calls if c.method.endswith("ChatMember")]
    assert methods == ["banChatMember", "unbanChatMember"]
    assert "until_date" not in tg.api.of("banChatMember")[0].params
    assert tg.api.of("unbanChatMember")[0].params["only_if_banned"] is True
    (entry,) = await log_entries(tg)
    assert entry.action == "kick" and entry.reason == "off-topic ads"


async def test_a_channel_sender_is_banned_with_ban_chat_sender_chat(tg):
    await setup_group(tg)
    post = await say(tg, f.SERVICE_CHANNEL_BOT, "buy crypto", sender_chat=CHANNEL)
    await command(tg, ADMIN, "/ban", reply_to=post)
    (call,) = tg.api.of("banChatSenderChat")
    assert call.params == {"chat_id": GROUP["id"], "sender_chat_id": CHANNEL["id"]}
    assert not tg.api.of("banChatMember")  # never the shared 136817688 account
    assert "Spam &lt;Channel&gt;" in last_text(tg)
    await command(tg, ADMIN, "/mute", reply_to=post)
    assert "channel" in last_text(tg) and not tg.api.of("restrictChatMember")
    await command(tg, ADMIN, "/unban", reply_to=post)
    assert tg.api.of("unbanChatSenderChat")[0].params["sender_chat_id"] == CHANNEL["id"]


# --- refusals ---------------------------------------------------------------------------------


async def test_non_operators_are_refused(tg):
    await setup_group(tg)
    target = await say(tg, ADMIN, "hi")
    for text in ("/ban", "/mute 1h", "/kick", "/warn", "/unmute", "/setwarnlimit 2"):
        await command(tg, MEMBER, text, reply_to=target)
        assert last_text(tg) == "Only the group's operators (admins) can use this command."
    assert not [
        c for c in tg.api.calls if "ChatMember" in c.method and c.method != "getChatMember"
    ]
    assert await log_entries(tg) == []


async def test_operators_the_bot_and_service_accounts_cannot_be_sanctioned(tg):
    await setup_group(tg)
    other_admin = f.user(11, "Bea")
    tg.api.set_admins(GROUP["id"], ADMIN, other_admin)
    target = await say(tg, other_admin, "hi")
    await command(tg, ADMIN, "/ban", reply_to=target)
    assert "operator" in last_text(tg)
    owner = f.user(424242, "Owner")  # BOT_OWNERS
    await command(tg, ADMIN, "/mute", reply_to=await say(tg, owner, "hi"))
    assert "operator" in last_text(tg)
    mine = f.message_dict(GROUP, BOT_USER, "x", date=tg.now())
    await command(tg, ADMIN, "/kick", reply_to=mine)
    assert "myself" in last_text(tg)
    await command(tg, ADMIN, "/ban 777000")
    assert "service account" in last_text(tg)
    assert not tg.api.of("banChatMember") and not tg.api.of("restrictChatMember")


async def test_missing_and_unknown_targets_are_explained(tg):
    await setup_group(tg)
    await command(tg, ADMIN, "/mute")
    assert "Reply to one of their messages" in last_text(tg) and "/mute @username" in last_text(tg)
    await command(tg, ADMIN, "/ban @nobody 1d")
    assert "@nobody" in last_text(tg) and "Example" in last_text(tg)


async def test_missing_right_is_explained_without_calling(tg):
    await setup_group(tg, bot_status="member")
    target = await say(tg, MEMBER, "x")
    await command(tg, ADMIN, "/mute 1h", reply_to=target)
    assert "Ban and restrict members" in last_text(tg)
    assert not tg.api.of("restrictChatMember")
    assert tg.api.of("getChatMember")  # asked Telegram before saying no


async def test_rights_granted_before_the_bot_kept_records_are_found(tg):
    await setup_group(tg, bot_status="member")
    tg.api.chat_members[(GROUP["id"], BOT_USER["id"])] = f.chat_member_status(
        BOT_USER, "administrator"
    )
    target = await say(tg, MEMBER, "x")
    await command(tg, ADMIN, "/mute 1h", reply_to=target)
    assert tg.api.of("restrictChatMember")


async def test_telegram_refusals_are_explained(tg):
    await setup_group(tg)
    target = await say(tg, MEMBER, "x")
    tg.api.fail("restrictChatMember", 400, "Bad Request: user is an administrator of the chat")
    await command(tg, ADMIN, "/mute 1h", reply_to=target)
    assert "they are an admin" in last_text(tg)
    tg.api.fail(
        "banChatMember", 400, "Bad Request: not enough rights to restrict/unrestrict chat member"
    )
    await command(tg, ADMIN, "/ban", reply_to=target)
    assert "Ban and restrict members" in last_text(tg)
    assert await log_entries(tg) == []  # nothing happened, nothing logged


async def test_hostile_names_appear_literally(tg):
    await setup_group(tg)
    target = await say(tg, HOSTILE, "hi")
    await command(tg, ADMIN, "/mute 1h <i>reason</i> & more", reply_to=target)
    text = last_text(tg)
    assert "&lt;b&gt;x&lt;/b&gt; a_b*c" in text
    assert "&lt;i&gt;reason&lt;/i&gt; &amp; more" in text
    assert "<b>x</b> a_b*c" in visible_text(text)
    await command(tg, ADMIN, "/warn", reply_to=target)
    assert "&lt;b&gt;x&lt;/b&gt;" in last_text(tg)
    await command(tg, ADMIN, "/modlog")
    assert "&lt;b&gt;x&lt;/b&gt; a_b*c" in last_text(tg)


# --- warnings -------------------------------------------------------------------------------


@both_databases
async def test_warnings_up_to_the_limit_apply_the_action_and_reset(tg):
    await setup_group(tg)
    target = await say(tg, MEMBER, "x")
    await command(tg, ADMIN, "/warn off topic", reply_to=target)
    assert "(1/3)" in last_text(tg) and "off topic" in last_text(tg)
    await command(tg, ADMIN, "/warn", reply_to=target)
    await command(tg, MEMBER, "/warns")
    assert "2/3" in last_text(tg) and "off topic" in last_text(tg)
    assert not tg.api.of("restrictChatMember")
    await command(tg, ADMIN, "/warn third", reply_to=target)
    (call,) = tg.api.of("restrictChatMember")
    assert call.params["until_date"] == until(tg, days=1)  # default: mute for a day
    assert call.params["permissions"] == NO_PERMISSIONS
    assert "reached 3 warnings" in last_text(tg) and "muted for 1d" in last_text(tg)
    async with tg.db() as session:
        assert (await session.scalars(select(MemberWarning))).all() == []
    actions = [e.action for e in await log_entries(tg)]
    assert actions == ["warn", "warn", "warn", "mute"]


async def test_setwarnlimit_changes_the_action(tg):
    await setup_group(tg)
    target = await say(tg, MEMBER, "x")
    await command(tg, ADMIN, "/setwarnlimit 2 ban 7d")
    assert "After 2 warnings: ban for 1w" in last_text(tg)
    await command(tg, ADMIN, "/warn", reply_to=target)
    await command(tg, ADMIN, "/warn", reply_to=target)
    (ban,) = tg.api.of("banChatMember")
    assert ban.params["until_date"] == until(tg, days=7)
    await command(tg, ADMIN, "/setwarnlimit 2 kick")
    await command(tg, ADMIN, "/warn", reply_to=target)
    await command(tg, ADMIN, "/warn", reply_to=target)
    assert [c.method for c in tg.api.calls if c.method.endswith("ChatMember")][-2:] == [
        "banChatMember",
        "unbanChatMember",
    ]


async def test_setwarnlimit_bad_input(tg):
    await setup_group(tg)
    for text in ("/setwarnlimit", "/setwarnlimit 0", "/setwarnlimit 50", "/setwarnlimit 3 eat"):
        await command(tg, ADMIN, text)
        assert "/setwarnlimit 3 mute 1d" in last_text(tg), text
    await command(tg, ADMIN, "/setwarnlimit 3 mute 10s")
    assert "<code>10s</code>" in last_text(tg)
    async with tg.db() as session:
        assert await session.get(ModerationSettings, GROUP["id"]) is None


async def test_unwarn_and_resetwarns(tg):
    await setup_group(tg)
    target = await say(tg, MEMBER, "x")
    await command(tg, ADMIN, "/warn one", reply_to=target)
    await command(tg, ADMIN, "/warn two", reply_to=target)
    await command(tg, ADMIN, "/unwarn", reply_to=target)
    assert "1 left" in last_text(tg)
    await command(tg, ADMIN, f"/warns {MEMBER['id']}")
    assert "1/3" in last_text(tg) and "one" in last_text(tg) and "two" not in last_text(tg)
    await command(tg, ADMIN, "/resetwarns", reply_to=target)
    assert "Cleared 1" in last_text(tg)
    await command(tg, ADMIN, "/unwarn", reply_to=target)
    assert "no warnings" in last_text(tg)


async def test_warnings_expire_when_configured(tg):
    await setup_group(tg)
    target = await say(tg, MEMBER, "x")
    await command(tg, ADMIN, "/setwarnexpiry 7d")
    assert "7 days" in last_text(tg)
    await command(tg, ADMIN, "/warn", reply_to=target)
    await command(tg, ADMIN, "/warn", reply_to=target)
    tg.clock.advance(days=7, seconds=1)
    await command(tg, MEMBER, "/warns")
    assert "no warnings" in last_text(tg)
    await command(tg, ADMIN, "/warn", reply_to=target)
    assert "(1/3)" in last_text(tg)
    await command(tg, ADMIN, "/setwarnexpiry 12h")
    assert "/setwarnexpiry 30d" in last_text(tg)


# --- the log --------------------------------------------------------------------------------


async def test_modlog_lists_recent_entries_and_filters_by_member(tg):
    await setup_group(tg)
    max_message = await say(tg, MEMBER, "x")
    other = f.user(21, "Olga")
    olga_message = await say(tg, other, "y")
    await command(tg, ADMIN, "/warn spam", reply_to=max_message)
    await command(tg, ADMIN, "/mute 2h", reply_to=olga_message)
    await command(tg, ADMIN, "/modlog")
    text = last_text(tg)
    assert "mute" in text and "(2h)" in text and "warning" in text and "spam" in text
    assert text.index("mute") < text.index("warning")  # newest first
    await command(tg, ADMIN, "/modlog", reply_to=olga_message)
    assert "Olga" in last_text(tg) and "Max" not in last_text(tg)
    await command(tg, MEMBER, "/modlog")
    assert "operators" in last_text(tg)


async def test_log_channel_receives_entries(tg):
    await setup_group(tg)
    log_chat = -1009000000000
    await command(tg, ADMIN, f"/setlog {log_chat}")
    assert "admin of that chat" in last_text(tg)  # not an admin there: refused
    assert not tg.api.sent_texts(log_chat)
    tg.api.chat_members[(log_chat, ADMIN["id"])] = f.chat_member_status(ADMIN, "creator")
    await command(tg, ADMIN, f"/setlog {log_chat}")
    assert "now receives the moderation log" in tg.api.sent_texts(log_chat)[0]
    assert "now also goes to" in last_text(tg)
    target = await say(tg, MEMBER, "x")
    await command(tg, ADMIN, "/ban 1d scam", reply_to=target)
    entry = tg.api.sent_texts(log_chat)[-1]
    assert entry.startswith("#ban") and "Ops &lt;b&gt;&amp;&lt;/b&gt; Group" in entry
    assert f"<code>{MEMBER['id']}</code>" in entry and "scam" in entry and "1d" in entry
    await command(tg, ADMIN, "/setlog off")
    await command(tg, ADMIN, "/kick", reply_to=target)
    assert len(tg.api.sent_texts(log_chat)) == 2


async def test_setlog_from_a_forwarded_channel_message_and_failures(tg):
    await setup_group(tg)
    forwarded = f.message_dict(
        GROUP,
        ADMIN,
        "from the channel",
        date=tg.now(),
        forward_origin={
            "type": "channel",
            "date": f.ts(tg.now()),
            "chat": {"id": -1008000000000, "type": "channel", "title": "Log"},
            "message_id": 5,
        },
    )
    tg.api.chat_members[(-1008000000000, ADMIN["id"])] = f.chat_member_status(
        ADMIN, "administrator"
    )
    await command(tg, ADMIN, "/setlog", reply_to=forwarded)
    assert tg.api.sent_texts(-1008000000000)
    async with tg.db() as session:
        assert (await session.get(ModerationSettings, GROUP["id"])).log_chat_id == -1008000000000
    tg.api.fail("sendMessage", 403, "Forbidden: bot is not a member of the channel chat")
    tg.api.chat_members[(-1007000000000, ADMIN["id"])] = f.chat_member_status(ADMIN, "creator")
    await command(tg, ADMIN, "/setlog -1007000000000")
    assert "can't post in that chat" in last_text(tg)
    await command(tg, ADMIN, "/setlog")
    assert "/setlog -1001234567890" in last_text(tg)


async def test_sanctions_from_a_private_chat_through_groups(tg):
    await setup_group(tg)
    await say(tg, MEMBER, "x")
    await tg.flush()
    chat = f.private(ADMIN)
    await tg.feed(f.callback(ADMIN, f"groups:{GROUP['id']}", chat=chat, date=tg.now()))
    await tg.feed(f.message(chat, ADMIN, "/mute @max 1h", date=tg.now()))
    (call,) = tg.api.of("restrictChatMember")
    assert call.params["chat_id"] == GROUP["id"] and call.params["user_id"] == MEMBER["id"]
    assert "muted for 1h" in tg.api.sent_texts(ADMIN["id"])[-1]


async def test_basic_groups_get_an_explanation(tg):
    await setup_group(tg)
    target = await say(tg, MEMBER, "x")
    tg.api.fail("restrictChatMember", 400, "Bad Request: method is available only for supergroups")
    await command(tg, ADMIN, "/mute 1h", reply_to=target)
    assert "only in supergroups" in last_text(tg)
