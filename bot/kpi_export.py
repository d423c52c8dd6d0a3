"""`community-bot kpi CHAT_ID`: a chat's daily KPIs as a table, CSV or JSON (DESIGN.md §4).

The columns are DESIGN.md's keys, then the figures features provide (content sent / failed /
missed, polls closed and their turnout, lottery entries and draws; empty/null when the
feature is not installed or there was nothing to measure), then `partial`.
`--by source`: the joins of the period by where they came from (bot.invites).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

import bot.schema  # noqa: F401  (every feature, so their figures are registered)
from bot.db import create_engine, make_sessionmaker, utcnow
from bot.invites import SourceStats, joins_by_source
from bot.kpi import (
    DAY_METRICS,
    DayKpis,
    Unavailable,
    daily_kpis,
    feature_metric_names,
    feature_metrics_by_day,
    is_ratio,
    local_today,
)
from bot.models import Chat, ChatMigration


def columns() -> list[str]:
    return ["date", *DAY_METRICS, *feature_metric_names(), "partial"]


SOURCE_COLUMNS = [
    "source",
    "joins",
    "share",
    "retention_d7",
    "d7_measurable",
    "joiners",
    "still_active",
    "still_active_share",
]
SOURCE_RATIOS = frozenset({"share", "retention_d7", "still_active_share"})


async def export(
    url: str,
    chat_id: int,
    *,
    days: int,
    end: date | None,
    fmt: str,
    now: Any = None,
    by: str = "day",
) -> str:
    """The last `days` days up to `end` (default: the chat's today, so far), oldest first;
    `by="source"`: the joins of those days by source (bot.invites.joins_by_source)."""
    engine = create_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            chat = await session.get(Chat, chat_id)
            if chat is None:
                moved = await session.scalar(
                    select(ChatMigration.new_chat_id).where(ChatMigration.old_chat_id == chat_id)
                )
                chat = await session.get(Chat, moved) if moved is not None else None
            if chat is None:
                raise LookupError(f"no group with id {chat_id} in the database")
            tz = ZoneInfo(chat.timezone)
            today = local_today(now or utcnow(), tz)
            last = end or today
            first = last - timedelta(days=days - 1)
            if by == "source":
                sources = await joins_by_source(session, chat.id, first, last, today=today)
            else:
                rows = await daily_kpis(session, chat.id, first, last, today=today, tz=tz)
                features = await feature_metrics_by_day(session, chat.id, first, last, tz)
    finally:
        await engine.dispose()
    if by == "source":
        return render_sources(sources, fmt)
    return render(rows, fmt, features)


def render_sources(sources: list[SourceStats], fmt: str) -> str:
    """One record per source: joins, share of all joins, D7 retention, still active."""
    total = sum(s.joins for s in sources)
    records = [s.as_dict(total) for s in sources]
    if fmt == "json":
        return json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=SOURCE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({k: "" if v is None else v for k, v in record.items()})
        return buffer.getvalue()
    body = [
        [
            "—" if r[k] is None else f"{r[k] * 100:.1f}%" if k in SOURCE_RATIOS else str(r[k])
            for k in SOURCE_COLUMNS
        ]
        for r in records
    ]
    return _grid(SOURCE_COLUMNS, body, left=1)


def render(
    rows: list[DayKpis], fmt: str, features: dict[date, dict[str, Any]] | None = None
) -> str:
    records = []
    for row in rows:
        record = row.as_dict()
        partial = record.pop("partial")
        for metric, value in (features or {}).get(row.day, {}).items():
            record[metric] = None if isinstance(value, Unavailable) else value
        record["partial"] = partial
        records.append(record)
    if fmt == "json":
        return json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer,
            fieldnames=[c for c in columns() if not records or c in records[0]],
            lineterminator="\n",
        )
        writer.writeheader()
        for record in records:
            writer.writerow({k: "" if v is None else v for k, v in record.items()})
        return buffer.getvalue()
    return _table(records)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if is_ratio(key):
        return f"{value * 100:.1f}%"
    if key == "partial":
        return "partial" if value else ""
    return str(value)


def _table(records: list[dict[str, Any]]) -> str:
    keys = [c for c in columns() if not records or c in records[0]]
    headers = [c.replace("retention_", "ret_") for c in keys]
    body = [[_cell(key, record[key]) for key in keys] for record in records]
    return _grid(headers, body)


def _grid(headers: list[str], body: list[list[str]], left: int = 0) -> str:
    """Right-aligned columns (the first `left` ones left-aligned), two spaces apart."""
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), *(line(r) for r in body)]) + "\n"
