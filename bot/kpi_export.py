"""`community-bot kpi CHAT_ID`: a chat's daily KPIs as a table, CSV or JSON (DESIGN.md §4)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.db import create_engine, make_sessionmaker, utcnow
from bot.kpi import DAY_METRICS, RATIOS, DayKpis, daily_kpis, local_today
from bot.models import Chat, ChatMigration

COLUMNS = ["date", *DAY_METRICS, "partial"]


async def export(
    url: str, chat_id: int, *, days: int, end: date | None, fmt: str, now: Any = None
) -> str:
    """The last `days` days up to `end` (default: the chat's today, so far), oldest first."""
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
            rows = await daily_kpis(
                session, chat.id, last - timedelta(days=days - 1), last, today=today, tz=tz
            )
    finally:
        await engine.dispose()
    return render(rows, fmt)


def render(rows: list[DayKpis], fmt: str) -> str:
    records = [row.as_dict() for row in rows]
    if fmt == "json":
        return json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({k: "" if v is None else v for k, v in record.items()})
        return buffer.getvalue()
    return _table(records)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if key in RATIOS:
        return f"{value * 100:.1f}%"
    if key == "partial":
        return "partial" if value else ""
    return str(value)


def _table(records: list[dict[str, Any]]) -> str:
    headers = [c.replace("retention_", "ret_") for c in COLUMNS]
    body = [[_cell(key, record[key]) for key in COLUMNS] for record in records]
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    return "\n".join(lines) + "\n"
