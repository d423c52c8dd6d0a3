"""Plotly figures for the overview, as JSON for plotly.min.js (interactive: hover, zoom)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go

from bot.dashboard import Overview

Tr = Callable[[str], str]
CONFIG = {"displaylogo": False, "responsive": True}


def _layout(title: str, *, percent: bool = False, slider: bool = True) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": title},
        "margin": {"l": 50, "r": 20, "t": 50, "b": 40},
        "height": 320,
        "hovermode": "x unified",
        "legend": {"orientation": "h", "y": -0.25},
        "xaxis": {"type": "date", "rangeslider": {"visible": slider, "thickness": 0.08}},
    }
    if percent:
        layout["yaxis"] = {"tickformat": ".0%", "rangemode": "tozero"}
    else:
        layout["yaxis"] = {"rangemode": "tozero"}
    return layout


def overview_figures(view: Overview, tr: Tr) -> list[tuple[str, str]]:
    """(element id, figure JSON) for every chart of the overview, in page order."""
    days = [row.day.isoformat() for row in view.trend]

    def series(name: str, values: list[Any], kind: str = "line") -> Any:
        if kind == "bar":
            return go.Bar(x=days, y=values, name=name)
        return go.Scatter(x=days, y=values, name=name, mode="lines+markers")

    rows = view.trend
    figures = {
        "chart-active": go.Figure(
            [
                series(tr("metric.dau"), [r.dau for r in rows]),
                series(tr("metric.wau"), [r.wau for r in rows]),
                series(tr("metric.mau"), [r.mau for r in rows]),
            ],
            _layout(tr("chart.active")),
        ),
        "chart-messages": go.Figure(
            [series(tr("metric.messages"), [r.messages for r in rows], "bar")],
            _layout(tr("chart.messages")),
        ),
        "chart-members": go.Figure(
            [
                series(tr("metric.joins"), [r.joins for r in rows], "bar"),
                series(tr("metric.leaves"), [-r.leaves for r in rows], "bar"),
                series(tr("metric.net"), [r.net for r in rows]),
            ],
            {**_layout(tr("chart.members")), "barmode": "relative"},
        ),
        "chart-checkins": go.Figure(
            [series(tr("metric.checkins"), [r.checkins for r in rows], "bar")],
            _layout(tr("chart.checkins")),
        ),
        "chart-participation": go.Figure(
            [
                series(tr("metric.participation"), [r.participation for r in rows]),
                series(tr("metric.checkin_rate"), [r.checkin_rate for r in rows]),
            ],
            _layout(tr("chart.participation"), percent=True),
        ),
    }
    if view.cohorts:
        width = max(len(c.rates) for c in view.cohorts)
        z = [c.rates + [None] * (width - len(c.rates)) for c in view.cohorts]
        figures["chart-retention"] = go.Figure(
            go.Heatmap(
                z=z,
                x=[f"+{k + 1}" for k in range(width)],
                y=[f"{c.start.isoformat()} ({c.size})" for c in view.cohorts],
                zmin=0,
                zmax=1,
                colorscale="Blues",
                texttemplate="%{z:.0%}",
                hovertemplate=tr("chart.retention_hover") + "<extra></extra>",
            ),
            {
                "title": {"text": tr("chart.retention")},
                "height": 120 + 28 * len(view.cohorts),
                "margin": {"l": 140, "r": 20, "t": 50, "b": 40},
                "xaxis": {"title": {"text": tr("chart.weeks_since")}, "side": "top"},
                "yaxis": {"autorange": "reversed", "title": {"text": tr("chart.join_week")}},
            },
        )
    out = [(key, fig.to_json()) for key, fig in figures.items()]
    for name, figure in view.panels:
        out.append((f"panel-{name}", go.Figure(figure).to_json()))
    return out
