"""Helpers for the dashboard tests: a small history, calendar rows, signed initData, a client."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import httpx

from bot import calendar as cal
from bot import dashboard_auth as auth
from bot.web.app import create_app
from tests import kpi_history as h
from tests.conftest import TEST_TOKEN

BASE = "https://dash.example.com"
PREFIX = "/dash"
NOW_DAY = 11  # "today" of the history: day 11 (2026-11-13), yesterday = day 10
OTHER_GROUP = -1001000000777  # a group Ada does not operate


def client(tg: Any, **kwargs: Any) -> httpx.AsyncClient:
    app = create_app(tg.services, tg.app.bot)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, **kwargs)


def init_data(
    user_id: int,
    *,
    at: datetime,
    token: str = TEST_TOKEN,
    language: str = "en",
    name: str = "Ada",
) -> str:
    user = {"id": user_id, "first_name": name, "language_code": language}
    fields = {
        "auth_date": str(int(at.timestamp())),
        "query_id": "AAHdF6IQAAAAAN0XohDhrOrc",
        "user": json.dumps(user, separators=(",", ":"), ensure_ascii=False),
    }
    return auth.sign_init_data(fields, token)


def tma(user_id: int, at: datetime, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": "tma " + init_data(user_id, at=at, **kwargs)}


async def history(tg: Any) -> None:
    """The KPI test history (tests/kpi_history.py), a second group, today = day 11."""
    await h.add_bot(tg)
    await h.feed_history(tg)
    other = {"id": OTHER_GROUP, "title": "Other <group>", "type": "supergroup"}
    await tg.feed(
        h.f.my_chat_member(other, h.f.user(77, "Otto"), "left", "administrator", date=tg.now())
    )
    tg.api.set_admins(OTHER_GROUP, h.f.user(77, "Otto"))
    tg.clock.set(h.at(NOW_DAY, 12))


async def calendar_rows(tg: Any) -> dict[str, int]:
    """Three deliveries to the history's group: sent (day 10), failed (day 9) and one waiting
    for approval (day 12, 20:00). Returns their ids and the approval's."""
    now = tg.now()
    ids: dict[str, int] = {}
    async with tg.services.db.begin() as session:
        for key, text, due, state in (
            ("news", "<b>Weekly</b> news & <i>notes</i>", h.at(10, 9), cal.SENT),
            ("broken", "Broken post", h.at(9, 9), cal.FAILED),
            ("launch", "Launch <b>day</b> <script>x</script>", h.at(12, 20), cal.PENDING),
        ):
            spec = {"key": key, "kind": "text", "content": {"text": text}, "approval": True}
            post = cal.CalendarPost(
                key=key, spec=spec, digest=f"{key}digest0001", created_at=now, updated_at=now
            )
            session.add(post)
            await session.flush()
            delivery = cal.CalendarDelivery(
                post_id=post.id,  # type: ignore[arg-type]
                chat_id=h.CHAT_ID,
                due_at=due,
                state=state,
                error="Forbidden: bot was kicked" if state == cal.FAILED else None,
                updated_at=now,
            )
            session.add(delivery)
            await session.flush()
            ids[key] = delivery.id  # type: ignore[assignment]
            if key == "launch":
                approval = cal.CalendarApproval(
                    post_id=post.id,  # type: ignore[arg-type]
                    due_at=due,
                    digest=post.digest,
                    preview_sent_at=now - timedelta(hours=1),
                )
                session.add(approval)
                await session.flush()
                ids["approval"] = approval.id  # type: ignore[assignment]
    return ids
