"""When the community is awake: messages per weekday × hour of day, in the group's time zone.

Counts come from `chat_hour` (messages per chat and UTC hour, written by the activity flush).
Each UTC hour is placed in the local weekday and hour in which it starts, with the zone's
rules of that moment, so the buckets stay right across DST changes: in the autumn the
repeated local hour gets both UTC hours, in the spring the skipped local hour gets none.
(In zones with a half-hour offset, e.g. Asia/Kolkata, a UTC hour is put in the local hour it
starts in.) The window is whole local days — by default the 28 days before today — so each
weekday is counted exactly four times.

Only messages are mapped, not distinct active members: counting members per hour would need
one row per member and hour (or a set per hour in the hot path), while messages cost one
counter per chat and hour.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.charts import cjk_font, render_in_thread
from bot.dashboard import register_panel
from bot.digest import DigestContext, Photo, register_photo
from bot.i18n import t
from bot.models import Chat, ChatHour
from bot.text import escape
from bot.timeparse import local_to_utc

WEEKS = 4
WIDTH, HEIGHT, DPI = 1200, 600, 100
# Quiet hours are only named with at least this many messages in the window (on average
# about one per weekday-hour cell), so a new or silent group gets no warnings.
MIN_MESSAGES = 168

CH = ChatHour.__table__.c  # type: ignore[attr-defined]

Grid = list[list[int]]  # grid[weekday 0=Mon][hour 0..23]


@dataclass(frozen=True, slots=True)
class Heatmap:
    """Messages per local weekday and hour over the local days first..last."""

    first: date
    last: date
    grid: Grid

    @property
    def total(self) -> int:
        return sum(map(sum, self.grid))

    def cells(self) -> list[tuple[int, int, int]]:
        """(messages, weekday, hour) of every cell."""
        return [(self.grid[d][h], d, h) for d in range(7) for h in range(24)]

    def by_hour(self) -> list[int]:
        """Messages per hour of day, all weekdays together."""
        return [sum(self.grid[d][h] for d in range(7)) for h in range(24)]

    def busiest_cell(self) -> tuple[int, int, int]:
        """(messages, weekday, hour) of the busiest cell (earliest in the week on ties)."""
        return max(self.cells(), key=lambda c: (c[0], -c[1], -c[2]))

    def busiest_hours(self, count: int = 3) -> list[int]:
        hours = self.by_hour()
        return sorted(range(24), key=lambda h: (-hours[h], h))[:count]

    def quietest_hours(self, count: int = 3) -> list[int]:
        hours = self.by_hour()
        return sorted(range(24), key=lambda h: (hours[h], h))[:count]

    def quiet_cells(self) -> set[tuple[int, int]]:
        """(weekday, hour) cells in the lowest quartile, when there is enough data.

        A cell is quiet when its count is at most the lower quartile of the 168 cells (the
        42nd smallest) and below the median, so an evenly busy group gets no warning at all.
        """
        if self.total < MIN_MESSAGES:
            return set()
        values = sorted(c[0] for c in self.cells())
        quartile, median = values[41], values[83]
        return {(d, h) for n, d, h in self.cells() if n <= quartile and n < median}


def local_slot(hour_start: datetime, tz: ZoneInfo) -> tuple[date, int, int]:
    """(local date, weekday, hour) in which a UTC hour starts."""
    local = hour_start.astimezone(tz)
    return local.date(), local.weekday(), local.hour


def default_window(today: date) -> tuple[date, date]:
    """The 4 whole weeks (28 local days) before today."""
    return today - timedelta(days=7 * WEEKS), today - timedelta(days=1)


async def heatmap(
    session: AsyncSession, chat_id: int, tz: ZoneInfo, first: date, last: date
) -> Heatmap:
    """Messages per weekday × hour over the local days first..last (both included)."""
    start = local_to_utc(first, time(0), tz)
    end = local_to_utc(last + timedelta(days=1), time(0), tz)
    rows = await session.execute(
        select(CH.hour_start, CH.messages).where(
            CH.chat_id == chat_id, CH.hour_start >= start, CH.hour_start < end
        )
    )
    grid = [[0] * 24 for _ in range(7)]
    for hour_start, messages in rows:
        _, weekday, hour = local_slot(hour_start, tz)
        grid[weekday][hour] += messages
    return Heatmap(first, last, grid)


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A group's quiet (weekday, hour) cells, in its own time zone, and what they rest on."""

    timezone: ZoneInfo
    cells: frozenset[tuple[int, int]]
    first: date
    last: date
    total: int

    def is_quiet(self, moment: datetime) -> bool:
        local = moment.astimezone(self.timezone)
        return (local.weekday(), local.hour) in self.cells


async def quiet_hours(
    session: AsyncSession, chat_ids: Iterable[int], *, before: datetime
) -> dict[int, QuietHours]:
    """Quiet hours of each known group over the 4 weeks before the local day of `before`."""
    result = {}
    rows = await session.execute(
        select(Chat.id, Chat.timezone).where(Chat.id.in_(sorted(set(chat_ids))))
    )
    for chat_id, zone in rows.all():
        tz = ZoneInfo(zone)
        first, last = default_window(before.astimezone(tz).date())
        found = await heatmap(session, chat_id, tz, first, last)
        result[chat_id] = QuietHours(tz, frozenset(found.quiet_cells()), first, last, found.total)
    return result


# --- the picture --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeatmapSpec:
    title: str
    map: Heatmap
    weekdays: tuple[str, ...]  # Mon..Sun labels
    hour_label: str
    messages_label: str


def render_heatmap(spec: HeatmapSpec) -> bytes:
    """Draw the heat map; PNG bytes of WIDTH x HEIGHT pixels (matplotlib, Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    font = cjk_font()
    text_kwargs = {"fontfamily": [font, "DejaVu Sans"]} if font else {}
    axes = figure.add_subplot(1, 1, 1)
    grid = spec.map.grid
    peak = max(max(row) for row in grid) or 1
    image = axes.imshow(grid, cmap="YlOrRd", aspect="auto", vmin=0, vmax=peak)
    axes.set_xticks(range(24))
    axes.set_xticklabels([f"{h:02d}" for h in range(24)], fontsize=8)
    axes.set_yticks(range(7))
    axes.set_yticklabels(spec.weekdays, **text_kwargs)
    axes.set_xlabel(spec.hour_label, **text_kwargs)
    axes.set_title(spec.title.replace("$", r"\$"), **text_kwargs)  # a title is not mathtext
    for day in range(7):
        for hour in range(24):
            value = grid[day][hour]
            if value:
                axes.text(
                    hour,
                    day,
                    str(value),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value > peak * 0.6 else "#333333",
                )
    bar = figure.colorbar(image, ax=axes, fraction=0.03, pad=0.02)
    bar.set_label(spec.messages_label, **text_kwargs)
    figure.subplots_adjust(left=0.07, right=0.97, top=0.92, bottom=0.1)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


async def render_heatmap_async(spec: HeatmapSpec) -> bytes:
    """`render_heatmap` off the event loop (shares the charts' worker slots)."""
    return await render_in_thread(render_heatmap, spec)


def utc_hour(moment: datetime) -> datetime:
    """The start of the UTC hour containing `moment` (as stored in chat_hour)."""
    moment = moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


# --- words around it ----------------------------------------------------------------------


def _hour_range(hour: int) -> str:
    return f"{hour:02d}:00–{(hour + 1) % 24:02d}:00"


def caption(lang: str, group: str, zone: str, found: Heatmap) -> str:
    """HTML caption: the total, the busiest cell, the busiest and quietest hours of the day."""
    count, day, hour = found.busiest_cell()
    return t(
        lang,
        "segments.heatmap_caption",
        group=escape(group),
        start=found.first.isoformat(),
        end=found.last.isoformat(),
        zone=zone,
        total=f"{found.total:,}",
        day=t(lang, f"kpi.weekday.{day}"),
        hour=_hour_range(hour),
        count=f"{count:,}",
        busy=", ".join(_hour_range(h) for h in found.busiest_hours()),
        quiet=", ".join(_hour_range(h) for h in found.quietest_hours()),
    )


def picture(lang: str, group: str, zone: str, found: Heatmap) -> HeatmapSpec:
    """What to draw; English labels when there is no font for Chinese."""
    lang = lang if lang != "zh" or cjk_font() is not None else "en"
    return HeatmapSpec(
        title=t(
            lang,
            "segments.heatmap_title",
            group=group,
            start=found.first.isoformat(),
            end=found.last.isoformat(),
            zone=zone,
        ),
        map=found,
        weekdays=tuple(t(lang, f"kpi.weekday.{d}") for d in range(7)),
        hour_label=t(lang, "segments.heatmap_hour"),
        messages_label=t(lang, "segments.heatmap_messages"),
    )


async def weekly_photo(ctx: DigestContext) -> Photo | None:
    """The weekly report's heat map: the 4 weeks ending with the week reported."""
    if ctx.kind != "weekly":
        return None
    found = await heatmap(
        ctx.session, ctx.chat_id, ctx.tz, ctx.end - timedelta(days=7 * WEEKS - 1), ctx.end
    )
    if not found.total:
        return None
    chat = await ctx.session.get(Chat, ctx.chat_id)
    title = chat.title if chat is not None and chat.title else str(ctx.chat_id)
    zone = ctx.tz.key
    return Photo(
        render_heatmap,
        picture(ctx.lang, title, zone, found),
        caption(ctx.lang, title, zone, found),
    )


register_photo("heatmap", weekly_photo)


# --- the dashboard panel ------------------------------------------------------------------

# Light yellow (quiet) to dark red (busy), as in the picture; spelt out because plotly.js's
# own "YlOrRd" runs the other way.
PANEL_COLORS = [[0.0, "#ffffcc"], [0.25, "#fed976"], [0.5, "#fd8d3c"], [0.75, "#e31a1c"],
                [1.0, "#800026"]]  # fmt: skip


async def heatmap_panel(
    session: AsyncSession, chat_id: int, today: date, tz: ZoneInfo, lang: str
) -> dict[str, Any] | None:
    """Dashboard: messages by weekday × hour over the 4 weeks before today, in the group's
    time zone, as a Plotly heat map (hover: weekday, hour, messages); None while empty."""
    first, last = default_window(today)
    found = await heatmap(session, chat_id, tz, first, last)
    if not found.total:
        return None
    return {
        "data": [
            {
                "type": "heatmap",
                "z": found.grid,
                "x": [f"{h:02d}" for h in range(24)],
                "y": [t(lang, f"kpi.weekday.{d}") for d in range(7)],
                "zmin": 0,
                "colorscale": PANEL_COLORS,
                "xgap": 1,
                "ygap": 1,
                "hovertemplate": t(lang, "segments.panel_heatmap_hover") + "<extra></extra>",
                "colorbar": {"title": {"text": t(lang, "segments.heatmap_messages")}},
            }
        ],
        "layout": {
            "title": {
                "text": t(
                    lang,
                    "segments.panel_heatmap_title",
                    start=first.isoformat(),
                    end=last.isoformat(),
                    zone=tz.key,
                )
            },
            "height": 340,
            "margin": {"l": 50, "r": 20, "t": 50, "b": 50},
            "xaxis": {"type": "category", "title": {"text": t(lang, "segments.heatmap_hour")}},
            "yaxis": {"type": "category", "autorange": "reversed"},
        },
    }


register_panel("heatmap", heatmap_panel, order=10)
