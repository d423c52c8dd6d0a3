"""The operators' dashboard over HTTP: authentication, authorization, every page, approvals."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from html import unescape
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot import calendar as cal
from bot import dashboard_auth as auth
from tests import kpi_history as h
from tests.conftest import both_databases
from tests.dashboard_support import (
    OTHER_GROUP,
    PREFIX,
    calendar_rows,
    client,
    history,
    init_data,
    tma,
)

G = h.CHAT_ID
PAGES = ["overview", "calendar", "engagement", "members", "members.csv"]


@pytest.fixture
def settings(settings, tmp_path):
    return settings.model_copy(
        update={
            "dashboard_url": "https://dash.example.com/dash",
            "content_dir": str(tmp_path / "content"),
        }
    )


def kpi(html: str, metric: str, day: str) -> str:
    """The raw KPI value a card shows (data-raw of the card's value)."""
    card = re.search(rf'data-metric="{metric}">(.*?)</div>\s*</div>', html, re.S)
    assert card, metric
    value = re.search(rf'data-day="{day}" data-raw="([^"]*)"', card.group(1))
    assert value, (metric, day)
    return value.group(1)


# --- Mini App initData ----------------------------------------------------------------------


def test_init_data_is_checked_as_telegram_documents_it():
    """Telegram's algorithm, computed independently: HMAC key "WebAppData" over the token,
    then the sorted key=value lines (without hash)."""
    import hashlib
    import hmac
    from datetime import UTC, datetime
    from urllib.parse import parse_qsl

    now = datetime(2026, 11, 13, 12, 0, tzinfo=UTC)
    data = init_data(10, at=now - timedelta(minutes=5))
    fields = dict(parse_qsl(data))
    received = fields.pop("hash")
    check = "\n".join(f"{k}={fields[k]}" for k in sorted(fields))
    secret = hmac.new(b"WebAppData", b"123456789:TESTtokenAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "sha256")
    assert received == hmac.new(secret.digest(), check.encode(), hashlib.sha256).hexdigest()

    token = "123456789:TESTtokenAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    ok = auth.validate_init_data(data, token, now=now)
    assert ok is not None and ok.user_id == 10 and ok.via == "webapp"
    # Tampered: another user id with the old hash.
    forged = data.replace("%22id%22%3A10", "%22id%22%3A11")
    assert forged != data and auth.validate_init_data(forged, token, now=now) is None
    # Expired: signed 61 minutes ago.
    old = init_data(10, at=now - timedelta(minutes=61))
    assert auth.validate_init_data(old, token, now=now) is None
    # Signed with another bot's token.
    other = init_data(10, at=now, token="987654321:OTHERtokenBBBBBBBBBBBBBBBBBBBBBBBBBB")
    assert auth.validate_init_data(other, token, now=now) is None
    # Without a hash, or garbage.
    assert auth.validate_init_data(re.sub(r"&?hash=\w+", "", data), token, now=now) is None
    assert auth.validate_init_data("%%%", token, now=now) is None


@both_databases
async def test_init_data_valid_tampered_expired_and_other_bot(tg):
    await history(tg)
    now = tg.now()
    async with client(tg) as web:
        url = f"{PREFIX}/g/{G}/overview"
        ok = await web.get(url, headers=tma(10, now - timedelta(minutes=59)))
        assert ok.status_code == 200 and "KPI &lt;i&gt;Group&lt;/i&gt;" in ok.text
        forged = init_data(10, at=now).replace("Ada", "Eve")
        for headers in (
            {"Authorization": "tma " + forged},
            tma(10, now - timedelta(minutes=61)),
            tma(10, now, token="987654321:OTHERtokenBBBBBBBBBBBBBBBBBBBBBBBBBB"),
            {"Authorization": "Bearer x"},
            {},
        ):
            denied = await web.get(url, headers=headers)
            assert denied.status_code == 403, headers
            assert "KPI" not in denied.text and "Ann" not in denied.text


# --- browser sign-in links ------------------------------------------------------------------


async def test_sign_in_link_works_once_and_expires(tg):
    await history(tg)
    async with tg.services.db.begin() as session:
        token = await auth.create_login(session, user_id=10, chat_id=G, now=tg.now())
        late = await auth.create_login(session, user_id=10, chat_id=G, now=tg.now())
    async with tg.services.db() as session:
        stored = list(await session.scalars(select(auth.DashboardLogin.token_hash)))
    assert token not in stored and len(stored) == 2  # only hashes are kept
    async with client(tg) as web:
        # Opening the link (or a link preview fetching it) uses nothing up.
        form = await web.get(f"{PREFIX}/login", params={"token": token})
        assert form.status_code == 200 and 'id="sign-in"' in form.text
        signed = await web.post(f"{PREFIX}/login", data={"token": token})
        assert signed.status_code == 303
        assert signed.headers["location"] == f"{PREFIX}/g/{G}/overview"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" in cookie
        assert f"Path={PREFIX}" in cookie
        page = await web.get(f"{PREFIX}/g/{G}/overview")
        assert page.status_code == 200 and "Daily active" in page.text
        web.cookies.clear()
        again = await web.post(f"{PREFIX}/login", data={"token": token})
        assert again.status_code == 403 and "set-cookie" not in again.headers
        assert (await web.get(f"{PREFIX}/g/{G}/overview")).status_code == 403
        tg.clock.advance(minutes=10, seconds=1)
        expired = await web.post(f"{PREFIX}/login", data={"token": late})
        assert expired.status_code == 403
        assert (await web.post(f"{PREFIX}/login", data={"token": "nonsense"})).status_code == 403


@both_databases
async def test_two_concurrent_sign_ins_with_one_link_only_one_succeeds(tg):
    import asyncio

    await history(tg)
    async with tg.services.db.begin() as session:
        token = await auth.create_login(session, user_id=10, chat_id=G, now=tg.now())

    async def redeem():
        async with tg.services.db.begin() as session:
            return await auth.redeem_login(session, token, now=tg.now())

    results = await asyncio.gather(*(redeem() for _ in range(5)))
    assert sorted(results, key=lambda r: r is None) == [(10, G)] + [None] * 4


async def test_session_cookie_forged_or_expired_is_refused(tg):
    await history(tg)
    now = tg.now()
    token = tg.app.bot.token
    good = auth.make_session(10, token, now=now)
    user, expires, nonce, signature = good.split(".")
    async with client(tg) as web:
        url = f"{PREFIX}/g/{G}/overview"
        web.cookies.set(auth.SESSION_COOKIE, good)
        assert (await web.get(url)).status_code == 200
        for cookie in (
            f"101.{expires}.{nonce}.{signature}",  # another user, same signature
            f"{user}.{int(expires) + 3600}.{nonce}.{signature}",  # stretched expiry
            auth.make_session(10, "987654321:OTHERtokenBBBBBBBBBBBBBBBBBBBBBBBBBB", now=now),
            "garbage",
        ):
            web.cookies.set(auth.SESSION_COOKIE, cookie)
            assert (await web.get(url)).status_code == 403
        web.cookies.set(auth.SESSION_COOKIE, good)
        tg.clock.advance(hours=12, seconds=1)
        assert (await web.get(url)).status_code == 403


# --- authorization --------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
async def test_every_page_is_for_operators_of_that_group_only(tg, page):
    await history(tg)
    now = tg.now()
    async with client(tg) as web:
        ok = await web.get(f"{PREFIX}/g/{G}/{page}", headers=tma(10, now))
        assert ok.status_code == 200
        # A member of the group (Ann) and a stranger: 403, nothing of the group shown.
        for user_id in (101, 5555):
            denied = await web.get(f"{PREFIX}/g/{G}/{page}", headers=tma(user_id, now))
            assert denied.status_code == 403
            assert "KPI" not in denied.text and "Ann" not in denied.text
        # Ada asking for a group she does not operate (the bot is there), or an unknown one.
        for chat_id in (OTHER_GROUP, -100999, "abc"):
            other = await web.get(f"{PREFIX}/g/{chat_id}/{page}", headers=tma(10, now))
            assert other.status_code in (403, 404)
            assert "Other" not in other.text
        # The owner (BOT_OWNERS) may see any group.
        owner = await web.get(f"{PREFIX}/g/{OTHER_GROUP}/{page}", headers=tma(424242, now))
        assert owner.status_code == 200


async def test_a_demoted_admin_loses_access_at_once(tg):
    await history(tg)
    cookie = auth.make_session(10, tg.app.bot.token, now=tg.now())
    async with client(tg, cookies={auth.SESSION_COOKIE: cookie}) as web:
        assert (await web.get(f"{PREFIX}/g/{G}/members")).status_code == 200
        await tg.feed(
            h.f.chat_member(h.GROUP, h.ADMIN, h.ADMIN, "administrator", "member", date=tg.now())
        )
        assert (await web.get(f"{PREFIX}/g/{G}/members")).status_code == 403


async def test_home_lists_only_the_groups_one_operates(tg):
    await history(tg)
    # How an operator gets there: /dashboard in the group (which also caches the admins).
    await tg.feed(h.f.message(h.GROUP, h.ADMIN, "/dashboard", date=tg.now()))
    async with client(tg) as web:
        home = await web.get(f"{PREFIX}/", headers=tma(10, tg.now()))
        assert home.status_code == 200
        assert f"/g/{G}/overview" in home.text and str(OTHER_GROUP) not in home.text
        owner = await web.get(f"{PREFIX}/", headers=tma(424242, tg.now()))
        assert f"/g/{G}/overview" in owner.text and f"/g/{OTHER_GROUP}/overview" in owner.text
        assert (await web.get(f"{PREFIX}/")).status_code == 403


# --- pages ----------------------------------------------------------------------------------


@both_databases
async def test_overview_shows_the_kpis_of_the_database_and_the_charts(tg):
    await history(tg)
    async with tg.services.db.begin() as session:
        from bot.kpi import set_target

        await set_target(session, G, "dau", 2, by=10, now=tg.now())
    async with client(tg) as web:
        page = await web.get(f"{PREFIX}/g/{G}/overview", headers=tma(10, tg.now()))
    html = page.text
    assert page.status_code == 200
    # Day 10 (yesterday) and day 11 (today), worked out in tests/kpi_history.py.
    assert kpi(html, "messages", "yesterday") == "1" and kpi(html, "messages", "today") == "0"
    assert kpi(html, "dau", "yesterday") == "1" and kpi(html, "dau", "today") == "0"
    assert kpi(html, "wau", "yesterday") == "4" and kpi(html, "wau", "today") == "4"
    assert kpi(html, "mau", "yesterday") == "5" and kpi(html, "mau", "today") == "5"
    assert kpi(html, "participation", "yesterday") == "1.0"
    # Change: DAU 1 yesterday vs 2 the day before (day 9): −50%; target 2 → 50%.
    dau = re.search(r'data-metric="dau">(.*?)</div>\s*</div>', html, re.S).group(1)
    assert "−50%" in dau and "Target 2" in dau and "50%" in dau
    for chart in ("active", "messages", "members", "checkins", "participation", "retention"):
        assert f'id="chart-{chart}"' in html
    # Plotly is served from the package, not a CDN.
    assert f'src="{PREFIX}/static/plotly.min.js"' in html and "cdn" not in html.lower()
    figure = unescape(re.search(r'id="chart-active" data-figure="([^"]*)"', html).group(1))
    assert '"2026-11-12"' in figure and "rangeslider" in figure


async def test_retention_grid_by_join_week(tg):
    from bot.dashboard import cohort_weeks

    await history(tg)
    tg.clock.set(h.at(40, 12))
    async with tg.services.db() as session:
        weeks = await cohort_weeks(session, G, h.day(40))
    # Joins: B, C day 0 and D day 2 (week of 2026-11-02); E, F day 7 (week of 2026-11-09).
    first, second = weeks
    assert (first.start, first.size, second.start, second.size) == (h.day(0), 3, h.day(7), 2)
    # Week +1 (days 1..7 after each join): B (day 1), D (day 3) yes, C no → 2/3; E yes → 1/2.
    assert first.rates[0] == pytest.approx(2 / 3) and second.rates[0] == 0.5
    # Week +2 (days 8..14 after): B (day 10) and C (day 8) → 2/3; D (days 10..16): no.
    assert first.rates[1] == pytest.approx(2 / 3)
    # E (days 15..21 after day 7 = days 15..21): nobody → 0.
    assert second.rates[1] == 0.0
    # Not over yet at today: None. Day 40: week +6 of the first cohort ends on day 2+42 = 44.
    assert first.rates[5] is None and first.rates[4] is not None


async def test_growth_panels_render_only_when_registered(tg, monkeypatch):
    from bot import dashboard as data

    await history(tg)
    monkeypatch.setattr(
        data, "PANELS", {}
    )  # none registered (the real ones: test_dashboard_panels)
    async with client(tg) as web:
        page = await web.get(f"{PREFIX}/g/{G}/overview", headers=tma(10, tg.now()))
        assert "panel-" not in page.text

        async def heat(session, chat_id, today, tz, lang):
            return {"data": [{"type": "heatmap", "z": [[1, 2]]}], "layout": {"title": "Heat"}}

        async def nothing(session, chat_id, today, tz, lang):
            return None

        monkeypatch.setitem(data.PANELS, "heat", heat)
        monkeypatch.setitem(data.PANELS, "empty", nothing)
        page = await web.get(f"{PREFIX}/g/{G}/overview", headers=tma(10, tg.now()))
        assert 'id="panel-heat"' in page.text and "panel-empty" not in page.text


async def test_calendar_month_and_week_with_status_and_preview(tg):
    await history(tg)
    ids = await calendar_rows(tg)
    headers = tma(10, tg.now())
    async with client(tg) as web:
        month = await web.get(f"{PREFIX}/g/{G}/calendar", headers=headers)
        week = await web.get(
            f"{PREFIX}/g/{G}/calendar",
            params={"view": "week", "date": "2026-11-12"},
            headers=headers,
        )
    html = month.text
    assert month.status_code == week.status_code == 200
    assert "2026-11-01 – 2026-11-30" in html
    statuses = dict(re.findall(r'id="delivery-(\d+)" data-status="(\w+)"', html))
    assert statuses == {
        str(ids["broken"]): "failed",
        str(ids["news"]): "sent",
        str(ids["launch"]): "awaiting_approval",
    }
    # The preview is plain, escaped text: no markup of the post reaches the page.
    assert "Weekly news &amp; notes" in html and "<script>x" not in html
    assert "Launch day x" in html
    assert f'id="approve-{ids["launch"]}"' in html and f'id="approve-{ids["news"]}"' not in html
    assert "bot was kicked" in html
    # The week of 2026-11-09..15 holds all three.
    assert "2026-11-09 – 2026-11-15" in week.text
    assert len(re.findall(r'class="delivery"', week.text)) == 3


async def test_calendar_shows_occurrences_beyond_the_planned_rows(tg):
    from schedules import calendar as publishing
    from tests.calendar_support import write_calendar

    await history(tg)  # today: Friday 2026-11-13, 12:00 UTC
    write_calendar(
        tg,
        f"""
        timezone: UTC
        targets: {{main: {G}}}
        posts:
          - {{id: tip, to: main, every: day at 09:00, text: "Tip <b>of</b> the day"}}
          - {{id: elsewhere, to: -1001000000999, every: day at 10:00, text: Other}}
        """,
    )
    await publishing.on_startup(tg.app)  # plans rows 48 h ahead: the 14th and 15th
    async with tg.services.db() as session:
        rows = list(await session.scalars(select(cal.CalendarDelivery)))
    assert sorted(r.due_at.day for r in rows if r.chat_id == G) == [14, 15]
    async with client(tg) as web:
        page = await web.get(
            f"{PREFIX}/g/{G}/calendar",
            params={"view": "week", "date": "2026-11-16"},
            headers=tma(10, tg.now()),
        )
        month = await web.get(f"{PREFIX}/g/{G}/calendar", headers=tma(10, tg.now()))
    # Week of 16..22: no rows yet, seven planned occurrences at 09:00, none of the other group.
    planned = re.findall(r'id="delivery-p-tip-(\d+)" data-status="planned"', page.text)
    assert len(planned) == 7 and "Other" not in page.text
    assert "Tip of the day" in page.text
    # The month: the rows of the 14th and 15th (pending), then planned from the 16th to the 30th.
    statuses = re.findall(r'class="delivery" id="delivery-[^"]+" data-status="(\w+)"', month.text)
    assert statuses == ["pending", "pending"] + ["planned"] * 15


async def test_calendar_shows_local_media_through_a_signed_link(tg):
    from pathlib import Path

    from schedules import calendar as publishing
    from tests.calendar_support import write_calendar

    await history(tg)
    folder = Path(tg.services.settings.content_dir)
    (folder / "media").mkdir(parents=True)
    (folder / "media" / "hello.png").write_bytes(b"\x89PNG fake but non-empty")
    write_calendar(
        tg,
        f"""
        targets: {{main: {G}}}
        posts:
          - {{id: pic, to: main, at: "2026-11-14 09:00", photo: media/hello.png, caption: Hi}}
          - {{id: remote, to: main, at: "2026-11-14 10:00", document: https://example.com/a.pdf}}
        """,
    )
    await publishing.on_startup(tg.app)
    async with client(tg) as web:
        page = await web.get(f"{PREFIX}/g/{G}/calendar", headers=tma(10, tg.now()))
        src = unescape(re.search(r'<img class="media" src="([^"]+)"', page.text).group(1))
        assert "https://example.com/a.pdf" in page.text  # a remote file: its address only
        image = await web.get(src)  # no Authorization: an <img> cannot send it
        assert image.status_code == 200 and image.content == b"\x89PNG fake but non-empty"
        assert image.headers["content-type"] == "image/png"
        for bad in (src.replace("sig=", "sig=0"), re.sub(r"exp=\d+", "exp=9999999999", src)):
            assert (await web.get(bad)).status_code == 403
        tg.clock.advance(hours=1, seconds=1)
        assert (await web.get(src)).status_code == 403  # expired


async def test_engagement_shows_lotteries_polls_and_the_checkin_leaderboard(tg):
    from bot.lottery import Lottery

    await history(tg)
    now = tg.now()
    command = "/lottery Gift <box> | winners 1 | draw at 2 entries"
    await tg.feed(h.f.message(h.GROUP, h.ADMIN, command, date=now))
    async with tg.services.db() as session:
        lottery = (await session.scalars(select(Lottery))).one()
    # Ann and Ben enter with the button: the second entry draws.
    for member in (h.A, h.B):
        await tg.feed(h.f.callback(member, f"lottery:join:{lottery.id}", chat=h.GROUP, date=now))
    await tg.feed(h.f.message(h.GROUP, h.ADMIN, "/poll Lunch? | Noodles | Rice", date=now))
    poll_id = tg.api.of("sendPoll")[-1]
    await tg.feed(h.f.message(h.GROUP, h.E, "/checkin", date=now))
    tg.clock.advance(minutes=1)
    await tg.feed(h.f.message(h.GROUP, h.C, "/checkin", date=tg.now()))
    async with client(tg) as web:
        page = await web.get(f"{PREFIX}/g/{G}/engagement", headers=tma(10, now))
    html = page.text
    assert page.status_code == 200 and poll_id
    assert "Gift &lt;box&gt; · drawn" in html and "2 entrants" in html
    assert lottery.commitment in html and lottery.seed in html
    assert "Verified: the seed matches" in html
    winners = re.search(r"Winners: ([^<]*)</p>", html).group(1)
    assert winners in ("Ann &lt;b&gt;", "Ben")
    assert "Lunch?" in html and "Noodles" in html and "Rice" in html
    board = re.search(r"<caption>All time</caption>(.*?)</table>", html, re.S).group(1)
    # One check-in each today; ties go to whoever finished first (Eve).
    assert re.findall(r'<td>(\w+)</td><td class="num">(\d+)</td>', board) == [
        ("Eve", "1"),
        ("Cai", "1"),
    ]


async def test_members_roster_search_and_csv(tg):
    await history(tg)
    async with tg.services.db.begin() as session:
        from bot.moderation import add_warning
        from bot.points import award

        await award(
            session,
            chat_id=G,
            user_id=102,
            amount=30,
            reason="t",
            source="grant",
            source_key="1",
            now=tg.now(),
        )
        await add_warning(session, chat_id=G, user_id=102, reason="spam", by=10, now=tg.now())
    headers = tma(10, tg.now())
    async with client(tg) as web:
        page = await web.get(f"{PREFIX}/g/{G}/members", headers=headers)
        found = await web.get(f"{PREFIX}/g/{G}/members", params={"q": "be"}, headers=headers)
        by_id = await web.get(f"{PREFIX}/g/{G}/members", params={"q": "103"}, headers=headers)
        none = await web.get(f"{PREFIX}/g/{G}/members", params={"q": "%"}, headers=headers)
        export = await web.get(f"{PREFIX}/g/{G}/members.csv", headers=headers)
    rows = re.findall(r'<tr data-user="(\d+)">', page.text)
    assert set(rows) == {"101", "102", "103", "104", "105", "106"}
    assert "Ann &lt;b&gt;" in page.text and "<b>" not in page.text.split("<tbody>")[1]
    assert re.findall(r'<tr data-user="(\d+)">', found.text) == ["102"]
    ben = re.search(r'<tr data-user="102">(.*?)</tr>', page.text, re.S).group(1)
    assert re.findall(r'<td class="num">(\d+)</td>', ben) == ["4", "30", "1"]  # msgs, pts, warns
    assert re.findall(r'<tr data-user="(\d+)">', by_id.text) == ["103"]
    assert re.findall(r'<tr data-user="(\d+)">', none.text) == []  # % is literal, not a wildcard
    assert export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(export.text.lstrip("\ufeff"))))
    assert {r["user_id"] for r in table} == {"101", "102", "103", "104", "105", "106"}
    ben_row = next(r for r in table if r["user_id"] == "102")
    assert (ben_row["name"], ben_row["points"], ben_row["warnings"]) == ("Ben", "30", "1")
    assert next(r for r in table if r["user_id"] == "104")["status"] == "left"


# --- approve / reject -----------------------------------------------------------------------


def _form(html: str, delivery_id: int) -> dict[str, str]:
    article = re.search(rf'id="delivery-{delivery_id}"(.*?)</article>', html, re.S).group(1)
    return dict(re.findall(r'name="(\w+)" value="([^"]*)"', article))


@both_databases
async def test_approve_from_the_calendar_page(tg, caplog):
    await history(tg)
    ids = await calendar_rows(tg)
    headers = tma(10, tg.now())
    url = f"{PREFIX}/g/{G}/calendar"
    async with client(tg) as web:
        page = await web.get(url, headers=headers)
        form = _form(page.text, ids["launch"])
        assert form["approval_id"] == str(ids["approval"])
        # Without the CSRF token, or with another session's: refused, nothing changes.
        for csrf in ("", "0" * 64):
            bad = await web.post(
                f"{url}/decide", data={**form, "csrf": csrf, "action": "approve"}, headers=headers
            )
            assert bad.status_code == 403
        # A member cannot, even with a token from the page.
        member = await web.post(
            f"{url}/decide", data={**form, "action": "approve"}, headers=tma(101, tg.now())
        )
        assert member.status_code == 403
        async with tg.services.db() as session:
            assert (await session.get(cal.CalendarApproval, ids["approval"])).state == "pending"
        with caplog.at_level("INFO", logger="bot.calendar_decisions"):
            done = await web.post(
                f"{url}/decide", data={**form, "action": "approve"}, headers=headers
            )
        assert done.status_code == 303 and "notice=approved" in done.headers["location"]
        after = await web.get(done.headers["location"], headers=headers)
        assert 'id="notice"' in after.text and f'id="approve-{ids["launch"]}"' not in after.text
        # Pressing again (an old page): nothing changes, says so.
        again = await web.post(f"{url}/decide", data={**form, "action": "reject"}, headers=headers)
        assert "notice=stale" in again.headers["location"]
    async with tg.services.db() as session:
        approval = await session.get(cal.CalendarApproval, ids["approval"])
        delivery = await session.get(cal.CalendarDelivery, ids["launch"])
    assert (approval.state, approval.decided_by) == ("approved", 10)
    assert delivery.state == cal.PENDING
    assert any("approved by user 10 via dashboard" in r.getMessage() for r in caplog.records)


async def test_reject_from_the_page_skips_the_delivery_and_other_groups_cannot(tg):
    await history(tg)
    ids = await calendar_rows(tg)
    url = f"{PREFIX}/g/{G}/calendar"
    async with client(tg) as web:
        form = _form((await web.get(url, headers=tma(10, tg.now()))).text, ids["launch"])
        # Otto operates the other group only: through his group's URL the approval is not his.
        otto = tma(77, tg.now(), name="Otto")
        other = await web.get(f"{PREFIX}/g/{OTHER_GROUP}/calendar", headers=otto)
        csrf = re.search(r'name="csrf" value="(\w+)"', other.text)
        assert other.status_code == 200 and csrf is None  # no post there, no form
        from bot.dashboard_auth import csrf_token, validate_init_data

        identity = validate_init_data(otto["Authorization"][4:], tg.app.bot.token, now=tg.now())
        forged = {**form, "csrf": csrf_token(identity, tg.app.bot.token), "action": "reject"}
        other_url = f"{PREFIX}/g/{OTHER_GROUP}/calendar/decide"
        denied = await web.post(other_url, data=forged, headers=otto)
        assert denied.status_code == 403
        done = await web.post(
            f"{url}/decide", data={**form, "action": "reject"}, headers=tma(10, tg.now())
        )
        assert "notice=rejected" in done.headers["location"]
    async with tg.services.db() as session:
        delivery = await session.get(cal.CalendarDelivery, ids["launch"])
    assert delivery.state == cal.SKIPPED and delivery.error == "rejected by 10"


# --- /dashboard -----------------------------------------------------------------------------


def _buttons(call) -> list[dict]:
    return [b for row in call.params["reply_markup"]["inline_keyboard"] for b in row]


async def test_dashboard_command_in_the_group_links_to_the_private_chat(tg):
    await history(tg)
    await tg.feed(h.f.message(h.GROUP, h.ADMIN, "/dashboard", date=tg.now()))
    call = tg.api.of("sendMessage")[-1]
    assert call.params["chat_id"] == G and "private chat" in call.params["text"]
    (button,) = _buttons(call)
    assert button["url"] == f"https://t.me/community_test_bot?start=dashboard_{G}"
    assert "web_app" not in button  # Telegram refuses web_app buttons in groups
    # A member gets the usual refusal, no link.
    tg.api.clear()
    await tg.feed(h.f.message(h.GROUP, h.A, "/dashboard", date=tg.now()))
    assert "reply_markup" not in tg.api.of("sendMessage")[-1].params


async def test_deep_link_answers_with_the_mini_app_button_and_a_working_sign_in_link(tg):
    await history(tg)
    private = h.f.private(h.ADMIN)
    await tg.feed(h.f.message(private, h.ADMIN, f"/start dashboard_{G}", date=tg.now()))
    call = tg.api.of("sendMessage")[-1]
    assert call.params["chat_id"] == h.ADMIN["id"]
    assert "KPI &lt;i&gt;Group&lt;/i&gt;" in call.params["text"]
    app_button, browser = _buttons(call)
    assert app_button["web_app"] == {"url": f"https://dash.example.com/dash/tma?chat={G}"}
    link = browser["url"]
    assert link.startswith("https://dash.example.com/dash/login?token=")
    token = link.split("token=")[1].split("&")[0]
    assert link.endswith("&lang=en")
    async with client(tg) as web:
        shell = await web.get(f"{PREFIX}/tma", params={"chat": G})
        assert shell.status_code == 200 and f'data-target="{PREFIX}/g/{G}/overview"' in shell.text
        assert "KPI" not in shell.text  # the shell carries no data
        for odd in ("--5", "x", "<b>"):
            other = await web.get(f"{PREFIX}/tma", params={"chat": odd, "page": "<i>"})
            assert other.status_code == 200 and f'data-target="{PREFIX}/"' in other.text
        signed = await web.post(f"{PREFIX}/login", data={"token": token})
        assert signed.status_code == 303
        assert (await web.get(signed.headers["location"])).status_code == 200
    # A member following the group's link gets no button.
    tg.api.clear()
    await tg.feed(h.f.message(h.f.private(h.A), h.A, f"/start dashboard_{G}", date=tg.now()))
    call = tg.api.of("sendMessage")[-1]
    assert "Only operators" in call.params["text"] and "reply_markup" not in call.params


async def test_dashboard_command_in_private_with_a_picked_group(tg):
    await history(tg)
    async with tg.services.db.begin() as session:
        from bot.models import UserProfile

        session.add(UserProfile(user_id=10, first_name="Ada", language="zh", connected_chat_id=G))
    await tg.feed(h.f.message(h.f.private(h.ADMIN), h.ADMIN, "/dashboard", date=tg.now()))
    call = tg.api.of("sendMessage")[-1]
    assert "运营看板" in call.params["text"]
    app_button, browser = _buttons(call)
    assert app_button["text"] == "📊 打开看板" and "web_app" in app_button
    assert browser["url"].endswith("&lang=zh")
    async with client(tg) as web:
        page = await web.get(f"{PREFIX}/g/{G}/overview", headers=tma(10, tg.now()))
    assert "日活" in page.text and "概览" in page.text  # the operator's language


async def test_dashboard_off_says_how_to_turn_it_on(tg):
    tg.services.settings = tg.services.settings.model_copy(update={"dashboard_url": None})
    await history(tg)
    await tg.feed(h.f.message(h.GROUP, h.ADMIN, "/dashboard", date=tg.now()))
    text = tg.api.of("sendMessage")[-1].params["text"]
    assert "dashboard is off" in text and "DASHBOARD_URL" in text and "DASHBOARD_PORT" in text


# --- serving --------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_the_bot_process_serves_the_dashboard_on_its_port(tg):
    import httpx

    from handlers import dashboard as feature

    port = free_port()
    tg.services.settings = tg.services.settings.model_copy(update={"dashboard_port": port})
    await feature.on_startup(tg.app)
    try:
        async with httpx.AsyncClient() as web:
            js = await web.get(f"http://127.0.0.1:{port}{PREFIX}/static/plotly.min.js")
            assert js.status_code == 200 and len(js.content) > 1_000_000
            assert js.headers["content-type"].startswith("text/javascript")
            page = await web.get(f"http://127.0.0.1:{port}{PREFIX}/g/{G}/overview")
            assert page.status_code == 403
            assert "frame-ancestors" in page.headers["content-security-policy"]
        # A second server on the same port cannot bind: logged, the bot keeps running.
        from bot.web import server

        assert await server.start(tg.app) is None
    finally:
        await feature.on_shutdown(tg.app)
    async with httpx.AsyncClient() as web:
        with pytest.raises(httpx.ConnectError):
            await web.get(f"http://127.0.0.1:{port}{PREFIX}/tma")


async def test_every_overview_figure_follows_plotlys_schema(tg):
    """The figures are plain dicts (fast); Plotly's own validator must accept them."""
    import json

    import plotly.graph_objects as go

    from bot import dashboard as data
    from bot.web.charts import overview_figures

    await history(tg)
    tg.clock.set(h.at(40, 12))
    async with tg.services.db() as session:
        view = await data.overview(
            session, G, now=tg.now(), tz=ZoneInfo("UTC"), days=90, lang="zh"
        )
    figures = overview_figures(view, lambda key: key)
    # Day 40: no joins in the last 30 days and no reviewed campaign, so no such panels.
    assert [name for name, _ in figures] == [
        "chart-active",
        "chart-messages",
        "chart-members",
        "chart-checkins",
        "chart-participation",
        "chart-retention",
        "panel-heatmap",
        "panel-segments",
    ]
    for _name, figure in figures:
        go.Figure(json.loads(figure))  # raises on any unknown property or bad value


def test_dashboard_settings_are_checked():
    from pydantic import ValidationError

    from bot.settings import Settings

    base = {"_env_file": None, "bot_token": "1:x"}
    ok = Settings(**base, dashboard_port="8090", dashboard_url="https://x.example/dash/")
    assert (ok.dashboard_port, ok.dashboard_url) == (8090, "https://x.example/dash")
    assert Settings(**base, dashboard_port="", dashboard_url="").dashboard_port is None
    with pytest.raises(ValidationError, match="http"):
        Settings(**base, dashboard_url="x.example/dash")
    with pytest.raises(ValidationError, match="differ from PORT"):
        Settings(**base, dashboard_port=8080, port=8080, webhook_url="https://x.example/hook")


def test_media_files_are_served_only_from_the_content_folder(tmp_path):
    from bot.web.app import media_path

    (tmp_path / "content").mkdir()
    (tmp_path / "content" / "a.png").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("no")
    root = str(tmp_path / "content")
    assert media_path(root, "a.png") == (tmp_path / "content" / "a.png").resolve()
    assert media_path(root, "../secret.txt") is None
    assert media_path(root, str(tmp_path / "secret.txt")) is None  # absolute path
    assert media_path(root, "missing.png") is None
