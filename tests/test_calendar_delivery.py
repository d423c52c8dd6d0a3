"""Publishing the calendar through the real Application: on time, exactly once, and what
happens on reload, restart, failures, pins and deletions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from telegram.error import TimedOut

from bot import calendar as cal
from bot.calendar_file import load_calendar, preview
from bot.models import Chat
from schedules import calendar as publishing
from tests import factories as f
from tests.calendar_support import (
    ADMIN,
    GROUP,
    NEWS,
    advance,
    content_dir,
    deliveries,
    jobs,
    join,
    post_id,
    run_due,
    sends,
    start,
    write_calendar,
)


@pytest.fixture
def settings(settings, tmp_path):
    return settings.model_copy(update={"content_dir": str(tmp_path / "content")})


G, N = GROUP["id"], NEWS["id"]
DAILY = f"""
timezone: Asia/Shanghai
targets: {{main: {G}, news: {N}}}
posts:
  - id: tip
    to: [main]
    cron: "0 21 * * *"
    text: "<b>Tip</b> of the day"
"""


async def test_preview_matches_what_is_then_sent(tg):
    await join(tg, GROUP, NEWS)
    (content_dir(tg) / "media").mkdir(parents=True)
    (content_dir(tg) / "media" / "hello.png").write_bytes(b"\x89PNG fake but non-empty")
    write_calendar(
        tg,
        f"""
        timezone: Asia/Shanghai
        targets: {{main: {G}, news: {N}}}
        posts:
          - id: tip
            to: [main, news]
            cron: "0 21 * * *"
            text: "<b>Tip</b> of the day"
          - id: welcome
            to: news
            every: 1d at 22:30
            photo: media/hello.png
            caption: "<i>Welcome</i>"
            buttons:
              - {{text: Rules, url: "https://example.com/rules"}}
          - id: guide
            to: main
            at: 2026-11-26 09:15
            document: https://example.com/guide.pdf
          - id: demo
            to: main
            at: 2026-11-26 10:00
            video: https://example.com/demo.mp4
            caption: Demo
          - id: repost
            to: main
            at: 2026-11-26 11:00
            copy: {{from: news, message_id: 7}}
        """,
    )
    now = tg.now()
    planned = preview(load_calendar(content_dir(tg)), now, now + timedelta(hours=40))
    assert len(planned) == 9
    await start(tg)
    method = {"text": "sendMessage", "photo": "sendPhoto", "document": "sendDocument"}
    method |= {"video": "sendVideo", "copy": "copyMessage"}
    for moment in sorted({m for m, _, _ in planned}):
        tg.api.clear()
        tg.clock.set(moment - timedelta(seconds=1))
        await run_due(tg)
        assert sends(tg) == []  # nothing early
        tg.clock.set(moment)
        await publishing.sweep(tg.app)
        await run_due(tg)
        expected = [(method[s.kind], c) for m, s, c in planned if m == moment]
        assert sorted((m, p["chat_id"]) for m, p in sends(tg)) == sorted(expected)
    rows = await deliveries(tg, state=cal.SENT)
    expected_rows = sorted((m, c) for m, _, c in planned)
    assert sorted((r.due_at, r.chat_id) for r in rows) == expected_rows
    assert all(r.sent_at == r.due_at and r.message_id for r in rows)
    later = await deliveries(tg, state=cal.PENDING)
    assert later and all(r.due_at >= now + timedelta(hours=40) for r in later)


async def test_media_copy_and_buttons_are_sent_as_written(tg):
    await join(tg, GROUP, NEWS)
    (content_dir(tg) / "media").mkdir(parents=True)
    (content_dir(tg) / "media" / "hello.png").write_bytes(b"\x89PNG fake")
    write_calendar(
        tg,
        f"""
        targets: {{main: {G}, news: {N}}}
        posts:
          - id: pic
            to: main
            at: 2026-11-25 12:30
            photo: media/hello.png
            caption: "<b>Hi</b>"
            silent: true
            buttons:
              - [{{text: A, url: "https://a.example"}}, {{text: B, url: "https://b.example"}}]
              - {{text: C, url: "tg://resolve?domain=x"}}
          - id: again
            to: main
            at: 2026-11-25 12:30
            copy: {{from: news, message_id: 7}}
            caption: New caption
        """,
    )
    await start(tg)
    await advance(tg, minutes=30)
    (photo_method, photo), (copy_method, copy) = sends(tg)
    assert photo_method == "sendPhoto" and photo["photo"] == "upload://hello.png"
    assert photo["caption"] == "<b>Hi</b>" and photo["parse_mode"] == "HTML"
    assert photo["disable_notification"] is True
    keyboard = photo["reply_markup"]["inline_keyboard"]
    assert [[b["text"] for b in row] for row in keyboard] == [["A", "B"], ["C"]]
    assert copy_method == "copyMessage"
    assert (copy["from_chat_id"], copy["message_id"], copy["chat_id"]) == (N, 7, G)
    assert copy["caption"] == "New caption"


async def test_reload_adds_reschedules_and_cancels_without_duplicates(tg):
    await join(tg, GROUP, NEWS)
    write_calendar(
        tg,
        f"""
        timezone: UTC
        targets: {{main: {G}, news: {N}}}
        posts:
          - {{id: daily, to: main, cron: "0 13 * * *", text: Daily}}
          - {{id: once, to: main, at: "2026-11-26 08:00", text: Once}}
          - {{id: both, to: [main, news], cron: "30 12 * * *", text: Both}}
        """,
    )
    await start(tg)
    await advance(tg, hours=1, minutes=5)  # 13:05: today's 12:30 and 13:00 have gone out
    assert sorted(p["text"] for _, p in sends(tg)) == ["Both", "Both", "Daily"]
    write_calendar(
        tg,
        f"""
        timezone: UTC
        targets: {{main: {G}, news: {N}}}
        posts:
          - {{id: daily, to: main, cron: "0 14 * * *", text: Daily changed}}
          - {{id: both, to: [main], cron: "30 12 * * *", text: Both}}
          - {{id: new, to: news, at: "2026-11-25 20:00", text: New}}
        """,
    )
    tg.api.clear()
    await tg.feed(f.message(GROUP, ADMIN, "/calendar reload", date=tg.now()))
    reply = tg.api.sent_texts(G)[-1]
    assert "New: 1, changed: 2, removed: 1" in reply
    daily, once, both, new = [await post_id(tg, k) for k in ("daily", "once", "both", "new")]
    states = {
        (r.post_id, r.chat_id, r.due_at.hour, r.due_at.day): r.state for r in await deliveries(tg)
    }
    assert states[(daily, G, 13, 25)] == cal.SENT  # already sent: untouched
    assert (
        states[(daily, G, 13, 26)] == cal.CANCELLED and states[(daily, G, 14, 26)] == cal.PENDING
    )
    assert states[(daily, G, 14, 25)] == cal.PENDING  # today's new time is still ahead
    assert states[(once, G, 8, 26)] == cal.CANCELLED
    assert states[(both, N, 12, 26)] == cal.CANCELLED and states[(both, G, 12, 26)] == cal.PENDING
    assert states[(both, N, 12, 25)] == cal.SENT
    assert states[(new, N, 20, 25)] == cal.PENDING
    # Reloading the same files again changes nothing; then two days run: no duplicates.
    await tg.feed(f.message(GROUP, ADMIN, "/calendar reload", date=tg.now()))
    assert "New: 0, changed: 0, removed: 0" in tg.api.sent_texts(G)[-1]
    tg.api.clear()
    for _ in range(48):
        await advance(tg, hours=1)
    texts = [(p["chat_id"], p["text"]) for _, p in sends(tg)]
    assert texts.count((G, "Daily changed")) == 2 and (G, "Daily") not in texts
    assert texts.count((G, "Both")) == 2 and (N, "Both") not in texts
    assert texts.count((N, "New")) == 1 and (G, "Once") not in texts
    rows = await deliveries(tg)
    keys = [(r.post_id, r.chat_id, r.due_at) for r in rows]
    assert len(keys) == len(set(keys))


async def test_a_calendar_with_errors_changes_nothing(tg):
    await join(tg, GROUP)
    write_calendar(tg, DAILY)
    await start(tg)
    before = [(r.id, r.state) for r in await deliveries(tg)]
    write_calendar(tg, DAILY.replace('"0 21 * * *"', '"0 25 * * *"'))
    await tg.feed(f.message(GROUP, ADMIN, "/calendar reload", date=tg.now()))
    reply = tg.api.sent_texts(G)[-1]
    assert "1 error(s)" in reply and "calendar.yaml:6" in reply and "0 25 * * *" in reply
    assert [(r.id, r.state) for r in await deliveries(tg)] == before


async def test_a_missing_folder_cancels_nothing(tg):
    import shutil

    await join(tg, GROUP)
    write_calendar(tg, DAILY)
    await start(tg)
    shutil.rmtree(content_dir(tg))
    await tg.feed(f.message(GROUP, ADMIN, "/calendar reload", date=tg.now()))
    assert "no such directory" in tg.api.sent_texts(G)[-1]
    tg.api.clear()
    await advance(tg, hours=1)
    assert [p["text"] for _, p in sends(tg)] == ["<b>Tip</b> of the day"]


async def test_file_changes_are_picked_up_by_the_sweep(tg):
    await join(tg, GROUP)
    write_calendar(tg, DAILY)
    await start(tg)
    write_calendar(tg, DAILY + '  - {id: extra, to: main, at: "2026-11-25 21:30", text: Extra}\n')
    for _ in range(24):  # the sweep runs every minute; here every five
        await advance(tg, minutes=5)  # 21:30 in Shanghai is 13:30 UTC
    assert [p["text"] for _, p in sends(tg)] == ["<b>Tip</b> of the day", "Extra"]


async def test_restart_sends_late_within_grace_and_records_missed_beyond(
    tg, settings, database_url
):
    from tests.calendar_support import another_bot

    await join(tg, GROUP)
    write_calendar(
        tg,
        f"""
        targets: {{main: {G}}}
        posts:
          - {{id: soon, to: main, at: "2026-11-25 13:00", text: Soon}}
          - {{id: short, to: main, at: "2026-11-25 13:00", text: Short grace, grace: 10m}}
          - {{id: later, to: main, at: "2026-11-25 16:00", text: Later}}
          - {{id: hourly, to: main, cron: "0 * * * *", text: Hourly}}
        """,
    )
    await start(tg)
    await advance(tg, minutes=30)  # 12:30: only the 12:00 hourly one was due
    assert [p["text"] for _, p in sends(tg)] == ["Hourly"]
    # The bot stops here. It comes back at 13:40 (another process, same database).
    tg.clock.set(datetime(2026, 11, 25, 13, 40, tzinfo=UTC))
    async with another_bot(settings, database_url, tg.clock) as bot2:
        await publishing.on_startup(bot2.app)
        await run_due(bot2)
        texts = [p["text"] for _, p in sends(bot2)]
        assert sorted(texts) == ["Hourly", "Soon"]  # 40 min late: within 1 h; 10 min: not
        short = await deliveries(tg, post_id=await post_id(tg, "short"))
        assert short[0].state == cal.MISSED and "grace" in short[0].error
        tg.clock.set(datetime(2026, 11, 25, 14, 5, tzinfo=UTC))
        await run_due(bot2)  # 14:00 goes out; then it stops again
    # Down from 14:05 to 16:45: 15:00 is missed (beyond an hour), 16:00 is sent late.
    tg.clock.set(datetime(2026, 11, 25, 16, 45, tzinfo=UTC))
    async with another_bot(settings, database_url, tg.clock) as bot3:
        await publishing.on_startup(bot3.app)
        await run_due(bot3)
        assert sorted(p["text"] for _, p in sends(bot3)) == ["Hourly", "Later"]
    hourly = await deliveries(tg, post_id=await post_id(tg, "hourly"))
    states = {r.due_at.hour: r.state for r in hourly if r.due_at.day == 25}
    assert states[12] == states[13] == states[14] == states[16] == cal.SENT
    assert states[15] == cal.MISSED and states[17] == cal.PENDING
    assert len(tg.api.of("sendMessage")) == 1  # the first process sent only the 12:00 one


async def test_long_downtime_records_occurrences_never_planned_as_missed(
    tg, settings, database_url
):
    from tests.calendar_support import another_bot

    await join(tg, GROUP)
    write_calendar(tg, DAILY)  # 21:00 Shanghai = 13:00 UTC daily; planned 48 h ahead
    await start(tg)
    tg.clock.set(datetime(2026, 11, 29, 13, 30, tzinfo=UTC))  # down for four days
    async with another_bot(settings, database_url, tg.clock) as bot2:
        await publishing.on_startup(bot2.app)
        await run_due(bot2)
        assert [p["text"] for _, p in sends(bot2)] == ["<b>Tip</b> of the day"]  # today's, late
    states = {r.due_at.day: r.state for r in await deliveries(tg)}
    assert states[25] == states[26] == states[27] == states[28] == cal.MISSED
    assert states[29] == cal.SENT and states[30] == cal.PENDING


async def test_dst_change_in_the_chat_zone(tg):
    tg.clock.set(datetime(2026, 10, 23, 12, 0, tzinfo=UTC))
    await join(tg, GROUP)
    write_calendar(
        tg,
        f"""
        timezone: Europe/Berlin
        targets: {{main: {G}}}
        posts:
          - {{id: morning, to: main, cron: "0 9 * * *", text: Morgen}}
        """,
    )
    await start(tg)
    for _ in range(4 * 24):
        await advance(tg, hours=1)
    sent = [(r.due_at.day, r.due_at.hour) for r in await deliveries(tg, state=cal.SENT)]
    assert sent == [(24, 7), (25, 8), (26, 8), (27, 8)]  # 09:00 CEST, then 09:00 CET
    assert len(sends(tg)) == 4


# --- failures ------------------------------------------------------------------------------------

ONE = f"""
targets: {{main: {G}, news: {N}}}
posts:
  - {{id: one, to: main, at: "2026-11-25 12:10", text: One}}
  - {{id: two, to: main, at: "2026-11-25 18:00", text: Two}}
"""


async def test_retry_after_and_server_errors_are_retried_with_backoff(tg):
    await join(tg, GROUP)
    write_calendar(tg, ONE)
    await start(tg)
    tg.api.fail("sendMessage", 429, "Too Many Requests: retry after 20", retry_after=20)
    tg.api.fail("sendMessage", 502, "Bad Gateway")
    await advance(tg, minutes=10)
    (row,) = await deliveries(tg, post_id=await post_id(tg, "one"))
    assert row.state == cal.PENDING and row.attempts == 1 and "retry after" in row.error
    assert row.next_attempt_at == tg.now() + timedelta(seconds=21)
    tg.clock.advance(seconds=21)
    await run_due(tg)  # 502: back off 60 s (attempt 2)
    (row,) = await deliveries(tg, post_id=row.post_id)
    assert row.state == cal.PENDING and row.attempts == 2 and "Bad Gateway" in row.error
    tg.clock.advance(seconds=59)
    await run_due(tg)
    assert len(tg.api.of("sendMessage")) == 2
    tg.clock.advance(seconds=1)
    await run_due(tg)
    (row,) = await deliveries(tg, post_id=row.post_id)
    assert row.state == cal.SENT and row.attempts == 3 and row.error is None
    assert len(tg.api.of("sendMessage")) == 3


async def test_persistent_errors_end_as_failed_with_the_error(tg):
    await join(tg, GROUP)
    write_calendar(tg, ONE)
    await start(tg)
    for _ in range(cal.MAX_ATTEMPTS):
        tg.api.fail("sendMessage", 500, "Internal Server Error")
    await advance(tg, minutes=10)
    for _ in range(cal.MAX_ATTEMPTS):
        await advance(tg, minutes=10)
    (row,) = await deliveries(tg, post_id=await post_id(tg, "one"))
    assert row.state == cal.FAILED and row.attempts == cal.MAX_ATTEMPTS
    assert "Internal Server Error" in row.error
    assert len(tg.api.of("sendMessage")) == cal.MAX_ATTEMPTS


async def test_bad_request_fails_at_once(tg):
    await join(tg, GROUP)
    write_calendar(tg, ONE)
    await start(tg)
    tg.api.fail("sendMessage", 400, "Bad Request: message is too long")
    await advance(tg, minutes=10)
    (row,) = await deliveries(tg, post_id=await post_id(tg, "one"))
    assert (row.state, row.attempts, row.error) == (cal.FAILED, 1, "Message is too long")


async def test_a_timeout_is_not_resent_blindly(tg):
    await join(tg, GROUP)
    write_calendar(tg, ONE)
    await start(tg)
    tg.api.raise_on("sendMessage", TimedOut())
    await advance(tg, minutes=10)
    await advance(tg, hours=1)
    (row,) = await deliveries(tg, post_id=await post_id(tg, "one"))
    assert row.state == cal.UNKNOWN and "may have posted" in row.error
    assert len(tg.api.of("sendMessage")) == 1
    tg.api.clear()
    await tg.feed(f.message(GROUP, ADMIN, "/calendar", date=tg.now()))
    listing = tg.api.sent_texts(G)[-1]
    assert f"<code>{row.id}</code>" in listing and "may or may not have been posted" in listing
    await tg.feed(f.message(GROUP, ADMIN, f"/postnow {row.id}", date=tg.now()))
    assert tg.api.sent_texts(G)[-2:] == ["One", f"Posted <code>{row.id}</code>."]
    (row,) = await deliveries(tg, post_id=row.post_id)
    assert row.state == cal.SENT


async def test_forbidden_deactivates_the_chat_and_its_deliveries(tg):
    await join(tg, GROUP)
    write_calendar(tg, ONE)
    await start(tg)
    tg.api.fail("sendMessage", 403, "Forbidden: bot was kicked from the supergroup chat")
    await advance(tg, minutes=10)
    states = [r.state for r in await deliveries(tg)]
    assert states == [cal.FAILED, cal.CANCELLED]
    async with tg.db() as session:
        assert (await session.get(Chat, G)).active is False
    await advance(tg, hours=8)
    assert len(tg.api.of("sendMessage")) == 1


async def test_chat_migration_is_followed(tg):
    await join(tg, GROUP)
    write_calendar(tg, ONE)
    await start(tg)
    new_id = -1009999999999
    tg.api.fail(
        "sendMessage",
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
        migrate_to_chat_id=new_id,
    )
    await advance(tg, minutes=10)
    assert [p["chat_id"] for _, p in sends(tg)] == [G, new_id]
    rows = await deliveries(tg)
    assert [(r.chat_id, r.state) for r in rows] == [(new_id, cal.SENT), (new_id, cal.PENDING)]
    await advance(tg, hours=6)
    assert sends(tg)[-1][1]["chat_id"] == new_id
    # The file still names the old id: re-planning follows the migration instead of failing.
    await publishing.reload_calendar(tg.app)
    assert {r.chat_id for r in await deliveries(tg)} == {new_id}


async def test_missing_media_at_send_time_fails_the_delivery(tg):
    await join(tg, GROUP)
    (content_dir(tg) / "m").mkdir(parents=True)
    (content_dir(tg) / "m" / "a.png").write_bytes(b"png")
    write_calendar(
        tg,
        f"""
        targets: {{main: {G}}}
        posts:
          - {{id: pic, to: main, at: "2026-11-25 12:10", photo: m/a.png}}
        """,
    )
    await start(tg)
    (content_dir(tg) / "m" / "a.png").unlink()
    publishing.runtime(tg.app).fingerprint = None  # no reload: the plan stays as it was
    await advance(tg, minutes=10)
    (row,) = await deliveries(tg)
    assert row.state == cal.FAILED and "a.png" in row.error


# --- pin, unpin, delete_after ----------------------------------------------------------------


async def test_pin_replaces_the_previous_pin_of_the_same_post(tg):
    await join(tg, GROUP)
    write_calendar(
        tg,
        f"""
        targets: {{main: {G}}}
        posts:
          - {{id: notice, to: main, cron: "0 13 * * *", text: Notice, pin: true}}
          - {{id: other, to: main, cron: "5 13 * * *", text: Other, pin: true}}
        """,
    )
    await start(tg)
    await advance(tg, hours=1, minutes=10)
    first = [c.params["message_id"] for c in tg.api.of("pinChatMessage")]
    assert len(first) == 2 and not tg.api.of("unpinChatMessage")
    await advance(tg, days=1)
    pins = [c.params["message_id"] for c in tg.api.of("pinChatMessage")]
    unpins = [c.params["message_id"] for c in tg.api.of("unpinChatMessage")]
    assert unpins == first  # each post unpinned its own previous message only
    rows = await deliveries(tg, pinned=True)
    assert sorted(r.message_id for r in rows) == sorted(pins[2:])


async def test_a_pin_without_rights_keeps_the_post_sent(tg):
    await join(tg, GROUP)
    write_calendar(
        tg,
        f"""
        targets: {{main: {G}}}
        posts:
          - {{id: notice, to: main, at: "2026-11-25 12:10", text: Notice, pin: true}}
        """,
    )
    await start(tg)
    tg.api.fail(
        "pinChatMessage",
        400,
        "Bad Request: not enough rights to manage pinned messages in the chat",
    )
    await advance(tg, minutes=10)
    (row,) = await deliveries(tg)
    assert row.state == cal.SENT and not row.pinned and "could not pin" in row.error


async def test_delete_after_removes_the_message_once_even_across_a_restart(
    tg, settings, database_url
):
    from tests.calendar_support import another_bot

    await join(tg, GROUP)
    write_calendar(
        tg,
        f"""
        targets: {{main: {G}}}
        posts:
          - {{id: brief, to: main, at: "2026-11-25 12:10", text: Brief, delete_after: 2h}}
        """,
    )
    await start(tg)
    await advance(tg, minutes=10)
    (row,) = await deliveries(tg)
    assert row.delete_at == row.sent_at + timedelta(hours=2)
    assert jobs(tg, "delete") == {f"delete:{row.id}": row.delete_at}
    await advance(tg, hours=1, minutes=59)
    assert not tg.api.of("deleteMessage")
    async with another_bot(settings, database_url, tg.clock) as bot2:  # restarted meanwhile
        await publishing.on_startup(bot2.app)
        await advance(bot2, minutes=1)
        (call,) = bot2.api.of("deleteMessage")
        assert call.params == {"chat_id": G, "message_id": row.message_id}
    await advance(tg, minutes=1)  # the first process's job finds it already done
    assert not tg.api.of("deleteMessage")
