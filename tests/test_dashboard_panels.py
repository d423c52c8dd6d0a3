"""The overview's growth panels: activity heat map, member segments, joins by source.

One small history in Asia/Shanghai (UTC+8), fed through the real bot; the figures are worked
out by hand below and must equal both the features' own functions and what the page shows.

Days are numbered from D0 = Monday 2026-11-02; today = day 22 (Tuesday), 12:00 local.
Every member message is sent at 12:00 UTC = 20:00 local, every join at 02:00 UTC = 10:00.

    Ada (admin)  3 commands on day 0 at 01:00 UTC = 09:00 local (they count as messages)
    u1  joins day 0 via link "poster"; writes on days 1, 16, 18, 19, 21
    u2  joins day 1 via "poster"; writes on day 10
    u3  joins day 2 via link "<i>ads</i>&co" (operator text); writes on day 3; leaves day 5
    u4  joins day 3 directly; never writes
    u6  added by u2 on day 12; writes on days 12 and 13
    u5  joins day 18 via "poster"; writes on day 19
"""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from html import unescape
from zoneinfo import ZoneInfo

import pytest

from bot import dashboard as data
from bot.heatmap import default_window, heatmap
from bot.invites import joins_by_source
from bot.segments import segment_counts
from bot.web.charts import overview_figures
from tests import factories as f
from tests.conftest import both_databases
from tests.dashboard_support import PREFIX, client, tma
from tests.test_invites import ADMIN, CHAT_ID, GROUP, add_bot, at, joined, left, link_url, say

SHANGHAI = ZoneInfo("Asia/Shanghai")
D0 = date(2026, 11, 2)
TODAY = 22
ADS = "<i>ads</i>&co"
U = {n: f.user(100 + n, f"U{n}") for n in range(1, 7)}
WRITES = {1: [1, 16, 18, 19, 21], 2: [10], 3: [3], 5: [19], 6: [12, 13]}


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"dashboard_url": "https://dash.example.com/dash"})


def day(n: int) -> date:
    return D0 + timedelta(days=n)


async def feed_history(tg) -> None:
    await add_bot(tg)
    tg.clock.set(at(0, 1))
    await say(tg, ADMIN, "/settimezone Asia/Shanghai", at(0, 1, 0))
    await say(tg, ADMIN, "/invite poster", at(0, 1, 1))
    await say(tg, ADMIN, f"/invite {ADS}", at(0, 1, 2))
    poster, ads = await link_url(tg, "poster"), await link_url(tg, ADS)
    events = [
        (at(0, 2), joined(U[1], at(0, 2), poster)),
        (at(1, 2), joined(U[2], at(1, 2), poster)),
        (at(2, 2), joined(U[3], at(2, 2), ads)),
        (at(3, 2), joined(U[4], at(3, 2))),
        (at(5, 2), left(U[3], at(5, 2))),
        (at(12, 2), joined(U[6], at(12, 2), actor=U[2])),
        (at(18, 2), joined(U[5], at(18, 2), poster)),
    ]
    for n, days in WRITES.items():
        events += [(at(d), f.message(GROUP, U[n], "hi", date=at(d))) for d in days]
    for when, update in sorted(events, key=lambda e: e[0]):
        tg.clock.set(when)
        await tg.feed(update)
    await tg.flush()
    tg.clock.set(at(TODAY, 4))  # 12:00 in Shanghai


# --- worked out by hand ------------------------------------------------------------------------

# Heat map: the 28 local days before today, days -6..21 (2026-10-27 – 2026-11-23). Weekday of
# day n = n mod 7 (0 = Monday). At 20:00: Mon day 21 (u1); Tue day 1 (u1); Wed day 16 (u1);
# Thu days 3 (u3) and 10 (u2); Fri day 18 (u1); Sat days 12 (u6) and 19 (u1, u5); Sun day 13
# (u6). At 09:00 Monday: Ada's three commands. In UTC these would sit at 12:00 and 01:00.
HEAT_CELLS = {
    (0, 20): 1,
    (1, 20): 1,
    (2, 20): 1,
    (3, 20): 2,
    (4, 20): 1,
    (5, 20): 3,
    (6, 20): 1,
    (0, 9): 3,
}
# Segments on day 22 (window of "new": days 16..22; core: active on 4 of days 16..22; casual:
# active on days 9..22; at risk: silent since, active on days -21..8):
#   u1 core (16, 18, 19, 21); u2 casual (10); u6 casual (12, 13); u5 new (day 18);
#   Ada at risk (day 0); u4 dormant (never active); u3 left.
# On day 15 (new: 9..15; core: 9..15; casual: 2..15; at risk: -28..1):
#   u6 new (day 12); u2 casual (10); u1 at risk (day 1); Ada at risk (day 0); u4 dormant;
#   u5 had not joined; u3 left.
SEGMENTS_NOW = {"new": 1, "core": 1, "casual": 2, "at_risk": 1, "dormant": 1}
SEGMENTS_WEEK_AGO = {"new": 1, "core": 0, "casual": 1, "at_risk": 2, "dormant": 1}
# Joins of days -7..22, 6 in all. D7 of a join on J: active on any of J+1..J+7, measurable when
# J+7 < 22. Still active: in the group now and active on days 16..22.
#   poster: u1 (day 0; active 1 → kept), u2 (day 1; 2..8 silent), u5 (day 18, not measurable)
#           → 3 joins, 50% of all, D7 1/2, still active u1 and u5 → 2/3
#   ads:    u3 (day 2; active 3) → D7 1/1; left → still active 0/1
#   added:  u6 (day 12; active 13) → D7 1/1; last active 13 → 0/1
#   direct: u4 (day 3; never) → D7 0/1, 0/1
SOURCES = [
    ("link poster", 3, ["50%", "50%", "67%"]),
    ("link &lt;i&gt;ads&lt;/i&gt;&amp;co", 1, ["17%", "100%", "0%"]),
    ("added by members", 1, ["17%", "100%", "0%"]),
    ("direct/unknown", 1, ["17%", "0%", "0%"]),
]


def panel(html: str, name: str) -> dict:
    found = re.search(rf'id="panel-{name}" data-figure="([^"]*)"', html)
    assert found, name
    return json.loads(unescape(found.group(1)))


async def overview_page(tg, user_id: int = 10, lang: str = "en"):
    async with client(tg) as web:
        return await web.get(
            f"{PREFIX}/g/{CHAT_ID}/overview", headers=tma(user_id, tg.now(), language=lang)
        )


@both_databases
async def test_the_features_compute_the_hand_worked_figures(tg):
    await feed_history(tg)
    today = day(TODAY)
    async with tg.db() as session:
        first, last = default_window(today)
        found = await heatmap(session, CHAT_ID, SHANGHAI, first, last)
        now, before = await segment_counts(session, CHAT_ID, today, tz=SHANGHAI, today=today)
        rows = await joins_by_source(session, CHAT_ID, day(TODAY - 29), today, today=today)
    assert (first, last) == (date(2026, 10, 27), date(2026, 11, 23))
    expected = [[HEAT_CELLS.get((d, h), 0) for h in range(24)] for d in range(7)]
    assert found.grid == expected and found.total == 13
    assert (now, before) == (SEGMENTS_NOW, SEGMENTS_WEEK_AGO)
    assert [(r.key, r.joins, r.retention_d7, r.still_active_share) for r in rows] == [
        ("link:poster", 3, 0.5, 2 / 3),
        (f"link:{ADS}", 1, 1.0, 0.0),
        ("added", 1, 1.0, 0.0),
        ("direct", 1, 0.0, 0.0),
    ]


@both_databases
async def test_overview_shows_the_three_panels_with_those_figures(tg):
    await feed_history(tg)
    page = await overview_page(tg)
    assert page.status_code == 200
    html = page.text
    # After the built-in charts, in this order (campaigns would come after: none here).
    ids = re.findall(r'class="chart" id="([^"]+)"', html)
    assert ids[-3:] == ["panel-heatmap", "panel-segments", "panel-sources"]
    assert "panel-campaigns" not in ids

    heat = panel(html, "heatmap")
    (trace,) = heat["data"]
    assert trace["type"] == "heatmap"
    assert trace["y"] == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    assert trace["x"][0] == "00" and trace["x"][23] == "23" and len(trace["x"]) == 24
    assert trace["z"][5][20] == 3 and trace["z"][0][9] == 3 and trace["z"][3][20] == 2
    assert trace["z"][5][12] == 0  # 12:00 is the UTC hour, not the group's
    assert trace["z"] == [[HEAT_CELLS.get((d, h), 0) for h in range(24)] for d in range(7)]
    assert "%{z} messages" in trace["hovertemplate"]
    assert heat["layout"]["title"]["text"] == (
        "Messages by weekday and hour, 2026-10-27 – 2026-11-23 (Asia/Shanghai)"
    )

    segments = panel(html, "segments")
    before, now = segments["data"]
    assert segments["layout"]["barmode"] == "group"
    assert now["x"] == ["New", "Core", "Casual", "At risk", "Dormant"] == before["x"]
    assert now["name"] == "Today (2026-11-24)" and before["name"] == "7 days ago (2026-11-17)"
    assert now["y"] == [1, 1, 2, 1, 1] and before["y"] == [1, 0, 1, 2, 1]
    assert now["customdata"] == ["(±0)", "(▲1)", "(▲1)", "(▼1)", "(±0)"]

    sources = panel(html, "sources")
    (bars,) = sources["data"]
    assert list(zip(bars["x"], bars["y"], bars["customdata"], strict=True)) == SOURCES
    assert "D7 retention %{customdata[1]}" in bars["hovertemplate"]
    assert sources["layout"]["title"]["text"].startswith("Joins by source, last 30 days")
    # The operator's link name never reaches the page as markup.
    # (Plotly reads &lt; as a literal "<": the bar label shows the name as typed.)
    assert ADS not in html and "<i>ads" not in unescape(html)


async def test_panels_in_chinese(tg):
    await feed_history(tg)
    page = await overview_page(tg, lang="zh")
    html = page.text
    heat = panel(html, "heatmap")
    assert heat["data"][0]["y"][0] == "周一"
    assert "Asia/Shanghai" in heat["layout"]["title"]["text"]
    assert "条消息" in heat["data"][0]["hovertemplate"]
    segments = panel(html, "segments")
    assert segments["data"][1]["x"] == ["新成员", "核心成员", "普通成员", "流失预警", "沉睡成员"]
    assert segments["data"][1]["name"] == "今天（2026-11-24）"
    sources = panel(html, "sources")
    assert sources["data"][0]["x"][2:] == ["成员拉入", "直接/未知"]
    assert "7 日留存" in sources["data"][0]["hovertemplate"]


async def test_panels_follow_plotlys_schema(tg):
    import plotly.graph_objects as go

    await feed_history(tg)
    for lang in ("en", "zh"):
        async with tg.db() as session:
            view = await data.overview(
                session, CHAT_ID, now=tg.now(), tz=SHANGHAI, days=30, lang=lang
            )
        assert [name for name, _ in view.panels] == ["heatmap", "segments", "sources"]
        for _name, figure in overview_figures(view, lambda key: key):
            go.Figure(json.loads(figure))  # raises on any unknown property or bad value


async def test_a_member_gets_403_and_sees_no_panel(tg):
    await feed_history(tg)
    for user_id in (101, 5555):  # u1, a member; a stranger
        page = await overview_page(tg, user_id)
        assert page.status_code == 403
        assert "panel-" not in page.text and "poster" not in page.text


async def test_no_panels_without_data(tg):
    """A group with no messages, members or joins gets none of the three panels."""
    await add_bot(tg)
    tg.clock.set(at(TODAY, 4))
    page = await overview_page(tg)
    assert page.status_code == 200
    assert "panel-heatmap" not in page.text and "panel-sources" not in page.text
    assert "panel-segments" not in page.text
