"""Word filters (English, Chinese, phrases, wildcards, captions, edits) and flood control."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.models import Member
from bot.moderation import FilterSet, FloodCounter, WordFilter, guard_cache, normalize_pattern
from tests import factories as f
from tests.conftest import START, both_databases
from tests.moderation_support import (
    ADMIN,
    CHANNEL,
    GROUP,
    MEMBER,
    NO_PERMISSIONS,
    command,
    last_text,
    log_entries,
    say,
    setup_group,
)

# --- matching (no Telegram) -------------------------------------------------------------------


def filters_of(*patterns: str) -> FilterSet:
    return FilterSet(
        WordFilter(chat_id=1, pattern=normalize_pattern(p), action="delete", created_at=START)
        for p in patterns
    )


@pytest.mark.parametrize(
    ("pattern", "text", "hit"),
    [
        ("spam", "This is SPAM!", True),
        ("spam", "spammer here", False),  # whole words for Latin letters
        ("spam", "ＳＰＡＭ", True),  # full-width letters fold to ASCII
        ("spam", "买spam吗", True),  # a CJK neighbour is a word boundary
        ("*spam*", "spammer here", True),
        ("spam*", "spammers", True),
        ("spam*", "antispam", False),
        ("free*money", "FREE easy money", True),
        ("buy now", "Buy   now, friends", True),
        ("buy now", "buynow", False),
        ("广告", "这是一条广告消息", True),  # no word boundaries in Chinese
        ("加微信", "请加微信领取", True),
        ("加微信", "加个微信", False),
        ("*代理*", "招聘代理商", True),
        ("ass", "first class", False),
        ("c++", "I like C++ a lot", True),
    ],
)
def test_filter_matching(pattern, text, hit):
    assert (filters_of(pattern).match(text) is not None) is hit


def test_strongest_action_wins_and_patterns_are_escaped():
    items = [
        WordFilter(chat_id=1, pattern="spam", action="delete", created_at=START),
        WordFilter(chat_id=1, pattern="scam", action="ban", created_at=START),
        WordFilter(chat_id=1, pattern="(a|b)", action="mute", created_at=START),
    ]
    found = FilterSet(items).match("spam and scam")
    assert found is not None and found.action == "ban" and found.pattern == "scam"
    assert FilterSet(items).match("a") is None
    assert FilterSet(items).match("(a|b)").action == "mute"


def test_patterns_that_are_empty_or_too_long_are_refused():
    assert normalize_pattern("***") is None
    assert normalize_pattern("  ") is None
    assert normalize_pattern("x" * 65) is None
    assert normalize_pattern("  Buy   NOW ") == "buy now"


def test_flood_window_edges():
    counter = FloodCounter()
    # 3 allowed within 10 s: the 4th message 10 s after the 1st is outside the window…
    assert [counter.hit(1, 1, t, limit=3, window=10) for t in (0, 1, 2, 10)] == [False] * 4
    # … one 9 s after the oldest of the last four is inside it.
    counter = FloodCounter()
    assert [counter.hit(1, 1, t, limit=3, window=10) for t in (0, 1, 2, 9)] == [
        False,
        False,
        False,
        True,
    ]
    # After firing, counting starts again; other members and chats are counted apart.
    assert counter.hit(1, 1, 9.5, limit=3, window=10) is False
    assert [counter.hit(1, 2, t, limit=3, window=10) for t in (0, 0, 0)] == [False] * 3
    assert counter.hit(2, 1, 9.6, limit=3, window=10) is False


# --- through the bot --------------------------------------------------------------------------


@both_databases
async def test_english_and_chinese_filters_delete_and_log(tg):
    await setup_group(tg)
    await command(tg, ADMIN, "/filter spam")
    assert "<code>spam</code> → delete" in last_text(tg)
    await command(tg, ADMIN, "/filter 广告")
    spam = await say(tg, MEMBER, "Cheap SPAM here")
    clean = await say(tg, MEMBER, "the spammer word is fine")
    ad = await say(tg, MEMBER, "这是一条广告消息")
    deleted = [c.params["message_id"] for c in tg.api.of("deleteMessage")]
    assert deleted == [spam["message_id"], ad["message_id"]]
    assert clean["message_id"] not in deleted
    entries = await log_entries(tg)
    assert [e.action for e in entries] == ["filter:delete", "filter:delete"]
    assert "广告" in entries[1].reason and entries[1].target_id == MEMBER["id"]
    assert len(tg.api.sent_texts(GROUP["id"])) == 2  # "delete" is silent: only the two replies


async def test_captions_and_edits_are_checked(tg):
    await setup_group(tg)
    await command(tg, ADMIN, "/filter 加微信")
    photo = [{"file_id": "p1", "file_unique_id": "u1", "width": 10, "height": 10}]
    captioned = await say(tg, MEMBER, None, photo=photo, caption="优惠请加微信 abc")
    original = await say(tg, MEMBER, "hello")
    await tg.feed(
        f.edited(
            GROUP,
            MEMBER,
            "hello 加微信",
            date=tg.now(),
            edit_date=tg.now() + timedelta(seconds=5),
            message_id=original["message_id"],
        )
    )
    deleted = [c.params["message_id"] for c in tg.api.of("deleteMessage")]
    assert deleted == [captioned["message_id"], original["message_id"]]


async def test_filtered_message_goes_no_further(tg):
    await setup_group(tg)
    await command(tg, ADMIN, "/filter *casino*")
    await say(tg, MEMBER, "/help onlinecasino")
    await say(tg, MEMBER, "hello")
    await tg.flush()
    async with tg.db() as session:
        member = await session.get(Member, (GROUP["id"], MEMBER["id"]))
    assert member.message_count == 1  # the filtered message was not counted
    assert all("Everyone" not in text for text in tg.api.sent_texts(GROUP["id"]))


async def test_filter_actions_warn_mute_ban(tg):
    await setup_group(tg)
    await command(tg, ADMIN, '/filter "buy now" ban')
    await command(tg, ADMIN, "/filter crypto mute")
    await command(tg, ADMIN, "/filter idiot warn")
    assert "delete and warn" in last_text(tg)
    await say(tg, MEMBER, "you IDIOT")
    assert "(1/3)" in last_text(tg) and "banned word" in last_text(tg)
    await say(tg, MEMBER, "crypto pump")
    mute = tg.api.of("restrictChatMember")[-1].params
    assert mute["permissions"] == NO_PERMISSIONS
    assert mute["until_date"] == int((tg.now() + timedelta(hours=1)).timestamp())
    await say(tg, MEMBER, "Buy\nnow!")
    assert tg.api.of("banChatMember")[-1].params["user_id"] == MEMBER["id"]
    assert "until_date" not in tg.api.of("banChatMember")[-1].params
    actions = [e.action for e in await log_entries(tg)]
    assert actions == ["filter:warn", "filter:mute", "filter:ban"]
    assert len(tg.api.of("deleteMessage")) == 3


async def test_filter_mute_with_duration_and_channel_senders(tg):
    await setup_group(tg)
    await command(tg, ADMIN, "/filter crypto mute 2h")
    assert "mute for 2h" in last_text(tg)
    await command(tg, ADMIN, "/filter scam ban")
    await say(tg, f.SERVICE_CHANNEL_BOT, "crypto", sender_chat=CHANNEL)
    assert not tg.api.of("restrictChatMember")  # a channel can't be muted: deleted only
    await say(tg, f.SERVICE_CHANNEL_BOT, "scam", sender_chat=CHANNEL)
    assert tg.api.of("banChatSenderChat")[0].params["sender_chat_id"] == CHANNEL["id"]
    assert len(tg.api.of("deleteMessage")) == 2


async def test_operators_anonymous_admins_and_linked_channel_are_exempt(tg):
    await setup_group(tg)
    await command(tg, ADMIN, "/filter spam")
    await say(tg, ADMIN, "spam is bad, don't spam")
    await say(tg, f.ANONYMOUS_ADMIN, "spam", sender_chat=GROUP)
    await say(tg, f.TELEGRAM_SERVICE, "spam", is_automatic_forward=True)
    assert not tg.api.of("deleteMessage")


async def test_filter_commands(tg):
    await setup_group(tg)
    await command(tg, ADMIN, "/filter")
    assert "/filter spam" in last_text(tg)
    await command(tg, ADMIN, "/filter ***")
    assert "empty" in last_text(tg)
    await command(tg, ADMIN, "/filter spam mute 10s")
    assert "<code>10s</code>" in last_text(tg)
    await command(tg, ADMIN, "/filter <b>Bad</b>")
    await command(tg, ADMIN, "/filter 广告 ban")
    await command(tg, MEMBER, "/filters")
    text = last_text(tg)
    assert "&lt;b&gt;bad&lt;/b&gt;" in text and "广告</code> → ban" in text
    await command(tg, MEMBER, "/filter spam")
    assert "operators" in last_text(tg)
    await command(tg, ADMIN, "/unfilter 广告")
    assert "removed" in last_text(tg)
    await say(tg, MEMBER, "广告")
    assert not tg.api.of("deleteMessage")
    await command(tg, ADMIN, "/unfilter nothing")
    assert "no filter" in last_text(tg)


async def test_filter_without_delete_right_says_so(tg):
    await setup_group(tg, bot_status="member")
    await command(tg, ADMIN, "/filter spam ban")
    text = last_text(tg)
    assert "Delete messages" in text and "Ban and restrict members" in text


# --- flood ----------------------------------------------------------------------------------


@both_databases
async def test_flood_mutes_for_ten_minutes_by_default(tg):
    await setup_group(tg)
    await command(tg, ADMIN, "/setflood 3")
    assert "more than 3 messages within 10 s" in last_text(tg) and "10m" in last_text(tg)
    base = tg.now()
    # Four messages spread over exactly 10 s: never more than 3 inside one window.
    for second in (0, 1, 2, 10):
        tg.clock.set(base + timedelta(seconds=second))
        await say(tg, MEMBER, "msg")
    assert not tg.api.of("restrictChatMember")
    tg.clock.set(base + timedelta(seconds=19))
    await say(tg, MEMBER, "msg")  # the last four: 1, 2, 10, 19 — 18 s apart
    await say(tg, MEMBER, "msg")  # 2, 10, 19, 19 — 17 s apart
    assert not tg.api.of("restrictChatMember")
    await say(tg, MEMBER, "msg")  # 10, 19, 19, 19 — four within 9 s: flooding
    (call,) = tg.api.of("restrictChatMember")
    assert call.params["permissions"] == NO_PERMISSIONS
    assert call.params["until_date"] == int((tg.now() + timedelta(minutes=10)).timestamp())
    assert "too many messages" in last_text(tg)
    (entry,) = await log_entries(tg)
    assert entry.action == "flood:mute" and entry.duration == 600


async def test_flood_operators_exempt_and_custom_action(tg):
    await setup_group(tg)
    await command(tg, ADMIN, "/setflood 2 5 ban 1d")
    assert "more than 2 messages within 5 s" in last_text(tg) and "ban for 1d" in last_text(tg)
    for _ in range(5):
        await say(tg, ADMIN, "announcement")
    assert not tg.api.of("banChatMember")
    for _ in range(3):
        await say(tg, MEMBER, "x")
    (ban,) = tg.api.of("banChatMember")
    assert ban.params["until_date"] == int((tg.now() + timedelta(days=1)).timestamp())


async def test_setflood_bad_input_and_off(tg):
    await setup_group(tg)
    for text in ("/setflood 1", "/setflood 500", "/setflood 5 1000", "/setflood 5 10 dance"):
        await command(tg, ADMIN, text)
        assert "/setflood 5 10 mute 10m" in last_text(tg), text
    await command(tg, ADMIN, "/setflood 5 10 mute 10s")
    assert "<code>10s</code>" in last_text(tg)
    await command(tg, ADMIN, "/setflood 2")
    await command(tg, ADMIN, "/setflood off")
    for _ in range(5):
        await say(tg, MEMBER, "x")
    assert not tg.api.of("restrictChatMember")


async def test_chats_without_guards_cost_a_set_lookup(tg):
    await setup_group(tg)
    other = f.group(-1001000000002, "Quiet")
    await setup_group(tg, chat=other)
    await command(tg, ADMIN, "/filter spam")
    await say(tg, MEMBER, "warm up the cache")
    cache = guard_cache(tg.services)
    assert cache.unguarded(other["id"]) and not cache.unguarded(GROUP["id"])
    await say(tg, MEMBER, "spam", chat=other)
    assert not tg.api.of("deleteMessage")


async def test_filters_follow_the_group_into_its_supergroup(tg):
    basic = f.group(-4000000001, "Basic", type="group")
    supergroup = f.group(-1004000000001, "Basic", type="supergroup")
    await setup_group(tg, chat=basic)
    await say(tg, ADMIN, "/filter spam", chat=basic)
    await say(tg, MEMBER, "warm the cache", chat=basic)
    migrate = f.message(basic, ADMIN, None, date=tg.now(), migrate_to_chat_id=supergroup["id"])
    await tg.feed(migrate)
    tg.api.set_admins(supergroup["id"], ADMIN)
    await say(tg, MEMBER, "spam again", chat=supergroup)
    (deleted,) = tg.api.of("deleteMessage")
    assert deleted.params["chat_id"] == supergroup["id"]
