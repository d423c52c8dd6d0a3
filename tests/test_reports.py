"""/report and "@admin", and /inactive with its operator-confirmed removal."""

from __future__ import annotations

from datetime import timedelta

from bot.moderation import InactivePurge
from tests import factories as f
from tests.conftest import START, both_databases
from tests.moderation_support import (
    ADMIN,
    GROUP,
    HOSTILE,
    MEMBER,
    bot_message,
    command,
    last_text,
    log_entries,
    say,
    setup_group,
)

BEA = f.user(11, "Bea")


async def two_admins_one_reachable(tg) -> None:
    await setup_group(tg)
    tg.api.set_admins(GROUP["id"], ADMIN, BEA)
    await tg.feed(f.message(f.private(ADMIN), ADMIN, "/start", date=tg.now()))
    await say(tg, BEA, "hi")
    await tg.flush()
    tg.api.clear()


@both_databases
async def test_report_notifies_operators_privately_or_by_mention(tg):
    await two_admins_one_reachable(tg)
    bad = await say(tg, HOSTILE, "buy followers")
    await command(tg, MEMBER, "/report scam <link>", reply_to=bad)
    (private,) = tg.api.sent_texts(ADMIN["id"])
    assert "&lt;b&gt;x&lt;/b&gt; a_b*c" in private and "scam &lt;link&gt;" in private
    assert f'href="https://t.me/c/1000000001/{bad["message_id"]}"' in private
    ack = last_text(tg)
    assert 'href="tg://user?id=11">Bea</a>' in ack and "id=10" not in ack
    (entry,) = await log_entries(tg)
    assert (entry.action, entry.actor_id, entry.target_id) == (
        "report",
        MEMBER["id"],
        HOSTILE["id"],
    )
    assert entry.reason == "scam <link>"


async def test_reports_are_rate_limited_per_member(tg):
    await two_admins_one_reachable(tg)
    bad = await say(tg, HOSTILE, "spam")
    await command(tg, MEMBER, "/report", reply_to=bad)
    tg.clock.advance(seconds=30)
    await command(tg, MEMBER, "/report again", reply_to=bad)
    assert "again in 2 min" in last_text(tg)
    await command(tg, HOSTILE, "/report", reply_to=bad)  # someone else may report
    assert len(tg.api.sent_texts(ADMIN["id"])) == 2
    tg.clock.advance(minutes=2)
    await command(tg, MEMBER, "/report", reply_to=bad)
    assert len(tg.api.sent_texts(ADMIN["id"])) == 3


async def test_at_admin_reports_and_usage(tg):
    await two_admins_one_reachable(tg)
    call = await say(tg, MEMBER, "@admin someone is selling drugs")
    assert "selling drugs" in tg.api.sent_texts(ADMIN["id"])[0]
    assert str(call["message_id"]) in tg.api.sent_texts(ADMIN["id"])[0]
    await say(tg, MEMBER, "mail me at x@administration.org")  # not a call
    await command(tg, HOSTILE, "/report")
    assert "Reply to the message" in last_text(tg)
    assert len(tg.api.sent_texts(ADMIN["id"])) == 1


async def test_unreachable_operator_is_mentioned_instead(tg):
    await two_admins_one_reachable(tg)
    tg.api.fail("sendMessage", 403, "Forbidden: bot was blocked by the user")
    bad = await say(tg, HOSTILE, "spam")
    await command(tg, MEMBER, "/report", reply_to=bad)
    ack = last_text(tg)
    assert "id=10" in ack and "id=11" in ack


# --- /inactive --------------------------------------------------------------------------------

OLD = f.user(50, "Old <Timer>")
RECENT = f.user(51, "Recent")
LURKER = f.user(52, "Lurker")


async def roster_over_five_weeks(tg) -> None:
    """Bot admin since START; members last seen at different times; now START + 35 days."""
    await setup_group(tg)
    tg.clock.set(START + timedelta(hours=1))
    await say(tg, ADMIN, "welcome all")
    tg.clock.set(START + timedelta(hours=2))
    await tg.feed(f.chat_member(GROUP, LURKER, LURKER, "left", "member", date=tg.now()))
    tg.clock.set(START + timedelta(days=1))
    await say(tg, OLD, "hello")
    tg.clock.set(START + timedelta(days=30))
    await say(tg, RECENT, "still here")
    await tg.flush()
    tg.clock.set(START + timedelta(days=35))
    tg.api.clear()


@both_databases
async def test_inactive_lists_silent_members_with_dates(tg):
    await roster_over_five_weeks(tg)
    await command(tg, ADMIN, "/inactive 30d")
    text = last_text(tg)
    lines = text.split("\n")
    assert "(2)" in lines[0]
    assert "Lurker" in lines[1] and "since joining 2026-11-25" in lines[1]
    assert "Old &lt;Timer&gt;" in lines[2] and "last active 2026-11-26" in lines[2]
    assert "Recent" not in text and "Ada" not in text
    assert "reply_markup" not in tg.api.of("sendMessage")[-1].params


async def test_inactive_kick_after_an_operators_confirmation(tg):
    await roster_over_five_weeks(tg)
    await command(tg, ADMIN, "/inactive 30d kick")
    call = tg.api.of("sendMessage")[-1]
    yes, no = [b for row in call.params["reply_markup"]["inline_keyboard"] for b in row]
    assert "Remove 2 members" == yes["text"]
    prompt = bot_message(GROUP, 7001, tg.now(), call.params["text"])

    await tg.feed(f.callback(MEMBER, yes["callback_data"], message=prompt))
    assert "Only the group's operators" in tg.api.of("answerCallbackQuery")[-1].params["text"]
    elsewhere = bot_message(f.group(-1001000000009, "Elsewhere"), 7001, tg.now())
    await tg.feed(f.callback(ADMIN, yes["callback_data"], message=elsewhere))
    assert "expired" in tg.api.of("answerCallbackQuery")[-1].params["text"]
    assert not tg.api.of("banChatMember")

    await tg.feed(f.callback(ADMIN, yes["callback_data"], message=prompt))
    banned = [c.params["user_id"] for c in tg.api.of("banChatMember")]
    unbanned = [c.params["user_id"] for c in tg.api.of("unbanChatMember")]
    assert banned == unbanned == [LURKER["id"], OLD["id"]]
    assert "Removed 2 of 2" in tg.api.of("editMessageText")[-1].params["text"]
    entries = await log_entries(tg)
    assert [(e.action, e.target_id) for e in entries] == [
        ("kick", LURKER["id"]),
        ("kick", OLD["id"]),
    ]
    assert entries[0].reason == "inactive for 30 days"

    await tg.feed(f.callback(ADMIN, yes["callback_data"], message=prompt))  # pressed twice
    assert len(tg.api.of("banChatMember")) == 2
    async with tg.db() as session:
        purge = await session.get(InactivePurge, int(yes["callback_data"].split(":")[1]))
    assert (purge.state, purge.removed) == ("done", 2)
    await tg.feed(f.callback(ADMIN, no["callback_data"], message=prompt))
    assert "expired" in tg.api.of("answerCallbackQuery")[-1].params["text"]


async def test_inactive_confirmation_expires_and_can_be_cancelled(tg):
    await roster_over_five_weeks(tg)
    await command(tg, ADMIN, "/inactive 30d kick")
    call = tg.api.of("sendMessage")[-1]
    yes, _ = [b for row in call.params["reply_markup"]["inline_keyboard"] for b in row]
    prompt = bot_message(GROUP, 7002, tg.now())
    tg.clock.advance(minutes=11)
    await tg.feed(f.callback(ADMIN, yes["callback_data"], message=prompt))
    assert "expired" in tg.api.of("answerCallbackQuery")[-1].params["text"]
    await command(tg, ADMIN, "/inactive 30d kick")
    call = tg.api.of("sendMessage")[-1]
    _, no = [b for row in call.params["reply_markup"]["inline_keyboard"] for b in row]
    await tg.feed(f.callback(ADMIN, no["callback_data"], message=prompt))
    assert "nobody was removed" in tg.api.of("editMessageText")[-1].params["text"]
    assert not tg.api.of("banChatMember")


async def test_inactive_kick_refused_before_the_bot_saw_the_whole_period(tg):
    await setup_group(tg, bot_status="member")  # privacy mode: the bot sees commands only
    tg.clock.set(START + timedelta(days=1))
    await say(tg, OLD, "hello")
    await tg.flush()
    tg.clock.set(START + timedelta(days=35))
    await command(tg, ADMIN, "/inactive 30d kick")
    assert "can't see every message" in last_text(tg) and "won't remove" in last_text(tg)
    # Promoted to admin 20 days ago: it has seen everything since then, not for 30 days.
    tg.clock.set(START + timedelta(days=15))
    await tg.feed(f.my_chat_member(GROUP, ADMIN, "member", "administrator", date=tg.now()))
    tg.clock.set(START + timedelta(days=35))
    await command(tg, ADMIN, "/inactive 30d kick")
    text = last_text(tg)
    assert "Old &lt;Timer&gt;" in text
    assert "only seen every message here since 2026-12-10" in text and "won't remove" in text
    assert "reply_markup" not in tg.api.of("sendMessage")[-1].params
    await command(tg, ADMIN, "/inactive 15d kick")
    assert "reply_markup" in tg.api.of("sendMessage")[-1].params


async def test_inactive_bad_arguments_and_refusal(tg):
    await setup_group(tg)
    for text in ("/inactive", "/inactive 12h", "/inactive 30d dance", "/inactive soon"):
        await command(tg, ADMIN, text)
        assert "/inactive 30d" in last_text(tg), text
    await command(tg, MEMBER, "/inactive 30d")
    assert "operators" in last_text(tg)
