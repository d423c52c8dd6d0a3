"""Durations and times as users type them, in the chat's time zone, across DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.timeparse import format_duration, parse_duration, parse_when

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # 20:00 in Shanghai


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(minutes=90)),
        ("2小时", timedelta(hours=2)),
        ("30分钟", timedelta(minutes=30)),
        ("7天", timedelta(days=7)),
        ("90s", timedelta(seconds=90)),
    ],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "0m", "abc", "10", "5x", "h", "-3d", "1h 30x"])
def test_bad_durations(text):
    assert parse_duration(text) is None


def test_format_duration_round_trips():
    for text in ("30m", "1d2h", "2w", "1h30m"):
        assert format_duration(parse_duration(text)) == text


def test_clock_time_today_or_tomorrow_in_chat_zone():
    assert parse_when(["21:00", "x"], now=NOW, tz=SHANGHAI) == (
        datetime(2026, 11, 25, 13, 0, tzinfo=UTC),
        1,
    )
    # 19:00 already passed in Shanghai (it is 20:00) → tomorrow
    assert parse_when(["19:00"], now=NOW, tz=SHANGHAI)[0] == datetime(
        2026, 11, 26, 11, 0, tzinfo=UTC
    )


def test_relative_and_absolute():
    assert parse_when(["in", "2h", "text"], now=NOW, tz=SHANGHAI) == (NOW + timedelta(hours=2), 2)
    assert parse_when(["2h"], now=NOW, tz=SHANGHAI) == (NOW + timedelta(hours=2), 1)
    assert parse_when(["2026-12-24", "20:00"], now=NOW, tz=SHANGHAI) == (
        datetime(2026, 12, 24, 12, 0, tzinfo=UTC),
        2,
    )
    assert parse_when(["明天", "09:00"], now=NOW, tz=SHANGHAI)[0] == datetime(
        2026, 11, 26, 1, 0, tzinfo=UTC
    )
    assert parse_when(["2026-02-30", "20:00"], now=NOW, tz=SHANGHAI) is None
    assert parse_when(["soon"], now=NOW, tz=SHANGHAI) is None
    assert parse_when([], now=NOW, tz=SHANGHAI) is None


def test_dst_gap_and_fold_in_berlin():
    # 2026-03-29 02:30 does not exist in Berlin (clocks jump 02:00→03:00): moves to 03:30 CEST.
    moment, _ = parse_when(["2026-03-29", "02:30"], now=NOW, tz=BERLIN)
    assert moment.astimezone(BERLIN).strftime("%H:%M") == "03:30"
    # 2026-10-25 02:30 happens twice: the first (CEST, UTC+2) is taken.
    moment, _ = parse_when(["2026-10-25", "02:30"], now=NOW, tz=BERLIN)
    assert moment == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
