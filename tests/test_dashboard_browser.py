"""The dashboard in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium, against the server the bot process runs.

Signs in through a one-time link, waits for the Plotly charts, checks the KPI cards against
the database, approves a post on the calendar page; then opens the Mini App shell with signed
initData in the URL fragment (as Telegram does) and follows a link inside it. A second test
hovers the growth panels (heat map, segments, joins by source) and reads Plotly's hover text.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from bot import calendar as cal
from bot import dashboard_auth as auth
from bot import kpi
from handlers import dashboard as feature
from tests import kpi_history as h
from tests.dashboard_support import PREFIX, calendar_rows, history, init_data

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
G = h.CHAT_ID
# active, messages, members, check-ins, participation, retention, then the growth panels:
# heat map, segments, joins by source (tests/test_dashboard_panels.py)
CHARTS = 9

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(
        "headless browser test needs Debian's chromium and chromium-driver "
        "(apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(settings, port):
    return settings.model_copy(
        update={"dashboard_port": port, "dashboard_url": f"http://127.0.0.1:{port}{PREFIX}"}
    )


def browser():  # type: ignore[no-untyped-def]
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,1600")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def drive(base: str, token: str, delivery_id: int, fragment: str, shots: Path) -> dict:
    """Everything the browser does (blocking: run in a thread while the loop serves)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    def charts_drawn(driver) -> bool:  # type: ignore[no-untyped-def]
        return len(driver.find_elements(By.CSS_SELECTOR, ".chart[data-drawn] .main-svg")) >= CHARTS

    seen: dict = {}
    driver = browser()
    try:
        wait = WebDriverWait(driver, 10)
        driver.get(f"{base}/login?token={token}")
        wait.until(ec.element_to_be_clickable((By.ID, "sign-in"))).click()
        wait.until(ec.presence_of_element_located((By.ID, "kpi-cards")))
        wait.until(charts_drawn)
        seen["cards"] = {
            (card.get_attribute("data-metric"), value.get_attribute("data-day")): value.text
            for card in driver.find_elements(By.CSS_SELECTOR, ".card")
            for value in card.find_elements(By.CSS_SELECTOR, ".kpi-value")
        }
        seen["plotly"] = driver.execute_script(
            "return document.querySelectorAll('.chart .plot-container').length"
        )
        driver.save_screenshot(str(shots / "overview.png"))
        driver.find_element(By.ID, "nav-calendar").click()
        wait.until(ec.element_to_be_clickable((By.ID, f"approve-{delivery_id}"))).click()
        seen["notice"] = wait.until(ec.visibility_of_element_located((By.ID, "notice"))).text
        seen["status"] = driver.find_element(By.ID, f"delivery-{delivery_id}").get_attribute(
            "data-status"
        )
        driver.save_screenshot(str(shots / "calendar.png"))
        # The Mini App: Telegram opens the shell with initData in the fragment; the page
        # fetches every page with it (no cookie: a fresh browser profile has none).
        driver.delete_all_cookies()
        driver.get(f"{base}/tma?chat={G}#tgWebAppData={fragment}&tgWebAppVersion=8.0")
        wait.until(ec.presence_of_element_located((By.ID, "kpi-cards")))
        wait.until(charts_drawn)
        driver.find_element(By.ID, "nav-members").click()
        wait.until(ec.presence_of_element_located((By.ID, "member-search")))
        seen["mini_app_rows"] = len(driver.find_elements(By.CSS_SELECTOR, "tr[data-user]"))
        seen["mini_app_url"] = driver.current_url
        driver.save_screenshot(str(shots / "mini-app.png"))
        seen["errors"] = [
            entry["message"]
            for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" and "favicon" not in entry["message"]
        ]
    finally:
        driver.quit()
    return seen


async def test_sign_in_charts_kpis_and_approve_in_chromium(tg, tmp_path, port):
    await history(tg)
    ids = await calendar_rows(tg)
    now = tg.now()
    async with tg.services.db.begin() as session:
        token = await auth.create_login(session, user_id=10, chat_id=G, now=now)
    await feature.on_startup(tg.app)
    try:
        base = f"http://127.0.0.1:{port}{PREFIX}"
        fragment = quote(init_data(10, at=now), safe="")
        seen = await asyncio.to_thread(drive, base, token, ids["launch"], fragment, tmp_path)
    finally:
        await feature.on_shutdown(tg.app)

    # The KPI cards show the database's figures (bot.kpi, computed here independently of
    # the page) for today and yesterday.
    tz = (await tg.services.chats.get(G)).timezone
    today = kpi.local_today(now, tz)
    async with tg.services.db() as session:
        figures = {
            day: await kpi.day_snapshot(session, G, d, today=today, tz=tz)
            for day, d in (("today", today), ("yesterday", today - timedelta(days=1)))
        }
    for metric in ("messages", "dau", "wau", "mau", "joins", "leaves", "checkins"):
        for day, snap in figures.items():
            assert seen["cards"][(metric, day)] == f"{snap.get(metric):,}", (metric, day)
    assert seen["cards"][("dau", "yesterday")] == "1" and seen["cards"][("mau", "today")] == "5"
    assert seen["plotly"] == CHARTS
    # The approval went through: the page says so and the database has it.
    assert seen["notice"] == "Approved." and seen["status"] == "pending"
    async with tg.services.db() as session:
        approval = await session.get(cal.CalendarApproval, ids["approval"])
    assert (approval.state, approval.decided_by) == ("approved", 10)
    # Mini App mode: pages fetched with initData, the members page reached by a link.
    assert seen["mini_app_rows"] == 6 and seen["mini_app_url"].endswith(f"/g/{G}/members")
    assert seen["errors"] == []
    for name in ("overview.png", "calendar.png", "mini-app.png"):
        assert (tmp_path / name).stat().st_size > 10_000


def hover_panels(base: str, token: str, shots: Path) -> dict:
    """Sign in, wait for the growth panels, hover one point of each; the hover texts."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    points = {
        "heatmap": "{xval: 20, yval: 5}",  # Saturday 20:00
        "segments": "[{curveNumber: 1, pointNumber: 1}]",  # today, core
        "sources": "[{curveNumber: 0, pointNumber: 1}]",  # the second link
    }
    driver = browser()
    try:
        wait = WebDriverWait(driver, 10)
        driver.get(f"{base}/login?token={token}")
        wait.until(ec.element_to_be_clickable((By.ID, "sign-in"))).click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#panel-sources[data-drawn]")))
        seen = {}
        for name, point in points.items():
            seen[name] = driver.execute_script(
                f"var el = document.getElementById('panel-{name}');"
                f"Plotly.Fx.hover(el, {point});"
                "return el.querySelector('.hoverlayer').textContent;"
            )
        panel = driver.find_element(By.ID, "panel-sources")
        driver.execute_script("arguments[0].scrollIntoView()", panel)
        panel.screenshot(str(shots / "sources.png"))
    finally:
        driver.quit()
    return seen


async def test_growth_panels_hover_values_in_chromium(tg, tmp_path, port):
    """The history of tests/test_dashboard_panels.py: what Plotly shows on hover."""
    from tests.test_dashboard_panels import CHAT_ID, feed_history

    await feed_history(tg)
    async with tg.services.db.begin() as session:
        token = await auth.create_login(session, user_id=10, chat_id=CHAT_ID, now=tg.now())
    await feature.on_startup(tg.app)
    try:
        base = f"http://127.0.0.1:{port}{PREFIX}"
        seen = await asyncio.to_thread(hover_panels, base, token, tmp_path)
    finally:
        await feature.on_shutdown(tg.app)
    assert seen["heatmap"] == "Sat 20:00 · 3 messages"
    assert seen["segments"] == "Today (2026-11-24)Core: 1 (▲1)"  # trace name, then the bar
    # The operator's link name is shown as typed, not read as markup.
    assert seen["sources"] == (
        "link <i>ads</i>&co: 1 joins (17% of all)D7 retention 100%still active 0%"
    )
    assert (tmp_path / "sources.png").stat().st_size > 5_000
