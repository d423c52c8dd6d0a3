"""The calendar from the chat: /schedule (text and copies), /calendar, /postnow, /skip,
/pause, /resume, and approvals with their buttons."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot import calendar as cal
from schedules import calendar as publishing
from tests import factories as f
from tests.calendar_support import (
    ADMIN,
    GROUP,
    MEMBER,
    NEWS,
    OWNER,
    advance,
    deliveries,
    join,
    run_due,
    sends,
    start,
    write_calendar,
)


@pytest.fixture
def settings(settings, tmp_path):
    return settings.model_copy(update={"content_dir": str(tmp_path / "content")})


G, N = GROUP["id"], NEWS["id"]


async def say(tg, text, chat=GROUP, sender=ADMIN, **extra):
    await tg.feed(f.message(chat, sender, text, date=tg.now(), **extra))
    return tg.api.sent_texts(chat["id"])[-1]


async def test_schedule_text_keeps_formatting_and_posts_once_at_the_time(tg):
    await join(tg, GROUP)
    await tg.services.chats.update_settings(G, timezone="Asia/Shanghai")
    entities = [
        {"type": "bot_command", "offset": 0, "length": 9},
        {"type": "bold", "offset": 16, "length": 5},
    ]
    answer = await say(tg, "/schedule 21:30 Hello <world> & all", entities=entities)
    (row,) = await deliveries(tg)
    assert row.due_at == datetime(2026, 11, 25, 13, 30, tzinfo=UTC)  # 21:30 in Shanghai
    assert f"<code>{row.id}</code>" in answer and "2026-11-25 21:30" in answer
    await advance(tg, hours=1, minutes=29)
    assert len(sends(tg, G)) == 1  # only the confirmation so far
    await advance(tg, minutes=1)
    await advance(tg, hours=5)
    posted = [p["text"] for m, p in sends(tg, G)][1:]
    assert posted == ["<b>Hello</b> &lt;world&gt; &amp; all"]


async def test_replying_schedule_copies_that_message_at_the_time(tg):
    await join(tg, GROUP)
    original = f.message_dict(GROUP, MEMBER, "A great answer", date=tg.now())
    await say(tg, "/schedule in 2h", reply_to_message=original)
    await advance(tg, hours=2)
    (call,) = tg.api.of("copyMessage")
    assert call.params == {
        "chat_id": G,
        "from_chat_id": G,
        "message_id": original["message_id"],
        "disable_notification": False,
    }
    (row,) = await deliveries(tg)
    assert row.state == cal.SENT and row.message_id


async def test_schedule_from_a_private_chat_for_a_connected_group(tg):
    await join(tg, GROUP)
    chat = f.private(ADMIN)
    await tg.feed(f.message(chat, ADMIN, "/start", date=tg.now()))
    await tg.feed(f.callback(ADMIN, f"groups:{G}", chat=chat, date=tg.now()))
    source = f.message_dict(chat, ADMIN, "<prepared post>", date=tg.now())
    await tg.feed(
        f.message(
            chat, ADMIN, "/schedule 2026-11-26 08:00", date=tg.now(), reply_to_message=source
        )
    )
    await advance(tg, hours=20)
    (call,) = tg.api.of("copyMessage")
    assert (call.params["chat_id"], call.params["from_chat_id"]) == (G, ADMIN["id"])


async def test_schedule_explains_bad_input_and_members_are_refused(tg):
    await join(tg, GROUP)
    assert "/schedule 20:00" in await say(tg, "/schedule soon hello")
    assert "/schedule 20:00" in await say(tg, "/schedule 20:00")  # no text, no reply
    assert "already passed" in await say(tg, "/schedule 2026-11-01 10:00 late")
    assert "operators" in await say(tg, "/schedule 20:00 hi", sender=MEMBER)
    assert await deliveries(tg) == []


CALENDAR = f"""
timezone: UTC
targets: {{main: {G}}}
posts:
  - {{id: tip, to: main, cron: "0 13 * * *", text: Tip}}
  - {{id: weekly, to: main, cron: "0 9 * * MON", text: Weekly}}
"""


async def test_calendar_lists_upcoming_with_ids_and_postnow_counts_as_that_occurrence(tg):
    await join(tg, GROUP)
    write_calendar(tg, CALENDAR)
    await start(tg)
    listing = await say(tg, "/calendar")
    rows = await deliveries(tg, state=cal.PENDING)
    first = rows[0]
    assert f"<code>{first.id}</code> · 2026-11-25 13:00 · tip — Tip" in listing
    assert "/postnow ID" in listing
    answer = await say(tg, f"/postnow {first.id}")
    assert answer == f"Posted <code>{first.id}</code>."
    await advance(tg, hours=2)  # its time comes: not sent again
    assert [p["text"] for _, p in sends(tg) if p["text"] in ("Tip", "Weekly")] == ["Tip"]
    # /postnow by post id: its next occurrence, even beyond the planned horizon.
    answer = await say(tg, "/postnow weekly")
    assert answer.startswith("Posted")
    (weekly,) = [r for r in await deliveries(tg, state=cal.SENT) if r.due_at.weekday() == 0]
    assert weekly.due_at == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert "no planned post" in await say(tg, "/postnow nothing-like-this")
    assert "Example" in await say(tg, "/postnow")


async def test_skip_and_pause_resume(tg):
    await join(tg, GROUP)
    write_calendar(tg, CALENDAR)
    await start(tg)
    answer = await say(tg, "/skip tip")
    today, tomorrow = (await deliveries(tg))[:2]
    assert f"Skipped <code>{today.id}</code>" in answer and today.state == cal.SKIPPED
    assert "no planned post" in await say(tg, f"/skip {today.id}")  # already skipped
    assert "paused" in await say(tg, "/pause")
    assert "paused here" in await say(tg, "/calendar")
    tg.api.clear()
    await advance(tg, days=1, hours=2)
    assert sends(tg) == []
    assert (await deliveries(tg, id=tomorrow.id))[0].state == cal.SKIPPED
    assert "back on" in await say(tg, "/resume")
    tg.api.clear()
    await advance(tg, days=1)
    assert [p["text"] for _, p in sends(tg)] == ["Tip"]


async def test_other_groups_deliveries_are_out_of_reach(tg):
    await join(tg, GROUP, NEWS)
    tg.api.set_admins(N, ADMIN)
    write_calendar(tg, CALENDAR)
    await start(tg)
    (row, *_) = await deliveries(tg)
    assert "no planned post" in await say(tg, f"/postnow {row.id}", chat=NEWS)
    assert "no planned post" in await say(tg, f"/skip {row.id}", chat=NEWS)
    assert (await deliveries(tg, id=row.id))[0].state == cal.PENDING


# --- approval ------------------------------------------------------------------------------------

APPROVAL = f"""
timezone: UTC
targets: {{main: {G}, news: {N}}}
approval: required
posts:
  - {{id: launch, to: [main, news], at: "2026-11-26 20:00", text: "<b>Launch</b> day"}}
  - {{id: free, to: main, at: "2026-11-26 20:00", text: Free, approval: none}}
"""


async def started_privately(tg, *people):
    for person in people:
        await tg.feed(f.message(f.private(person), person, "/start", date=tg.now()))
    tg.api.clear()


async def test_previews_go_to_operators_who_started_the_bot_and_approval_lets_it_out(tg):
    await join(tg, GROUP, NEWS)
    await started_privately(tg, ADMIN, MEMBER)  # Max started the bot but is no operator
    write_calendar(tg, APPROVAL)
    await start(tg)
    assert tg.api.sent_texts(ADMIN["id"]) == []
    await advance(tg, hours=19, minutes=59)  # 07:59 next day: 12 h ahead is 08:00
    assert tg.api.sent_texts(ADMIN["id"]) == []
    await advance(tg, minutes=1)
    post, control = tg.api.sent_texts(ADMIN["id"])
    assert post == "<b>Launch</b> day"  # the post itself, as it will look
    assert "launch" in control and "Main Group, Newcomers" in control
    assert tg.api.sent_texts(MEMBER["id"]) == [] and tg.api.sent_texts(OWNER["id"]) == []
    buttons = tg.api.of("sendMessage")[-1].params["reply_markup"]["inline_keyboard"]
    approve = buttons[0][0]["callback_data"]
    assert approve.startswith("cal:ok:")
    # A member pressing a forwarded button is refused; the operator's press counts.
    await tg.feed(f.callback(MEMBER, approve, chat=f.private(MEMBER), date=tg.now()))
    assert tg.api.of("answerCallbackQuery")[-1].params["show_alert"] is True
    message = f.message_dict(f.private(ADMIN), f.BOT_USER, control, date=tg.now())
    await tg.feed(f.callback(ADMIN, approve, message=message))
    edited = tg.api.of("editMessageText")[-1].params
    assert "Approved by Ada" in edited["text"]
    await advance(tg, hours=12)
    texts = [(p["chat_id"], p["text"]) for _, p in sends(tg) if p["chat_id"] < 0]
    assert sorted(texts) == sorted(
        [(G, "<b>Launch</b> day"), (N, "<b>Launch</b> day"), (G, "Free")]
    )
    async with tg.db() as session:
        (approval,) = (await session.execute(cal.select(cal.CalendarApproval))).scalars().all()
    assert (approval.state, approval.decided_by) == ("approved", ADMIN["id"])
    assert approval.decided_at == datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


async def test_unapproved_posts_are_held_and_reported(tg):
    await join(tg, GROUP, NEWS)
    await started_privately(tg, ADMIN)
    write_calendar(tg, APPROVAL)
    await start(tg)
    await advance(tg, hours=20)
    later = tg.api.of("sendMessage")[-1].params["reply_markup"]["inline_keyboard"][1][0]
    await tg.feed(f.callback(ADMIN, later["callback_data"], chat=f.private(ADMIN), date=tg.now()))
    tg.api.clear()
    await advance(tg, hours=12)
    assert [p["text"] for _, p in sends(tg) if p["chat_id"] < 0] == ["Free"]
    held = [r for r in await deliveries(tg) if r.state == cal.HELD]
    assert {r.chat_id for r in held} == {G, N}
    (report,) = tg.api.sent_texts(ADMIN["id"])
    assert "Held" in report and "launch" in report
    assert all(str(r.id) in report for r in held)
    # /postnow in the group sends a held one by hand.
    await say(tg, f"/postnow {held[0].id}", chat=GROUP if held[0].chat_id == G else NEWS)
    assert (await deliveries(tg, id=held[0].id))[0].state == cal.SENT


async def test_reject_skips_and_an_edit_needs_a_new_approval(tg):
    await join(tg, GROUP, NEWS)
    write_calendar(
        tg,
        APPROVAL.replace(
            "approval: required", f"approval: required\nreview: {{chat: {N}, ahead: 2h}}"
        ),
    )
    await start(tg)
    await advance(tg, hours=30)  # 18:00 next day: the preview goes to the review chat
    control = tg.api.sent_texts(N)[-1]
    assert "Needs approval" in control
    buttons = tg.api.of("sendMessage")[-1].params["reply_markup"]["inline_keyboard"]
    reject, approve = buttons[0][1]["callback_data"], buttons[0][0]["callback_data"]
    await tg.feed(f.callback(ADMIN, reject, chat=NEWS, date=tg.now()))
    assert {r.state for r in await deliveries(tg, post_id=1)} == {cal.SKIPPED}
    # A second press on the same preview: out of date.
    await tg.feed(f.callback(ADMIN, approve, chat=NEWS, date=tg.now()))
    assert "out of date" in tg.api.of("answerCallbackQuery")[-1].params["text"]
    # The operator edits the post: a new preview, the old buttons are void.
    write_calendar(
        tg,
        APPROVAL.replace(
            "approval: required", f"approval: required\nreview: {{chat: {N}, ahead: 2h}}"
        ).replace("Launch</b> day", "Launch</b> day, take two"),
    )
    tg.api.clear()
    await advance(tg, minutes=1)
    assert {r.state for r in await deliveries(tg, post_id=1)} == {cal.PENDING}
    fresh = tg.api.of("sendMessage")[-1].params["reply_markup"]["inline_keyboard"][0][0]
    assert fresh["callback_data"] != approve
    await tg.feed(f.callback(ADMIN, approve, chat=NEWS, date=tg.now()))  # old button
    assert "out of date" in tg.api.of("answerCallbackQuery")[-1].params["text"]
    await tg.feed(f.callback(ADMIN, fresh["callback_data"], chat=NEWS, date=tg.now()))
    tg.api.clear()
    await advance(tg, hours=2)
    texts = sorted(p["text"] for _, p in sends(tg) if p["chat_id"] in (G, N))
    assert texts == ["<b>Launch</b> day, take two", "<b>Launch</b> day, take two", "Free"]


async def test_previews_survive_a_restart_and_go_out_once(tg, settings, database_url):
    from tests.calendar_support import another_bot

    await join(tg, GROUP)
    await started_privately(tg, ADMIN)
    write_calendar(tg, APPROVAL)
    await start(tg)
    tg.clock.set(datetime(2026, 11, 26, 9, 0, tzinfo=UTC))  # down past the preview time
    async with another_bot(settings, database_url, tg.clock) as bot2:
        bot2.api.set_admins(G, ADMIN)
        await publishing.on_startup(bot2.app)
        await run_due(bot2)
        await run_due(tg)  # the old process's job too: the preview is claimed once
        assert len(bot2.api.sent_texts(ADMIN["id"])) + len(tg.api.sent_texts(ADMIN["id"])) == 2
