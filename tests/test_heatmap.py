"""The activity heat map: hourly counts from the activity flush, local buckets across DST
changes, /heatmap, the picture, quiet hours, and a group becoming a supergroup."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.charts import png_size
from bot.heatmap import Heatmap, HeatmapSpec, heatmap, local_slot, render_heatmap
from bot.models import ChatHour
from tests import factories as f
from tests.conftest import both_databases

GROUP = f.group(-1001000000088, "Heat <i>Group</i>")
CHAT_ID = GROUP["id"]
ADMIN = f.user(10, "Ada")
AMY, BO = f.user(301, "Amy"), f.user(302, "Bo")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


async def setup_group(tg, zone: str = "Europe/Berlin", chat=GROUP) -> None:
    tg.clock.set(utc(2026, 9, 1, 8))
    await tg.feed(f.my_chat_member(chat, ADMIN, "left", "administrator", date=tg.now()))
    tg.api.set_admins(chat["id"], ADMIN)
    await tg.services.chats.update_settings(chat["id"], timezone=zone)


async def hours(tg) -> dict[datetime, int]:
    async with tg.db() as session:
        rows = await session.execute(select(ChatHour.hour_start, ChatHour.messages))
        return dict(rows.all())


def test_local_slot_across_the_autumn_change_in_berlin():
    # 2026-10-25: 03:00 CEST becomes 02:00 CET, so local 02:00-03:00 happens twice.
    assert local_slot(utc(2026, 10, 24, 23), BERLIN) == (date(2026, 10, 25), 6, 1)  # 01:00 CEST
    assert local_slot(utc(2026, 10, 25, 0), BERLIN) == (date(2026, 10, 25), 6, 2)  # 02:00 CEST
    assert local_slot(utc(2026, 10, 25, 1), BERLIN) == (date(2026, 10, 25), 6, 2)  # 02:00 CET
    assert local_slot(utc(2026, 10, 25, 2), BERLIN) == (date(2026, 10, 25), 6, 3)  # 03:00 CET
    # The Sunday before, in summer time (UTC+2); the Sunday after, winter time (UTC+1).
    assert local_slot(utc(2026, 10, 18, 18), BERLIN)[1:] == (6, 20)
    assert local_slot(utc(2026, 11, 1, 18), BERLIN)[1:] == (6, 19)


def test_local_slot_across_the_spring_change_in_new_york():
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT; no UTC hour starts at local 02:00.
    assert local_slot(utc(2026, 3, 8, 6), NEW_YORK) == (date(2026, 3, 8), 6, 1)  # 01:00 EST
    assert local_slot(utc(2026, 3, 8, 7), NEW_YORK) == (date(2026, 3, 8), 6, 3)  # 03:00 EDT


async def test_flush_counts_messages_per_utc_hour_not_edits(tg):
    await setup_group(tg)
    await tg.feed(
        f.message(GROUP, AMY, "a", date=utc(2026, 10, 1, 9, 0)),
        f.message(GROUP, BO, "b", date=utc(2026, 10, 1, 9, 59, 59)),
        f.message(GROUP, AMY, "c", date=utc(2026, 10, 1, 10, 0)),
        f.edited(
            GROUP, AMY, "c!", date=utc(2026, 10, 1, 10, 0), edit_date=utc(2026, 10, 1, 10, 5)
        ),
    )
    await tg.flush()
    await tg.feed(f.message(GROUP, BO, "d", date=utc(2026, 10, 1, 10, 30)))
    await tg.flush()  # a second flush adds to the hour's row
    assert await hours(tg) == {utc(2026, 10, 1, 9): 2, utc(2026, 10, 1, 10): 2}


@both_databases
async def test_buckets_across_the_dst_change_and_the_window_edges(tg):
    """Today is Sunday 2026-11-01 in Berlin: the window is the local days 10-04 .. 10-31."""
    await setup_group(tg)
    sent = [
        utc(2026, 10, 3, 21, 30),  # Sat 10-03 23:30 CEST: before the window
        utc(2026, 10, 3, 22, 30),  # Sun 10-04 00:30 CEST: first hour of the window
        utc(2026, 10, 24, 23, 30),  # Sun 10-25 01:30 CEST
        utc(2026, 10, 25, 0, 30),  # Sun 10-25 02:30 CEST
        utc(2026, 10, 25, 1, 30),  # Sun 10-25 02:30 CET (the same wall-clock hour again)
        utc(2026, 10, 25, 2, 30),  # Sun 10-25 03:30 CET
        utc(2026, 10, 31, 22, 30),  # Sat 10-31 23:30 CET: last hour of the window
        utc(2026, 10, 31, 23, 30),  # Sun 11-01 00:30 CET: today, not in the window
    ]
    for moment in sent:
        await tg.feed(f.message(GROUP, AMY, "x", date=moment))
    tg.clock.set(utc(2026, 11, 1, 12))
    await tg.flush()
    async with tg.db() as session:
        found = await heatmap(session, CHAT_ID, BERLIN, date(2026, 10, 4), date(2026, 10, 31))
    expected = [[0] * 24 for _ in range(7)]
    expected[6][0] = 1  # Sunday 00:00 (10-04)
    expected[6][1] = 1
    expected[6][2] = 2  # both 02:00 hours of 10-25
    expected[6][3] = 1
    expected[5][23] = 1  # Saturday 23:00 (10-31)
    assert found.grid == expected and found.total == 6

    tg.api.clear()
    await tg.feed(f.message(GROUP, ADMIN, "/heatmap", date=tg.now()))
    (call,) = tg.api.of("sendPhoto")
    assert png_size(call.files["photo"][1]) == (1200, 600)
    caption = call.params["caption"]
    assert caption.startswith("🕒 <b>Heat &lt;i&gt;Group&lt;/i&gt;</b>, 2026-10-04 – 2026-10-31")
    assert "(Europe/Berlin): 6 messages" in caption
    assert "Busiest: Sun 02:00–03:00 (2 messages)" in caption
    assert "Busiest hours: 02:00–03:00, 00:00–01:00, 01:00–02:00" in caption
    assert "Quietest hours: 04:00–05:00, 05:00–06:00, 06:00–07:00" in caption


async def test_heatmap_without_data_and_for_members(tg):
    await setup_group(tg)
    tg.clock.set(utc(2026, 11, 1, 12))
    await tg.feed(f.message(GROUP, ADMIN, "/heatmap", date=tg.now()))
    assert "No messages recorded in 2026-10-04 – 2026-10-31" in tg.api.sent_texts(CHAT_ID)[-1]
    await tg.feed(f.message(GROUP, AMY, "/heatmap", date=tg.now()))
    assert "Only the group's operators" in tg.api.sent_texts(CHAT_ID)[-1]
    assert not tg.api.of("sendPhoto")


def test_png_is_valid_and_of_the_expected_size():
    grid = [[(d * 24 + h) % 7 for h in range(24)] for d in range(7)]
    spec = HeatmapSpec(
        title="周报 Deals $_$ here",  # dollars in a group title are not mathtext (would raise)
        map=Heatmap(date(2026, 10, 4), date(2026, 10, 31), grid),
        weekdays=("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
        hour_label="Hour",
        messages_label="Messages",
    )
    data = render_heatmap(spec)
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and png_size(data) == (1200, 600)
    assert data.endswith(b"IEND\xaeB`\x82")


def test_quiet_cells_need_data_and_spare_even_groups():
    # Every day 08:00-21:59 one message an hour for 4 weeks: 4 per busy cell, 0 elsewhere.
    busy = [[4 if 8 <= h <= 21 else 0 for h in range(24)] for _ in range(7)]
    found = Heatmap(date(2026, 10, 4), date(2026, 10, 31), busy)
    quiet = found.quiet_cells()
    assert len(quiet) == 7 * 10 and (0, 7) in quiet and (0, 22) in quiet and (0, 8) not in quiet
    even = Heatmap(found.first, found.last, [[2] * 24 for _ in range(7)])
    assert even.quiet_cells() == set()  # 336 messages, but no hour is quieter than another
    few = Heatmap(found.first, found.last, [[1 if h == 9 else 0 for h in range(24)]] * 7)
    assert few.total == 7 and few.quiet_cells() == set()  # not enough data


async def test_supergroup_migration_adds_up_the_hours(tg):
    old = f.group(-4000088, "Heat", type="group")
    await setup_group(tg, "UTC", old)
    await tg.feed(f.message(old, AMY, "a", date=utc(2026, 10, 1, 9, 5)))
    await tg.flush()
    new_id = -1009000000088
    supergroup = f.group(new_id, "Heat", type="supergroup")
    await tg.feed(f.message(supergroup, BO, "b", date=utc(2026, 10, 1, 9, 10)))
    await tg.flush()  # both ids have a row for 09:00
    await tg.feed(f.message(old, AMY, "late", date=utc(2026, 10, 1, 9, 11)))  # buffered, old id
    await tg.services.chats.migrate(old["id"], new_id)
    await tg.flush()
    async with tg.db() as session:
        rows = (await session.execute(select(ChatHour.chat_id, ChatHour.messages))).all()
    assert rows == [(new_id, 3)]


async def test_calendar_preview_flags_posts_in_the_quietest_hours(tg, database_url, tmp_path):
    """The group (Asia/Shanghai) wrote once an hour 08:00-21:59 local on each of the 28 days
    before 2026-11-30, so its quiet hours are 22:00-07:59 every day (0 of 4 weeks' messages
    against 4 in the busy ones). The calendar file is in UTC; the check uses the group's zone."""
    from datetime import timedelta

    from tests.test_cli import cli

    shanghai = f.group(-1001000000099, "Shanghai")
    await setup_group(tg, "Asia/Shanghai", shanghai)
    async with tg.services.db.begin() as session:
        for offset in range(1, 29):
            local_day = date(2026, 11, 30) - timedelta(days=offset)
            for hour in range(8, 22):
                start = datetime(
                    local_day.year,
                    local_day.month,
                    local_day.day,
                    hour,
                    tzinfo=ZoneInfo("Asia/Shanghai"),
                ).astimezone(UTC)
                session.add(ChatHour(chat_id=shanghai["id"], hour_start=start, messages=1))
    content = tmp_path / "content"
    content.mkdir()
    (content / "plan.yaml").write_text(
        "timezone: UTC\n"
        f"targets: {{main: {shanghai['id']}, other: -1001000000100}}\n"
        "posts:\n"
        "  - {id: day, to: main, at: 2026-11-30 02:00, text: ten in Shanghai}\n"
        "  - {id: late, to: main, at: 2026-11-30 13:30, text: half past nine}\n"
        "  - {id: edge, to: main, at: 2026-11-30 14:00, text: ten at night}\n"
        "  - {id: night, to: main, at: 2026-11-30 16:00, text: midnight}\n"
        "  - {id: elsewhere, to: other, at: 2026-11-30 16:00, text: no data there}\n",
        encoding="utf-8",
    )
    args = ("calendar", "preview", "--dir", str(content), "--days", "1")
    result = cli(
        *args, "--from", "2026-11-30 00:00", cwd=tmp_path, env={"DATABASE_URL": database_url}
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(") ", 1)[1] for line in lines[:5]] == [
        "day: ten in Shanghai",
        "late: half past nine",
        "edge: ten at night ⚠ quiet hour",
        "elsewhere: no data there",
        "night: midnight ⚠ quiet hour",
    ]
    assert lines[5] == (
        "quiet hours of other (-1001000000100): not enough messages recorded in the last 4"
        " weeks to tell"
    )
    assert lines[6].startswith("⚠ 2 send(s) in their group's quietest hours")
    assert lines[7] == "5 send(s) in the 1 day(s) from 2026-11-30 00:00 UTC"
    # Without a database (none at the default path here) nothing is flagged or added.
    bare = cli(*args, "--from", "2026-11-30 00:00", cwd=tmp_path)
    assert bare.returncode == 0 and "⚠" not in bare.stdout and len(bare.stdout.splitlines()) == 6


async def test_utc_hours_whatever_zone_the_timestamps_carry(tg):
    """PTB gives message dates in BOT_TIMEZONE; the hour key must be the UTC hour anyway —
    in a half-hour zone, and in Berlin's repeated hour (fold) — also when cached."""
    await setup_group(tg, "UTC")
    kolkata = ZoneInfo("Asia/Kolkata")  # UTC+05:30
    moments = [
        utc(2026, 10, 1, 4, 40).astimezone(kolkata),  # 10:10 local
        utc(2026, 10, 1, 5, 10).astimezone(kolkata),  # 10:40 local, the next UTC hour
        utc(2026, 10, 1, 5, 20).astimezone(kolkata),
        utc(2026, 10, 25, 0, 30).astimezone(BERLIN),  # 02:30 CEST (fold 0)
        utc(2026, 10, 25, 1, 30).astimezone(BERLIN),  # 02:30 CET (fold 1)
        utc(2026, 10, 25, 1, 45).astimezone(BERLIN),
        utc(2026, 10, 25, 0, 50).astimezone(BERLIN),
        utc(2026, 10, 25, 0, 55),  # datetime.UTC, same hour as the one before
    ]
    for moment in moments:
        tg.services.activity.record_message(CHAT_ID, AMY["id"], "Amy", None, moment, moment.date())
    await tg.flush()
    assert await hours(tg) == {
        utc(2026, 10, 1, 4): 1,
        utc(2026, 10, 1, 5): 2,
        utc(2026, 10, 25, 0): 3,
        utc(2026, 10, 25, 1): 2,
    }


def test_digest_chart_with_dollars_in_the_group_title():
    from bot.charts import ChartPoint, ChartSpec, render_chart

    points = [ChartPoint(date(2026, 10, d), 2.0, 5, 1, 0) for d in range(1, 8)]
    data = render_chart(ChartSpec(title="Deals $_$ here · daily", points=points))
    assert png_size(data) == (1200, 600)
