"""The digest chart: DAU, messages and joins/leaves over time, with target lines (PNG).

Rendering takes ~100 ms of CPU, so callers run it in a worker thread (`render_chart_async`);
it uses matplotlib's object API with the Agg backend (no pyplot, no global state), which is
safe to run in threads, and at most `MAX_PARALLEL` renders run at once so a burst of digests
cannot starve the event loop's thread of CPU.
"""

from __future__ import annotations

import asyncio
import io
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from typing import TypeVar

WIDTH, HEIGHT, DPI = 1200, 600, 100
MAX_PARALLEL = 2
T = TypeVar("T")
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)

# Fonts that carry CJK glyphs, tried in order for Chinese labels.
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
)


@dataclass(frozen=True, slots=True)
class ChartPoint:
    """One bar group / point of the chart: a day, or a week (labelled by its first day)."""

    day: date
    dau: float
    messages: int
    joins: int
    leaves: int


@dataclass(frozen=True, slots=True)
class ChartSpec:
    title: str
    points: Sequence[ChartPoint]
    labels: dict[str, str] = field(default_factory=dict)  # dau, messages, joins, leaves, target
    dau_target: float | None = None
    messages_target: float | None = None
    weekly: bool = False
    shade: tuple[date, date] | None = None  # days to highlight (e.g. a campaign), inclusive


@cache
def cjk_font() -> str | None:
    """A font able to draw Chinese labels, if one is installed."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


def render_chart(spec: ChartSpec) -> bytes:
    """Draw the chart and return PNG bytes of WIDTH x HEIGHT pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = {
        "dau": "DAU",
        "messages": "messages",
        "joins": "joins",
        "leaves": "leaves",
        "target": "target",
        **spec.labels,
    }
    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    font = cjk_font()
    text_kwargs = {"fontfamily": [font, "DejaVu Sans"]} if font else {}
    grid = figure.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
    top = figure.add_subplot(grid[0])
    bottom = figure.add_subplot(grid[1], sharex=top)
    xs = list(range(len(spec.points)))
    dau = [p.dau for p in spec.points]
    messages = [p.messages for p in spec.points]

    top.plot(xs, dau, color="#1f77b4", marker="o", markersize=3, linewidth=2, label=labels["dau"])
    top.set_ylabel(labels["dau"], color="#1f77b4", **text_kwargs)
    top.set_ylim(bottom=0, top=max([*dau, spec.dau_target or 0, 1]) * 1.15)
    if spec.dau_target:
        top.axhline(
            spec.dau_target,
            color="#1f77b4",
            linestyle="--",
            linewidth=1.2,
            label=f"{labels['dau']} {labels['target']}",
        )
    twin = top.twinx()
    twin.bar(xs, messages, color="#ff7f0e", alpha=0.25, label=labels["messages"])
    twin.set_ylabel(labels["messages"], color="#ff7f0e", **text_kwargs)
    twin.set_ylim(bottom=0, top=max([*messages, spec.messages_target or 0, 1]) * 1.15)
    if spec.messages_target:
        twin.axhline(
            spec.messages_target,
            color="#ff7f0e",
            linestyle="--",
            linewidth=1.2,
            label=f"{labels['messages']} {labels['target']}",
        )
    if spec.shade is not None:
        days = [p.day for p in spec.points]
        inside = [i for i, d in enumerate(days) if spec.shade[0] <= d <= spec.shade[1]]
        if inside:
            span = (inside[0] - 0.5, inside[-1] + 0.5)
            label = labels.get("shade", "campaign")
            top.axvspan(*span, color="#9467bd", alpha=0.12, label=label)
            bottom.axvspan(*span, color="#9467bd", alpha=0.12)
    top.set_zorder(twin.get_zorder() + 1)
    top.patch.set_visible(False)
    handles = top.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    top.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left", prop=_prop(font))
    top.set_title(spec.title.replace("$", r"\$"), **text_kwargs)  # a title is not mathtext
    top.grid(axis="y", alpha=0.3)
    top.tick_params(labelbottom=False)

    bottom.bar(xs, [p.joins for p in spec.points], color="#2ca02c", label=labels["joins"])
    bottom.bar(xs, [-p.leaves for p in spec.points], color="#d62728", label=labels["leaves"])
    bottom.axhline(0, color="#555555", linewidth=0.8)
    bottom.legend(loc="upper left", prop=_prop(font))
    bottom.grid(axis="y", alpha=0.3)
    step = max(1, len(xs) // 10)
    bottom.set_xticks(xs[::step])
    bottom.set_xticklabels(
        [p.day.strftime("%m-%d") for p in spec.points][::step], fontsize=8, **text_kwargs
    )
    figure.subplots_adjust(left=0.07, right=0.93, top=0.92, bottom=0.08)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Characters no installed font has (e.g. a Chinese group title without a CJK font)
        # are drawn as boxes; that is not worth a warning per digest.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _prop(font: str | None) -> dict[str, object]:
    return {"family": [font, "DejaVu Sans"], "size": 9} if font else {"size": 9}


async def render_chart_async(spec: ChartSpec) -> bytes:
    """`render_chart` in a worker thread, at most MAX_PARALLEL at a time."""
    return await render_in_thread(render_chart, spec)


async def render_in_thread(render: Callable[[T], bytes], spec: T) -> bytes:
    """Any renderer (digest chart, heat map) in a worker thread, MAX_PARALLEL at a time."""
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(MAX_PARALLEL)
    async with slots:
        return await asyncio.to_thread(render, spec)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header; raises ValueError if it is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
