"""The `community-bot` command line. The only place that reads the environment."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from bot.settings import Settings

NO_TOKEN = (
    "community-bot: BOT_TOKEN is not set. Create a bot with @BotFather in Telegram "
    "(send /newbot), then run: BOT_TOKEN=123456:ABC... community-bot run"
)


EXIT_CONFLICT = 3  # another process long-polls this bot


WEBHOOK_IN_USE = (
    "a webhook is set for this bot ({url}): other processes receive its updates there. "
    "Starting long polling would delete it. Set WEBHOOK_URL to join them, or remove the "
    "webhook first (deleteWebhook) if it is stale."
)


def _webhook_in_use(settings: Settings) -> str:
    """The webhook URL Telegram has for this bot ("" if none), asked before long polling,
    whose start-up would silently delete another deployment's webhook."""
    import asyncio

    from telegram import Bot

    from bot.app import _file_base_url

    base = settings.telegram_api_base_url
    options = {"base_url": base, "base_file_url": _file_base_url(base)} if base else {}

    async def ask() -> str:
        async with Bot(settings.token or "", **options) as bot:
            return (await bot.get_webhook_info()).url or ""

    return asyncio.run(ask())


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise SystemExit(f"community-bot: invalid configuration: {problems}") from None


def cmd_run(args: argparse.Namespace) -> int:
    """Start the bot: migrate the database, then long polling (or the webhook)."""
    settings = load_settings()
    if not settings.token:
        print(NO_TOKEN, file=sys.stderr)
        return 2
    from bot.app import ALLOWED_UPDATES, build_app, webhook_options
    from bot.db import upgrade_database
    from bot.logs import setup_logging

    setup_logging(args.log_level, settings.token)
    log = logging.getLogger("community-bot")
    try:
        upgrade_database(settings.database_url)
        app = build_app(settings)
        # Start-up objects (modules, handlers, mappers) live as long as the process: keep
        # them out of the collector's full passes, which otherwise stall the event loop for
        # ~80 ms now and then (docs/load.md).
        gc.collect()
        gc.freeze()
        if settings.webhook_url:
            log.info("starting in webhook mode on port %s", settings.port)
            app.run_webhook(**webhook_options(settings), allowed_updates=ALLOWED_UPDATES)
        else:
            webhook = _webhook_in_use(settings)
            if webhook:
                print("community-bot: " + WEBHOOK_IN_USE.format(url=webhook), file=sys.stderr)
                return EXIT_CONFLICT
            log.info("starting with long polling")
            app.run_polling(allowed_updates=ALLOWED_UPDATES)
    except Exception as exc:  # logged through the redacting handlers, never printed raw
        log.critical("the bot stopped: %s", exc, exc_info=True)
        return 1
    from bot.services import services_of
    from handlers.errors import CONFLICT_MESSAGE, POLLING_CONFLICT

    conflict = services_of(app).extras.get(POLLING_CONFLICT)
    if conflict is not None:
        print("community-bot: " + CONFLICT_MESSAGE.format(error=conflict), file=sys.stderr)
        return EXIT_CONFLICT
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Apply every pending migration."""
    from bot.db import upgrade_database

    settings = load_settings()
    logging.basicConfig(level=logging.INFO)
    upgrade_database(settings.database_url)
    print("database is up to date")
    return 0


def _calendar_dir(args: argparse.Namespace) -> str:
    if getattr(args, "dir", None):
        return args.dir
    import os

    # Only CONTENT_DIR matters here: no token or database is needed to check a calendar.
    return os.environ.get("CONTENT_DIR") or load_settings().content_dir


def cmd_calendar_check(args: argparse.Namespace) -> int:
    """Validate every calendar file; each error names its file and line."""
    import bot.schema  # noqa: F401  (features register the post kinds they deliver)
    from bot.calendar_file import load_calendar

    directory = _calendar_dir(args)
    calendar = load_calendar(directory)
    for problem in calendar.problems:
        print(problem, file=sys.stderr)
    if calendar.problems:
        print(f"{len(calendar.problems)} error(s) in {directory}", file=sys.stderr)
        return 1
    print(f"OK: {len(calendar.posts)} post(s) in {len(calendar.files)} file(s) in {directory}")
    return 0


def cmd_calendar_preview(args: argparse.Namespace) -> int:
    """Print every send of the next days: local time, UTC, target and a one-line summary;
    sends in their group's quietest hours (from the bot's database, if any) are marked."""
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    import bot.schema  # noqa: F401
    from bot.calendar_file import load_calendar, preview

    directory = _calendar_dir(args)
    calendar = load_calendar(directory)
    if calendar.problems:
        for problem in calendar.problems:
            print(problem, file=sys.stderr)
        print("fix the errors above first (community-bot calendar check)", file=sys.stderr)
        return 1
    chat = None
    if args.chat:
        if args.chat in calendar.targets:
            chat = calendar.targets[args.chat]
        elif args.chat.lstrip("-").isdigit():
            chat = int(args.chat)
        else:
            print(f"unknown target alias {args.chat!r}", file=sys.stderr)
            return 2
    start = datetime.now(UTC)
    if args.start:
        try:
            start = datetime.fromisoformat(args.start)
        except ValueError:
            print(f"--from: {args.start!r} is not like 2026-12-01 00:00", file=sys.stderr)
            return 2
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    planned = preview(calendar, start, start + timedelta(days=args.days), chat=chat)
    quiet = _quiet_hours({target for _, _, target in planned}, min(start, datetime.now(UTC)))
    flagged = 0
    for moment, spec, target in planned:
        local = moment.astimezone(ZoneInfo(spec.schedule.tz))
        name = spec.names().get(target) or calendar.alias_of(target)
        flags = "".join(
            f" [{flag}]" for flag, on in (("pin", spec.pin), ("approval", spec.approval)) if on
        )
        group = quiet.get(target) if quiet else None
        if group is not None and group.is_quiet(moment):
            flagged += 1
            flags += " ⚠ quiet hour"
        print(
            f"{local:%Y-%m-%d %H:%M} {spec.schedule.tz:<16} {moment:%Y-%m-%d %H:%M}Z "
            f"{name} ({target}) {spec.key}: {spec.summary()}{flags}"
        )
    if quiet is not None:
        for target in sorted({target for _, _, target in planned}):
            group = quiet.get(target)
            if group is None or not group.cells:
                print(
                    f"quiet hours of {calendar.alias_of(target)} ({target}): not enough "
                    "messages recorded in the last 4 weeks to tell"
                )
        if flagged:
            print(
                f"⚠ {flagged} send(s) in their group's quietest hours (the lowest quarter of "
                "weekday-hours by messages over the 4 weeks before; see /heatmap)"
            )
    print(f"{len(planned)} send(s) in the {args.days} day(s) from {start:%Y-%m-%d %H:%M} UTC")
    return 0


def _quiet_hours(chat_ids: set[int], before: datetime) -> dict[int, Any] | None:
    """Each target group's quiet hours from the bot's database, or None when there is no
    database to read (the preview then works from the files alone)."""
    import asyncio
    from pathlib import Path

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from bot.db import create_engine, make_sessionmaker
    from bot.heatmap import quiet_hours

    try:
        url = Settings().database_url
    except ValidationError:
        return None
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if not path or path == ":memory:" or not Path(path).exists():
            return None  # never create an empty database just to preview

    async def read() -> dict[int, Any]:
        engine = create_engine(url)
        try:
            async with make_sessionmaker(engine)() as session:
                return await quiet_hours(session, chat_ids, before=before)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(read())
    except (SQLAlchemyError, OSError) as exc:
        print(f"quiet hours not checked: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return None


def cmd_points_audit(args: argparse.Namespace) -> int:
    """Compare every balance with the sum of its ledger rows; --fix rewrites the balances."""
    import asyncio

    from bot.db import create_engine, make_sessionmaker, utcnow
    from bot.points import audit, rebuild_balances

    settings = load_settings()

    async def run() -> int:
        engine = create_engine(settings.database_url)
        try:
            async with make_sessionmaker(engine).begin() as session:
                if args.fix:
                    problems = await rebuild_balances(session, chat_id=args.chat, now=utcnow())
                else:
                    problems = await audit(session, chat_id=args.chat)
        finally:
            await engine.dispose()
        for p in problems:
            print(f"chat {p.chat_id} user {p.user_id}: balance {p.balance}, ledger {p.ledger}")
        if not problems:
            print("every balance equals its ledger")
        elif args.fix:
            print(f"{len(problems)} balance(s) rebuilt from the ledger")
        return 1 if problems and not args.fix else 0

    return asyncio.run(run())


def cmd_lottery_verify(args: argparse.Namespace) -> int:
    """Recompute a drawn lottery from its stored entrants and revealed seed."""
    import asyncio

    from bot.db import create_engine, make_sessionmaker
    from bot.lottery import verification_report, verify

    settings = load_settings()

    async def run() -> int:
        engine = create_engine(settings.database_url)
        try:
            async with make_sessionmaker(engine)() as session:
                result = await verify(session, args.lottery_id)
        finally:
            await engine.dispose()
        if result is None:
            print(f"community-bot: no lottery #{args.lottery_id}", file=sys.stderr)
            return 2
        if not result.lottery.revealed:
            print(
                f"community-bot: lottery #{args.lottery_id} is {result.lottery.state}, "
                "not drawn yet: its seed is still secret",
                file=sys.stderr,
            )
            return 2
        print(verification_report(result))
        return 0 if result.ok else 1

    return asyncio.run(run())


def cmd_kpi(args: argparse.Namespace) -> int:
    """Print a chat's daily KPIs (DESIGN.md §4) as a table, CSV or JSON."""
    import asyncio

    from bot.kpi_export import export

    settings = load_settings()
    try:
        output = asyncio.run(
            export(
                settings.database_url,
                args.chat_id,
                days=args.days,
                end=args.end,
                fmt=args.format,
                by=args.by,
            )
        )
    except LookupError as exc:
        print(f"community-bot: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(output)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="community-bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="start the bot (applies migrations first)")
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(func=cmd_run)

    kpi = commands.add_parser("kpi", help="a group's daily KPIs from the database")
    kpi.add_argument("chat_id", type=int, metavar="CHAT_ID")
    kpi.add_argument("--days", type=_positive, default=30, help="how many days (default 30)")
    kpi.add_argument(
        "--end", type=_day, default=None, help="last day, YYYY-MM-DD (default: today, chat-local)"
    )
    kpi.add_argument("--format", choices=("table", "csv", "json"), default="table")
    kpi.add_argument(
        "--by",
        choices=("day", "source"),
        default="day",
        help="one row per day (default), or per source of the period's joins",
    )
    kpi.set_defaults(func=cmd_kpi)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)

    calendar = commands.add_parser("calendar", help="the content calendar (CONTENT_DIR)")
    calendar_commands = calendar.add_subparsers(dest="calendar_command", required=True)
    check = calendar_commands.add_parser("check", help="validate the calendar files")
    check.add_argument("dir", nargs="?", help="calendar folder (default: CONTENT_DIR)")
    check.set_defaults(func=cmd_calendar_check)
    rehearse = calendar_commands.add_parser("preview", help="what will be posted where and when")
    rehearse.add_argument("--days", type=int, default=7, help="how many days ahead (default 7)")
    rehearse.add_argument("--chat", help="only this target (alias or chat id)")
    rehearse.add_argument(
        "--from", dest="start", help="start of the window, UTC unless it has an offset"
    )
    rehearse.add_argument("--dir", help="calendar folder (default: CONTENT_DIR)")
    rehearse.set_defaults(func=cmd_calendar_preview)

    pts = commands.add_parser("points", help="the points ledger")
    pts_commands = pts.add_subparsers(dest="points_command", required=True)
    audit = pts_commands.add_parser("audit", help="check balances against the ledger")
    audit.add_argument("--chat", type=int, default=None, help="only this chat id")
    audit.add_argument("--fix", action="store_true", help="rebuild wrong balances")
    audit.set_defaults(func=cmd_points_audit)

    lottery = commands.add_parser("lottery", help="lotteries")
    lottery_commands = lottery.add_subparsers(dest="lottery_command", required=True)
    verify = lottery_commands.add_parser(
        "verify", help="recompute a draw from its entrants and revealed seed"
    )
    verify.add_argument("lottery_id", type=int, metavar="LOTTERY_ID")
    verify.set_defaults(func=cmd_lottery_verify)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 3660:
        raise argparse.ArgumentTypeError("must be between 1 and 3660")
    return value


def _day(text: str) -> object:
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("use YYYY-MM-DD") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
