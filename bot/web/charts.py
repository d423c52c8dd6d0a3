"""Plotly figures for the overview, as JSON for plotly.min.js (interactive: hover, zoom).

Figures are plain dicts in Plotly's figure format rather than `plotly.graph_objects`: the
objects validate every property on construction, which costs ~100 ms of the bot's event loop
per overview; the dicts cost about a millisecond. The tests check every figure against
Plotly's schema with `plotly.graph_objects.Figure`, so a misspelt property still fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bot.dashboard import Overview

Tr = Callable[[str], str]
Figure = dict[str, Any]


def _layout(title: str, *, percent: bool = False) -> dict[str, Any]:
    return {
        "title": {"text": title},
        "margin": {"l": 50, "r": 20, "t": 50, "b": 40},
        "height": 320,
        "hovermode": "x unified",
        "legend": {"orientation": "h", "y": -0.25},
        "xaxis": {"type": "date", "rangeslider": {"visible": True, "thickness": 0.08}},
        "yaxis": {"rangemode": "tozero", **({"tickformat": ".0%"} if percent else {})},
    }


def overview_figures(view: Overview, tr: Tr) -> list[tuple[str, str]]:
    """(element id, figure JSON) for every chart of the overview, in page order."""
    days = [row.day.isoformat() for row in view.trend]
    rows = view.trend

    def line(name: str, values: list[Any]) -> dict[str, Any]:
        return {"type": "scatter", "mode": "lines+markers", "name": name, "x": days, "y": values}

    def bars(name: str, values: list[Any]) -> dict[str, Any]:
        return {"type": "bar", "name": name, "x": days, "y": values}

    figures: dict[str, Figure] = {
        "chart-active": {
            "data": [
                line(tr("metric.dau"), [r.dau for r in rows]),
                line(tr("metric.wau"), [r.wau for r in rows]),
                line(tr("metric.mau"), [r.mau for r in rows]),
            ],
            "layout": _layout(tr("chart.active")),
        },
        "chart-messages": {
            "data": [bars(tr("metric.messages"), [r.messages for r in rows])],
            "layout": _layout(tr("chart.messages")),
        },
        "chart-members": {
            "data": [
                bars(tr("metric.joins"), [r.joins for r in rows]),
                bars(tr("metric.leaves"), [-r.leaves for r in rows]),
                line(tr("metric.net"), [r.net for r in rows]),
            ],
            "layout": {**_layout(tr("chart.members")), "barmode": "relative"},
        },
        "chart-checkins": {
            "data": [bars(tr("metric.checkins"), [r.checkins for r in rows])],
            "layout": _layout(tr("chart.checkins")),
        },
        "chart-participation": {
            "data": [
                line(tr("metric.participation"), [r.participation for r in rows]),
                line(tr("metric.checkin_rate"), [r.checkin_rate for r in rows]),
            ],
            "layout": _layout(tr("chart.participation"), percent=True),
        },
    }
    if view.cohorts:
        width = max(len(c.rates) for c in view.cohorts)
        figures["chart-retention"] = {
            "data": [
                {
                    "type": "heatmap",
                    "z": [c.rates + [None] * (width - len(c.rates)) for c in view.cohorts],
                    "x": [f"+{k + 1}" for k in range(width)],
                    "y": [f"{c.start.isoformat()} ({c.size})" for c in view.cohorts],
                    "zmin": 0,
                    "zmax": 1,
                    "colorscale": "Blues",
                    "texttemplate": "%{z:.0%}",
                    "hovertemplate": tr("chart.retention_hover") + "<extra></extra>",
                }
            ],
            "layout": {
                "title": {"text": tr("chart.retention")},
                "height": 120 + 28 * len(view.cohorts),
                "margin": {"l": 140, "r": 20, "t": 50, "b": 40},
                "xaxis": {"title": {"text": tr("chart.weeks_since")}, "side": "top"},
                "yaxis": {"autorange": "reversed", "title": {"text": tr("chart.join_week")}},
            },
        }
    for name, figure in view.panels:
        figures[f"panel-{name}"] = figure
    return [(key, json.dumps(figure, ensure_ascii=False)) for key, figure in figures.items()]
