"""/start, /help per audience, and the command menus published per scope and language."""

from __future__ import annotations

import re

from sqlalchemy import select

from bot.app import startup
from bot.commands import Audience
from bot.models import UserProfile
from tests import factories as f

GROUP = f.group(-1001000000001, "Help Group")
ADMIN = f.user(10, "Ada")
MEMBER = f.user(20, "Max", language_code="zh-CN")


async def test_start_in_private_remembers_the_person_and_offers_a_group_button(tg):
    await tg.feed(f.message(f.private(MEMBER), MEMBER, "/start", date=tg.now()))
    call = tg.api.of("sendMessage")[0]
    assert "你好" in call.params["text"]  # Telegram language zh-CN → Chinese
    button = call.params["reply_markup"]["inline_keyboard"][0][0]
    assert button["url"] == "https://t.me/community_test_bot?startgroup=true"
    async with tg.db() as session:
        profile = (await session.scalars(select(UserProfile))).one()
    assert profile.user_id == MEMBER["id"] and profile.started_at == tg.now()


async def test_start_and_help_in_a_group(tg):
    await tg.feed(f.my_chat_member(GROUP, ADMIN, "left", "administrator", date=tg.now()))
    tg.api.set_admins(GROUP["id"], ADMIN)
    tg.api.clear()

    async def answer(who, text: str) -> str:
        tg.api.clear()
        await tg.feed(f.message(GROUP, who, text, date=tg.now()))
        return "\n".join(tg.api.sent_texts())  # (an operator's /help takes two messages)

    start = await answer(MEMBER, "/start@community_test_bot")
    member_help = await answer(MEMBER, "/help")
    admin_help = await answer(ADMIN, "/help")
    assert "/help" in start
    commands = tg.app.bot_data["commands"]
    operator_only = [c.name for c in commands if c.audience is Audience.OPERATOR]
    assert operator_only and not any(f"/{name} " in member_help for name in operator_only)
    assert all(f"/{name} " in admin_help for name in operator_only)
    assert "/help " in member_help and "/help " in admin_help


async def test_help_in_private_lists_everything_with_operator_hint(tg):
    await tg.feed(f.message(f.private(ADMIN), ADMIN, "/help", date=tg.now()))
    text = "\n".join(tg.api.sent_texts())  # long enough to be split within 4096
    for spec in tg.app.bot_data["commands"]:
        assert f"/{spec.name} " in text
    assert "/groups" in text


async def test_startup_publishes_menus_per_scope_and_language(tg):
    await startup(tg.app)
    calls = tg.api.of("setMyCommands")
    seen = {(c.params["scope"]["type"], c.params.get("language_code")) for c in calls}
    assert seen == {
        (scope, lang)
        for scope in ("default", "all_group_chats", "all_chat_administrators")
        for lang in (None, "zh")
    }
    menus = {
        (c.params["scope"]["type"], c.params.get("language_code")): [
            cmd["command"] for cmd in c.params["commands"]
        ]
        for c in calls
    }
    operator_only = {
        c.name for c in tg.app.bot_data["commands"] if c.audience is Audience.OPERATOR
    }
    assert not operator_only & set(menus[("all_group_chats", None)])
    assert operator_only <= set(menus[("all_chat_administrators", None)])
    for call in calls:
        for command in call.params["commands"]:
            assert re.fullmatch(r"[a-z0-9_]{1,32}", command["command"])
            assert 1 <= len(command["description"]) <= 256
    zh = [c for c in calls if c.params.get("language_code") == "zh"][0]
    assert any(re.search(r"[\u4e00-\u9fff]", cmd["description"]) for cmd in zh.params["commands"])
    assert tg.services.bot_sees_all_messages is False  # from getMe: privacy mode on


async def test_command_routing_keeps_ptb_semantics(tg):
    """Commands go through one router per handler group; it must answer exactly what
    PTB's CommandHandlers would: own bot's @name yes, another bot's no, captions no."""
    from bot.updates import CommandRouter

    assert any(isinstance(h, CommandRouter) for h in tg.app.handlers[0])
    chat = f.private(MEMBER)
    await tg.feed(f.message(chat, MEMBER, "/help@community_test_bot", date=tg.now()))
    await tg.feed(f.message(chat, MEMBER, "/help@some_other_bot", date=tg.now()))
    await tg.feed(f.message(chat, MEMBER, "/nosuchcommand", date=tg.now()))
    await tg.feed(f.message(chat, MEMBER, "help /help", date=tg.now()))
    await tg.feed(f.message(chat, MEMBER, "/", date=tg.now()))
    assert len(tg.api.sent_texts()) == 1
