"""The operators' dashboard as an ASGI app (Starlette), served by the bot process.

Every page and API call authenticates (Mini App initData in `Authorization: tma …`, or the
session cookie a one-time link set) and then asks `OperatorCheck` whether that person operates
the group in the URL — on every request, so a demoted admin loses access at once. Anything
else gets the same plain 403 page. Pages are server-rendered (Jinja2, autoescaped); charts are
Plotly figures built here and drawn by the plotly.min.js the Python package ships.

Routes (under the path of DASHBOARD_URL):
    /tma?chat=ID            the Mini App shell (no data; its script fetches pages with initData)
    /login?token=…          browser sign-in: a button that POSTs the token (link previews and
                            prefetchers cannot use it up), then a session cookie
    /                       the groups the person operates
    /g/ID/overview|calendar|engagement|members, /g/ID/members.csv
    /g/ID/calendar/decide   POST approve/reject (CSRF token)
    /static/…               plotly.min.js, the page script and style
"""

from __future__ import annotations

import asyncio
import calendar as pycalendar
import logging
import re
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

import plotly
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from telegram import Bot

from bot import dashboard as data
from bot import dashboard_auth as auth
from bot.calendar_decisions import Decision, decide_as
from bot.chats import ChatInfo
from bot.i18n import normalize_language, t
from bot.kpi import RATIOS
from bot.models import UserProfile
from bot.services import Services
from bot.web import charts

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
STATIC = {
    "plotly.min.js": (PLOTLY_JS, "text/javascript"),
    "dashboard.js": (HERE / "static" / "dashboard.js", "text/javascript"),
    "dashboard.css": (HERE / "static" / "dashboard.css", "text/css"),
}
CHAT_ID = re.compile(r"^-?\d{1,20}$")
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
PAGES = ("overview", "calendar", "engagement", "members")
# Telegram's web clients show Mini Apps in a frame.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'self' https://web.telegram.org https://*.telegram.org"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def fmt_kpi(value: float | int | None, metric: str) -> str:
    if value is None:
        return "—"
    if metric in RATIOS:
        return f"{value:.0%}"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def fmt_change(value: float | None) -> str:
    if value is None:
        return ""
    return f"+{value:.0%}" if value >= 0 else f"−{-value:.0%}"


def trend(value: float | None) -> str:
    return "" if not value else ("up" if value > 0 else "down")


def fmt_percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def fmt_local(moment: datetime | None, tz: Any) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M") if moment else ""


def media_path(content_dir: str, name: str) -> Path | None:
    """The file `name` under the content folder, if it is there (never outside it)."""
    root = Path(content_dir).resolve()
    path = (root / name).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


class Forbidden(Exception):
    """Not signed in, not an operator of this group, or a bad request token: one answer."""


class Dashboard:
    """Request handling with the bot's services (its sessionmaker, clock, operator check)."""

    def __init__(self, services: Services, bot: Bot) -> None:
        self.services = services
        self.bot = bot
        url = services.settings.dashboard_url or ""
        self.prefix = urlparse(url).path.rstrip("/")
        self.secure = url.startswith("https://")
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(kpi=fmt_kpi, change=fmt_change, trend=trend, percent=fmt_percent)
        self.env.filters["local"] = fmt_local

    @property
    def token(self) -> str:
        return self.bot.token

    # --- who is asking ------------------------------------------------------------------

    def identify(self, request: Request) -> auth.Identity | None:
        now = self.services.clock()
        header = request.headers.get("authorization", "")
        if header:
            if not header.startswith("tma "):
                return None
            return auth.validate_init_data(header[4:], self.token, now=now)
        cookie = request.cookies.get(auth.SESSION_COOKIE)
        return auth.read_session(cookie, self.token, now=now) if cookie else None

    async def language(self, identity: auth.Identity | None) -> str:
        code = identity.language_code if identity else None
        if identity is not None:
            async with self.services.db() as session:
                profile = await session.get(UserProfile, identity.user_id)
            if profile is not None:
                if profile.language:
                    return profile.language
                code = code or profile.language_code
        return normalize_language(code)

    async def guard(self, request: Request) -> tuple[auth.Identity, ChatInfo, str]:
        """The person and the group of this request, if they operate it; else Forbidden."""
        identity = self.identify(request)
        if identity is None:
            raise Forbidden
        try:
            chat_id = int(request.path_params["chat_id"])
        except (KeyError, ValueError):
            raise Forbidden from None
        info = await self.services.chats.get(chat_id)
        if info is None or not await self.services.operators.is_operator(
            self.bot, chat_id, identity.user_id
        ):
            raise Forbidden
        return identity, info, await self.language(identity)

    # --- rendering ----------------------------------------------------------------------

    def url(self, path: str, **query: Any) -> str:
        query = {k: v for k, v in query.items() if v not in (None, "")}
        return self.prefix + path + (f"?{urlencode(query)}" if query else "")

    def render(self, template: str, lang: str, status: int = 200, **context: Any) -> Response:
        def tr(key: str, **values: Any) -> str:
            return t(lang, f"dashboard.{key}", **values)

        html = self.env.get_template(template).render(
            _=tr,
            lang=lang,
            url=self.url,
            static=lambda name: self.url(f"/static/{name}"),
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def forbidden(self, lang: str = "en") -> Response:
        return self.render("forbidden.html", lang, status=403)

    def page(
        self, template: str, identity: auth.Identity, info: ChatInfo, lang: str, **context: Any
    ) -> Response:
        return self.render(
            template,
            lang,
            chat=info,
            page=template.removesuffix(".html"),
            csrf=auth.csrf_token(identity, self.token),
            **context,
        )

    # --- routes -------------------------------------------------------------------------

    async def static(self, request: Request) -> Response:
        entry = STATIC.get(request.path_params["name"])
        if entry is None:
            return PlainTextResponse("not found", status_code=404)
        path, media_type = entry
        return FileResponse(
            path,
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400", **NOSNIFF},
        )

    async def shell(self, request: Request) -> Response:
        """The Mini App's entry: no data until its script proves who it is."""
        chat = request.query_params.get("chat", "")
        page = request.query_params.get("page", "overview")
        page = page if page in PAGES else "overview"
        target = self.url(f"/g/{int(chat)}/{page}") if CHAT_ID.match(chat) else self.url("/")
        return self.render("shell.html", "en", target=target)

    async def login_form(self, request: Request) -> Response:
        token = request.query_params.get("token", "")
        lang = normalize_language(request.query_params.get("lang"))
        return self.render("login.html", lang, token=token)

    async def login(self, request: Request) -> Response:
        form = await request.form()
        token = str(form.get("token", ""))
        now = self.services.clock()
        async with self.services.db.begin() as session:
            redeemed = await auth.redeem_login(session, token, now=now)
        if redeemed is None:
            lang = normalize_language(str(form.get("lang", "")))
            return self.render("login_failed.html", lang, status=403)
        user_id, chat_id = redeemed
        log.info("dashboard: user %s signed in with a link", user_id)
        target = self.url(f"/g/{chat_id}/overview") if chat_id else self.url("/")
        response = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(
            auth.SESSION_COOKIE,
            auth.make_session(user_id, self.token, now=now),
            max_age=int(auth.SESSION_TTL.total_seconds()),
            path=self.prefix or "/",
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )
        return response

    async def home(self, request: Request) -> Response:
        identity = self.identify(request)
        if identity is None:
            return self.forbidden()
        lang = await self.language(identity)
        owner = identity.user_id in self.services.operators.owners
        async with self.services.db() as session:
            candidates = await data.candidate_groups(session, identity.user_id, owner=owner)
        groups = [
            chat
            for chat in candidates
            if await self.services.operators.is_operator(self.bot, chat.id, identity.user_id)
        ]
        return self.render("home.html", lang, groups=groups)

    async def overview(self, request: Request) -> Response:
        identity, info, lang = await self.guard(request)
        days = 90 if request.query_params.get("days") == "90" else 30
        await self.services.activity.flush()  # today's figures include the last second
        async with self.services.db() as session:
            view = await data.overview(
                session, info.id, now=self.services.clock(), tz=info.timezone, days=days, lang=lang
            )
        figures = charts.overview_figures(view, lambda key: t(lang, f"dashboard.{key}"))
        return self.page(
            "overview.html", identity, info, lang, view=view, days=days, figures=figures
        )

    async def calendar(self, request: Request) -> Response:
        identity, info, lang = await self.guard(request)
        now = self.services.clock()
        tz = info.timezone
        view = "week" if request.query_params.get("view") == "week" else "month"
        try:
            anchor = date.fromisoformat(request.query_params.get("date", ""))
        except ValueError:
            anchor = now.astimezone(tz).date()
        if view == "week":
            first = anchor - timedelta(days=anchor.weekday())
            last = first + timedelta(days=6)
            prev_anchor, next_anchor = first - timedelta(days=7), first + timedelta(days=7)
        else:
            first = anchor.replace(day=1)
            last = first.replace(day=pycalendar.monthrange(first.year, first.month)[1])
            prev_anchor = (first - timedelta(days=1)).replace(day=1)
            next_anchor = last + timedelta(days=1)
        grid_start = first - timedelta(days=first.weekday())
        grid_end = last + timedelta(days=6 - last.weekday())
        start = datetime.combine(grid_start, time(0), tzinfo=tz)
        end = datetime.combine(grid_end + timedelta(days=1), time(0), tzinfo=tz)
        async with self.services.db() as session:
            entries = await data.calendar_entries(
                session, info.id, start=start, end=end, now=now, tz=tz
            )
        by_day: dict[date, list[data.CalendarEntry]] = {}
        for entry in entries:
            by_day.setdefault(entry.due.date(), []).append(entry)
        weeks = [
            [grid_start + timedelta(days=7 * w + d) for d in range(7)]
            for w in range(((grid_end - grid_start).days + 1) // 7)
        ]
        shown = [e for e in entries if first <= e.due.date() <= last]
        expires = int((now + auth.MEDIA_TTL).timestamp())
        media = {
            e.post_id: self.url(
                f"/media/{e.post_id}",
                exp=expires,
                sig=auth.media_signature(e.post_id, expires, self.token),
            )
            for e in shown
            if e.media_local
        }
        return self.page(
            "calendar.html",
            identity,
            info,
            lang,
            view=view,
            anchor=anchor,
            first=first,
            last=last,
            weeks=weeks,
            by_day=by_day,
            entries=shown,
            decidable={e.delivery_id for e in shown if data.decidable(e, now)},
            media=media,
            prev_anchor=prev_anchor,
            next_anchor=next_anchor,
            notice=request.query_params.get("notice", ""),
        )

    async def media(self, request: Request) -> Response:
        """A calendar post's local media file, for a signed link an authorized page gave."""
        try:
            post_id = int(request.path_params["post_id"])
            expires = int(request.query_params.get("exp", ""))
        except ValueError:
            raise Forbidden from None
        signature = request.query_params.get("sig", "")
        now = self.services.clock()
        if not auth.media_ok(post_id, expires, signature, self.token, now=now):
            raise Forbidden
        async with self.services.db() as session:
            post = await session.get(data.cal.CalendarPost, post_id)
        content = (post.spec.get("content") or {}) if post else {}
        if not content.get("local") or not content.get("media"):
            raise Forbidden
        path = await asyncio.to_thread(
            media_path, self.services.settings.content_dir, str(content["media"])
        )
        if path is None:
            raise Forbidden
        return FileResponse(
            path,
            headers={"Cache-Control": "private, max-age=3600", **NOSNIFF},
        )

    async def decide(self, request: Request) -> Response:
        identity, info, lang = await self.guard(request)
        form = await request.form()
        if not auth.csrf_ok(identity, self.token, str(form.get("csrf", ""))):
            raise Forbidden
        action = str(form.get("action", ""))
        state = {"approve": "approved", "reject": "rejected"}.get(action)
        try:
            approval_id = int(str(form.get("approval_id", "")))
        except ValueError:
            state = None
        if state is None:
            return PlainTextResponse("bad request", status_code=400, headers=SECURITY_HEADERS)
        async with self.services.db() as session:
            approval = await session.get(data.cal.CalendarApproval, approval_id)
            chats = await data.cal.approval_chats(session, approval) if approval else []
        if info.id not in chats:
            raise Forbidden  # an approval of another group's post: not through this group
        decision = await decide_as(
            self.services,
            self.bot,
            approval_id=approval_id,
            digest_prefix=str(form.get("digest", "")) or "-",
            state=state,
            user_id=identity.user_id,
            via="dashboard",
        )
        if decision is Decision.NOT_ALLOWED:
            raise Forbidden
        notice = state if decision is Decision.DONE else "stale"
        back = self.url(
            f"/g/{info.id}/calendar",
            view=str(form.get("view", "")),
            date=str(form.get("date", "")),
            notice=notice,
        )
        return RedirectResponse(back, status_code=303, headers=SECURITY_HEADERS)

    async def engagement(self, request: Request) -> Response:
        identity, info, lang = await self.guard(request)
        async with self.services.db() as session:
            view = await data.engagement(
                session, info.id, now=self.services.clock(), tz=info.timezone
            )
        return self.page("engagement.html", identity, info, lang, view=view)

    async def members(self, request: Request) -> Response:
        identity, info, lang = await self.guard(request)
        query = request.query_params.get("q", "")[:100]
        try:
            page = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            page = 1
        async with self.services.db() as session:
            rows, total = await data.roster(
                session,
                info.id,
                now=self.services.clock(),
                query=query,
                offset=(page - 1) * data.ROSTER_PAGE,
            )
        pages = max(1, -(-total // data.ROSTER_PAGE))
        return self.page(
            "members.html",
            identity,
            info,
            lang,
            rows=rows,
            total=total,
            query=query,
            page_no=page,
            pages=pages,
        )

    async def members_csv(self, request: Request) -> Response:
        _identity, info, _lang = await self.guard(request)
        query = request.query_params.get("q", "")[:100]
        async with self.services.db() as session:
            rows, _ = await data.roster(
                session, info.id, now=self.services.clock(), query=query, limit=None
            )
        filename = f"members-{info.id}-{self.services.clock():%Y%m%d}.csv"
        return Response(
            "\ufeff" + data.roster_csv(rows),  # BOM: spreadsheets then read UTF-8 (Chinese names)
            media_type="text/csv; charset=utf-8",
            headers={
                **SECURITY_HEADERS,
                "Content-Disposition": f'attachment; filename="{filename}"',
            },
        )


def create_app(services: Services, bot: Bot) -> Starlette:
    """The dashboard for one bot; mounted under DASHBOARD_URL's path."""
    dash = Dashboard(services, bot)

    def guarded(endpoint: Any) -> Any:
        async def handle(request: Request) -> Response:
            try:
                return await endpoint(request)
            except Forbidden:
                return dash.forbidden(await dash.language(dash.identify(request)))

        return handle

    routes = [
        Route("/static/{name}", dash.static),
        Route("/tma", dash.shell),
        Route("/login", dash.login_form, methods=["GET"]),
        Route("/login", dash.login, methods=["POST"]),
        Route("/", guarded(dash.home)),
        Route("/g/{chat_id}/overview", guarded(dash.overview)),
        Route("/g/{chat_id}/calendar", guarded(dash.calendar)),
        Route("/g/{chat_id}/calendar/decide", guarded(dash.decide), methods=["POST"]),
        Route("/media/{post_id}", guarded(dash.media)),
        Route("/g/{chat_id}/engagement", guarded(dash.engagement)),
        Route("/g/{chat_id}/members", guarded(dash.members)),
        Route("/g/{chat_id}/members.csv", guarded(dash.members_csv)),
    ]
    app = Starlette(routes=[Mount(dash.prefix, routes=routes)] if dash.prefix else routes)
    app.state.dashboard = dash
    return app
