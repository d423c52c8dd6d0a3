"""The argument forms users type for durations and times, read in the chat's time zone.

Durations: `30m`, `12h`, `7d`, `2w` (also `90s`, `1h30m`, and 分钟/小时/天/周).
Times: `20:00` (today, or tomorrow if already passed), `2026-12-24 20:00`, `in 2h`,
`tomorrow 09:00` / `明天 09:00`. Local wall times that don't exist (DST gap) move forward;
ambiguous ones (DST fold) take the first occurrence. Every result is an aware UTC datetime.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_UNIT_SECONDS = {
    "s": 1,
    "sec": 1,
    "秒": 1,
    "m": 60,
    "min": 60,
    "分": 60,
    "分钟": 60,
    "h": 3600,
    "小时": 3600,
    "时": 3600,
    "d": 86400,
    "天": 86400,
    "日": 86400,
    "w": 604800,
    "周": 604800,
}
_PART = re.compile(r"(\d+)\s*(分钟|小时|min|sec|[smhdw秒分时天日周])", re.IGNORECASE)
_TIME = re.compile(r"^([01]?\d|2[0-3])[:：]([0-5]\d)$")
_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
TOMORROW = {"tomorrow", "明天"}


def parse_duration(text: str) -> timedelta | None:
    """`30m`, `12h`, `7d`, `2w`, `1h30m`, `2小时` → timedelta; None if not a positive duration."""
    text = text.strip().lower()
    if not text:
        return None
    position, seconds = 0, 0
    for match in _PART.finditer(text):
        if match.start() != position:
            return None
        seconds += int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        position = match.end()
    if position != len(text) or seconds <= 0:
        return None
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Compact form of a duration, as users type it: `1d2h`, `30m`."""
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def parse_clock(text: str) -> time | None:
    match = _TIME.match(text.strip())
    return time(int(match.group(1)), int(match.group(2))) if match else None


def parse_date(text: str) -> date | None:
    match = _DATE.match(text.strip())
    if not match:
        return None
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        return None


def local_to_utc(day: date, clock: time, tz: ZoneInfo) -> datetime:
    """A chat-local wall time as UTC; skipped times (DST gap) move forward past the gap."""
    # fold=0 reads an ambiguous time as its first occurrence, and a nonexistent one with the
    # offset from before the gap — which lands the same distance past the gap (02:30 → 03:30).
    return datetime.combine(day, clock, tzinfo=tz).astimezone(UTC)


def parse_when(words: list[str], *, now: datetime, tz: ZoneInfo) -> tuple[datetime, int] | None:
    """Read a time from the start of `words`; returns (UTC moment, words used) or None.

    Accepts `in 2h`, `2h` (a duration from now), `20:00`, `2026-12-24 20:00`, `2026-12-24`
    (midnight), `tomorrow 09:00`. `now` is aware; the result is never in the past except for
    an explicit date and time, which the caller validates.
    """
    if not words:
        return None
    first = words[0].lower()
    if first in {"in", "after"} and len(words) >= 2:
        delta = parse_duration(words[1])
        return (now + delta, 2) if delta else None
    delta = parse_duration(first)
    if delta is not None:
        return now + delta, 1
    local_now = now.astimezone(tz)
    if first in TOMORROW and len(words) >= 2:
        clock = parse_clock(words[1])
        if clock is None:
            return None
        return local_to_utc(local_now.date() + timedelta(days=1), clock, tz), 2
    clock = parse_clock(first)
    if clock is not None:
        moment = local_to_utc(local_now.date(), clock, tz)
        if moment <= now:
            moment = local_to_utc(local_now.date() + timedelta(days=1), clock, tz)
        return moment, 1
    day = parse_date(first)
    if day is not None:
        clock = parse_clock(words[1]) if len(words) >= 2 else None
        if clock is not None:
            return local_to_utc(day, clock, tz), 2
        return local_to_utc(day, time(0, 0), tz), 1
    return None
