"""The content calendar as YAML files: loading with line numbers, validation, recurrence.

`load_calendar(dir)` reads every `*.yaml`/`*.yml` file directly in CONTENT_DIR (media may live
in sub-folders, which are not read as calendars) and returns the posts plus every problem found,
each with its file and line. The format is documented in content/README.md.

Recurrence is computed on local wall-clock times in the post's time zone and converted to UTC
afterwards, so a daily 09:00 post fires at 09:00 local on both sides of a daylight-saving change,
once: a wall time skipped by the change moves forward past the gap, a repeated one fires on its
first occurrence (the same rule as bot.timeparse).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from croniter import croniter
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from bot.post_kinds import Invalid, post_kind
from bot.telegram_html import check_telegram_html
from bot.text import MAX_CAPTION_UTF16, MAX_MESSAGE_UTF16
from bot.timeparse import format_duration, local_to_utc, parse_date, parse_duration

DEFAULT_GRACE = timedelta(hours=1)
DEFAULT_REVIEW_AHEAD = timedelta(hours=12)
MIN_INTERVAL = timedelta(minutes=5)
MEDIA_KINDS = ("photo", "document", "video")
CONTENT_KINDS = ("text", *MEDIA_KINDS, "copy", "poll", "lottery")
MEDIA_LIMITS = {"photo": 10 * 1024 * 1024, "document": 50 * 1024 * 1024, "video": 50 * 1024 * 1024}
FILE_KEYS = ("timezone", "targets", "posts", "approval", "review", "grace", "enabled")
POST_KEYS = (
    "id",
    "to",
    "at",
    "cron",
    "every",
    "from",
    "until",
    "timezone",
    *CONTENT_KINDS,
    "caption",
    "buttons",
    "pin",
    "delete_after",
    "silent",
    "grace",
    "enabled",
    "approval",
)
REVIEW_KEYS = ("chat", "ahead")
COPY_KEYS = ("from", "message_id")
POLL_KEYS = ("question", "options", "anonymous", "multi", "quiz", "explanation", "close_after")
LOTTERY_KEYS = (
    "prize",
    "winners",
    "draw_after",
    "min_points",
    "checkins",
    "member",
    "joined_after",
    "keyword",
)
BUTTON_KEYS = ("text", "url")
POST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
_EVERY = re.compile(r"^(?:every\s+)?(.+?)(?:\s+at\s+(\d{1,2}[:：]\d{2}))?$", re.IGNORECASE)
_CHECKINS = re.compile(r"^\s*(\d{1,4})\s*/\s*(\d{1,4})\s*(?:d|days?)?\s*$", re.IGNORECASE)
_DATETIME = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
EPOCH = datetime(1970, 1, 1)


# --- YAML with line numbers -----------------------------------------------------------------


class LocDict(dict[Any, Any]):
    """A mapping from the YAML file that remembers where each key and value was."""

    def __init__(self) -> None:
        super().__init__()
        self.line = 0
        self.key_lines: dict[Any, int] = {}
        self.value_lines: dict[Any, int] = {}
        self.raw: dict[Any, str] = {}  # plain scalar values as written (before YAML typing)
        self.block: dict[Any, bool] = {}  # value is a literal block scalar (|)
        self.duplicates: list[tuple[Any, int]] = []

    def key_line(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)

    def value_line(self, key: Any) -> int:
        return self.value_lines.get(key, self.key_line(key))


class LocList(list[Any]):
    def __init__(self) -> None:
        super().__init__()
        self.line = 0
        self.item_lines: list[int] = []

    def item_line(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


class _Loader(yaml.SafeLoader):
    """SafeLoader keeping line numbers; dates and times stay strings (we parse them)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _Loader, node: MappingNode) -> LocDict:
    loader.flatten_mapping(node)
    data = LocDict()
    data.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain value", key_node.start_mark
            )
        if key in data:
            data.duplicates.append((key, key_node.start_mark.line + 1))
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_lines[key] = key_node.start_mark.line + 1
        data.value_lines[key] = value_node.start_mark.line + 1
        if isinstance(value_node, ScalarNode):
            if value_node.style is None:
                data.raw[key] = value_node.value
            data.block[key] = value_node.style == "|"
    return data


def _construct_sequence(loader: _Loader, node: SequenceNode) -> LocList:
    items = LocList()
    items.line = node.start_mark.line + 1
    for child in node.value:
        items.append(loader.construct_object(child, deep=True))
        items.item_lines.append(child.start_mark.line + 1)
    return items


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


# --- the calendar model ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a post goes out, in wall-clock time of `tz` (all datetimes here are naive local)."""

    tz: str
    at: datetime | None = None
    cron: str | None = None
    every: timedelta | None = None
    every_at: time | None = None
    start: datetime | None = None  # from
    end: datetime | None = None  # until (inclusive)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def describe(self) -> str:
        if self.at is not None:
            return f"at {self.at:%Y-%m-%d %H:%M}"
        if self.cron is not None:
            return f"cron {self.cron}"
        assert self.every is not None
        suffix = f" at {self.every_at:%H:%M}" if self.every_at else ""
        return f"every {format_duration(self.every)}{suffix}"

    def _local_times(self, first: datetime, last: datetime) -> Iterable[datetime]:
        """Naive local occurrences in [first, last] (wall-clock), in order."""
        if self.at is not None:
            if first <= self.at <= last:
                yield self.at
            return
        if self.cron is not None:
            iterator = croniter(self.cron, first - timedelta(seconds=1))
            while True:
                moment = iterator.get_next(datetime)
                if moment > last:
                    return
                yield moment
        assert self.every is not None
        anchor = self.start or EPOCH
        if self.every_at is not None:  # earlier ones than `from` are filtered out by `first`
            anchor = datetime.combine(anchor.date(), self.every_at)
        step = self.every
        k = max(0, math.ceil((first - anchor) / step))
        while True:
            moment = anchor + k * step
            if moment > last:
                return
            yield moment
            k += 1

    def occurrences(self, start: datetime, end: datetime, limit: int = 10_000) -> list[datetime]:
        """UTC moments in [start, end) at which the post is due."""
        zone = self.zone
        margin = timedelta(hours=3)  # DST shifts are at most a couple of hours
        first = start.astimezone(zone).replace(tzinfo=None) - margin
        last = end.astimezone(zone).replace(tzinfo=None) + margin
        if self.start is not None:
            first = max(first, self.start)
        if self.end is not None:
            last = min(last, self.end)
        found: set[datetime] = set()
        for local in self._local_times(first, last):
            moment = local_to_utc(local.date(), local.time(), zone)
            if start <= moment < end:
                found.add(moment)
                if len(found) >= limit:
                    break
        return sorted(found)

    def next_after(
        self, moment: datetime, within: timedelta = timedelta(days=400)
    ) -> datetime | None:
        """The first occurrence at or after `moment` (UTC), looking ahead at most `within`."""
        window = timedelta(days=7)
        start = moment
        while start < moment + within:
            found = self.occurrences(start, start + window, limit=1)
            if found:
                return found[0]
            start += window
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "tz": self.tz,
            "at": self.at.isoformat() if self.at else None,
            "cron": self.cron,
            "every": int(self.every.total_seconds()) if self.every else None,
            "every_at": self.every_at.strftime("%H:%M") if self.every_at else None,
            "from": self.start.isoformat() if self.start else None,
            "until": self.end.isoformat() if self.end else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Schedule:
        def dt(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        return cls(
            tz=data["tz"],
            at=dt(data.get("at")),
            cron=data.get("cron"),
            every=timedelta(seconds=data["every"]) if data.get("every") else None,
            every_at=time.fromisoformat(data["every_at"]) if data.get("every_at") else None,
            start=dt(data.get("from")),
            end=dt(data.get("until")),
        )


@dataclass(frozen=True, slots=True)
class PostSpec:
    """One post, normalized: what the database stores and the scheduler delivers."""

    key: str
    targets: tuple[int, ...]
    schedule: Schedule
    kind: str
    content: dict[str, Any]
    target_names: tuple[str, ...] = ()
    buttons: list[list[dict[str, str]]] = field(default_factory=list)
    pin: bool = False
    delete_after: int | None = None  # seconds
    silent: bool = False
    grace: int = int(DEFAULT_GRACE.total_seconds())
    enabled: bool = True
    approval: bool = False
    review_chat: int | None = None
    review_ahead: int = int(DEFAULT_REVIEW_AHEAD.total_seconds())
    file: str = ""
    line: int = 0
    media_digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "targets": list(self.targets),
            "target_names": list(self.target_names),
            "schedule": self.schedule.to_json(),
            "kind": self.kind,
            "content": self.content,
            "buttons": self.buttons,
            "pin": self.pin,
            "delete_after": self.delete_after,
            "silent": self.silent,
            "grace": self.grace,
            "enabled": self.enabled,
            "approval": self.approval,
            "review_chat": self.review_chat,
            "review_ahead": self.review_ahead,
            "file": self.file,
            "line": self.line,
            "media_digest": self.media_digest,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PostSpec:
        values = dict(data)
        values["targets"] = tuple(values["targets"])
        values["target_names"] = tuple(values.get("target_names") or ())
        values["schedule"] = Schedule.from_json(values["schedule"])
        return cls(**values)

    @property
    def digest(self) -> str:
        """Identifies what the post says and when: changes when any of that changes."""
        data = self.to_json()
        for key in ("file", "line", "target_names"):
            data.pop(key)
        canonical = json.dumps(data, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def summary(self) -> str:
        kind = post_kind(self.kind)
        return kind.summary(self.content) if kind else self.kind

    def names(self) -> dict[int, str]:
        return dict(zip(self.targets, self.target_names, strict=False))


@dataclass(slots=True)
class Calendar:
    files: list[str] = field(default_factory=list)
    targets: dict[str, int] = field(default_factory=dict)
    posts: list[PostSpec] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def alias_of(self, chat_id: int) -> str:
        for alias, value in self.targets.items():
            if value == chat_id:
                return alias
        return str(chat_id)


# --- loading ---------------------------------------------------------------------------------


def calendar_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))


def fingerprint(directory: Path) -> str:
    """Changes whenever a calendar file (or a media file under the folder) changes."""
    if not directory.is_dir():
        return ""
    parts = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            stat = path.stat()
            parts.append(f"{path.relative_to(directory)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def load_calendar(directory: Path | str, *, display: str | None = None) -> Calendar:
    """Read and validate every calendar file in `directory`; never raises for bad content."""
    directory = Path(directory)
    label = Path(display) if display is not None else directory
    calendar = Calendar()
    if not directory.is_dir():
        calendar.problems.append(Problem(str(label), 0, "no such directory"))
        return calendar
    documents: list[tuple[str, LocDict]] = []
    for path in calendar_files(directory):
        name = str(label / path.name)
        calendar.files.append(name)
        try:
            document = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 0
            calendar.problems.append(Problem(name, line, f"not valid YAML: {exc.problem}"))
            continue
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            calendar.problems.append(Problem(name, 0, f"not valid YAML: {exc}"))
            continue
        if document is None:
            continue
        if not isinstance(document, LocDict):
            calendar.problems.append(
                Problem(name, 1, "a calendar file is a mapping (targets:, posts:)")
            )
            continue
        documents.append((name, document))
    # Targets are shared by every file, so a month's file can use the aliases of another.
    owners: dict[str, tuple[str, int]] = {}
    for name, document in documents:
        _Validator(name, directory, calendar).targets(document, owners)
    seen: dict[str, str] = {}
    for name, document in documents:
        _Validator(name, directory, calendar).document(document, seen)
    calendar.problems.sort()
    return calendar


class _Validator:
    """Checks one file; appends problems and the posts that are valid."""

    def __init__(self, name: str, directory: Path, calendar: Calendar) -> None:
        self.name = name
        self.directory = directory.resolve()
        self.calendar = calendar

    def error(self, line: int, message: str) -> None:
        self.calendar.problems.append(Problem(self.name, line, message))

    def unknown_keys(self, data: LocDict, allowed: Iterable[str], where: str) -> None:
        allowed = tuple(allowed)
        for key, line in data.duplicates:
            self.error(line, f"{key!r} is given twice{where}")
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                known = ", ".join(allowed)
                self.error(
                    data.key_line(key), f"unknown key {key!r}{where}{hint}; known keys: {known}"
                )

    # -- scalar readers (None: absent or invalid, an error was recorded when invalid) ---------

    def string(self, data: LocDict, key: str, where: str) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return value
        if key in data.raw and not isinstance(value, (LocDict, LocList)):
            return data.raw[key]
        self.error(data.value_line(key), f"{key}{where} must be text")
        return None

    def boolean(self, data: LocDict, key: str, where: str, default: bool) -> bool:
        value = data.get(key, default)
        if isinstance(value, bool):
            return value
        self.error(data.value_line(key), f"{key}{where} must be true or false")
        return default

    def duration(self, data: LocDict, key: str, where: str) -> timedelta | None:
        text = self.string(data, key, where)
        if text is None:
            return None
        delta = parse_duration(text)
        if delta is None:
            self.error(
                data.value_line(key),
                f"{key}{where}: {text!r} is not a duration like 30m, 1h or 2d",
            )
        return delta

    def chat_ref(self, value: Any, line: int, what: str) -> tuple[int, str] | None:
        """An alias from targets, or a numeric chat id."""
        if isinstance(value, bool):
            value = None
        if isinstance(value, int):
            return value, str(value)
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value), value
        if isinstance(value, str) and value in self.calendar.targets:
            return self.calendar.targets[value], value
        if isinstance(value, str):
            close = difflib.get_close_matches(value, list(self.calendar.targets), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.error(
                line, f"{what}: unknown target alias {value!r}{hint}; define it under targets:"
            )
            return None
        self.error(line, f"{what} must be a target alias or a chat id")
        return None

    def moment(self, data: LocDict, key: str, where: str, *, need_time: bool) -> datetime | None:
        text = self.string(data, key, where)
        if text is None:
            return None
        match = _DATETIME.match(text.strip())
        line = data.value_line(key)
        if not match:
            form = "2026-12-01 20:00" if need_time else "2026-12-01 or 2026-12-01 20:00"
            self.error(line, f"{key}{where}: {text!r} is not a date and time like {form}")
            return None
        year, month, day, hour, minute, second = match.groups()
        if need_time and hour is None:
            self.error(line, f"{key}{where}: {text!r} needs a time too, e.g. {text.strip()} 20:00")
            return None
        try:
            day_value = date(int(year), int(month), int(day))
        except ValueError:
            self.error(line, f"{key}{where}: {text!r} is not a real date")
            return None
        if hour is None:
            if key == "until":
                return datetime.combine(day_value, time(23, 59, 59))
            return datetime.combine(day_value, time())
        try:
            clock = time(int(hour), int(minute), int(second or 0))
        except ValueError:
            self.error(line, f"{key}{where}: {text!r} is not a real time of day")
            return None
        return datetime.combine(day_value, clock)

    # -- the file -------------------------------------------------------------------------------

    def targets(self, document: LocDict, owners: dict[str, tuple[str, int]]) -> None:
        targets = document.get("targets")
        if targets is None:
            return
        if not isinstance(targets, LocDict):
            self.error(
                document.value_line("targets"),
                "targets: must map aliases to chat ids, e.g. main: -1001234567890",
            )
            return
        for key, line in targets.duplicates:
            self.error(line, f"target {key!r} is given twice")
        for alias, chat_id in targets.items():
            line = targets.key_line(alias)
            if not isinstance(alias, str) or not ALIAS.match(alias):
                self.error(
                    line, f"target alias {alias!r} must be a word (letters, digits, - and _)"
                )
                continue
            if isinstance(chat_id, bool) or not isinstance(chat_id, int):
                self.error(
                    targets.value_line(alias),
                    f"target {alias!r} must be a numeric chat id like -1001234567890",
                )
                continue
            previous = owners.get(alias)
            if previous is not None and self.calendar.targets[alias] != chat_id:
                self.error(
                    line,
                    f"target {alias!r} is already {self.calendar.targets[alias]} "
                    f"in {previous[0]}:{previous[1]}",
                )
                continue
            owners.setdefault(alias, (self.name, line))
            self.calendar.targets[alias] = chat_id

    def document(self, document: LocDict, seen: dict[str, str]) -> None:
        self.unknown_keys(document, FILE_KEYS, "")
        defaults: dict[str, Any] = {"tz": "UTC", "grace": DEFAULT_GRACE, "enabled": True}
        tz_name = self.string(document, "timezone", "")
        if tz_name is not None:
            defaults["tz"] = self.zone(tz_name, document.value_line("timezone")) or "UTC"
        grace = self.duration(document, "grace", "")
        if grace is not None:
            defaults["grace"] = grace
        defaults["enabled"] = self.boolean(document, "enabled", "", True)
        defaults["approval"] = self.approval(document, "")
        defaults["review_chat"], defaults["review_ahead"] = self.review(document)
        posts = document.get("posts")
        if posts is None:
            return
        if not isinstance(posts, LocList):
            self.error(
                document.value_line("posts"),
                "posts: must be a list of posts (each starting with '- id: …')",
            )
            return
        for index, post in enumerate(posts):
            line = posts.item_line(index)
            if not isinstance(post, LocDict):
                self.error(line, "each post is a mapping starting with 'id:'")
                continue
            key = post.get("id")
            if isinstance(key, str | int) and not isinstance(key, bool):
                key = str(key)
                if key in seen:
                    line = post.value_line("id")
                    self.error(line, f"post id {key!r} is already used in {seen[key]}")
                    continue
                seen[key] = f"{self.name}:{post.value_line('id')}"
            spec = self.post(post, defaults)
            if spec is not None:
                self.calendar.posts.append(spec)

    def zone(self, name: str, line: int) -> str | None:
        from bot.chats import parse_timezone

        zone = parse_timezone(name)
        if zone is None:
            self.error(line, f"unknown time zone {name!r}; use an IANA name like Asia/Shanghai")
            return None
        return zone.key

    def approval(self, data: LocDict, where: str) -> bool | None:
        if "approval" not in data:
            return None
        value = data["approval"]
        if value in (True, "required"):
            return True
        if value in (False, "none", "not required"):
            return False
        self.error(data.value_line("approval"), f"approval{where} must be 'required' or 'none'")
        return None

    def review(self, document: LocDict) -> tuple[int | None, timedelta]:
        review = document.get("review")
        if review is None:
            return None, DEFAULT_REVIEW_AHEAD
        if not isinstance(review, LocDict):
            self.error(
                document.value_line("review"), "review: must be a mapping with chat: and/or ahead:"
            )
            return None, DEFAULT_REVIEW_AHEAD
        self.unknown_keys(review, REVIEW_KEYS, " in review")
        chat = None
        if "chat" in review:
            ref = self.chat_ref(review["chat"], review.value_line("chat"), "review chat")
            chat = ref[0] if ref else None
        ahead = self.duration(review, "ahead", " in review") or DEFAULT_REVIEW_AHEAD
        return chat, ahead

    # -- one post -------------------------------------------------------------------------------

    def post(self, post: LocDict, defaults: dict[str, Any]) -> PostSpec | None:
        errors_before = len(self.calendar.problems)
        key = self.string(post, "id", "")
        where = ""
        if key is None:
            self.error(
                post.line,
                "a post needs an id (unique, stable: it identifies the post across reloads)",
            )
        elif not POST_ID.match(key) or key.isdigit():
            self.error(
                post.value_line("id"),
                f"post id {key!r} must be letters, digits, - _ . (not only digits)",
            )
        else:
            where = f" (post {key!r})"
        self.unknown_keys(post, POST_KEYS, where)
        targets = self.post_targets(post, where)
        tz = defaults["tz"]
        if "timezone" in post:
            name = self.string(post, "timezone", where)
            tz = (self.zone(name, post.value_line("timezone")) if name else None) or tz
        schedule = self.schedule(post, where, tz)
        kind, content, digest = self.content(post, where)
        buttons = self.buttons(post, where, kind)
        pin = self.boolean(post, "pin", where, False)
        silent = self.boolean(post, "silent", where, False)
        enabled = self.boolean(post, "enabled", where, True) and defaults["enabled"]
        delete_after = self.duration(post, "delete_after", where)
        if delete_after is not None and delete_after > timedelta(hours=48):
            self.error(
                post.value_line("delete_after"),
                f"delete_after{where}: Telegram lets bots delete messages only within 48h",
            )
        if delete_after is not None and kind == "lottery":
            self.error(
                post.key_line("delete_after"),
                f"delete_after{where}: a lottery post is not deleted",
            )
        grace = self.duration(post, "grace", where) or defaults["grace"]
        approval = self.approval(post, where)
        if approval is None:
            approval = bool(defaults["approval"])
        if len(self.calendar.problems) > errors_before or key is None or schedule is None:
            return None
        assert kind is not None and content is not None
        return PostSpec(
            key=key,
            targets=tuple(chat_id for chat_id, _ in targets),
            target_names=tuple(name for _, name in targets),
            schedule=schedule,
            kind=kind,
            content=content,
            buttons=buttons,
            pin=pin,
            delete_after=int(delete_after.total_seconds()) if delete_after else None,
            silent=silent,
            grace=int(grace.total_seconds()),
            enabled=enabled,
            approval=approval,
            review_chat=defaults["review_chat"],
            review_ahead=int(defaults["review_ahead"].total_seconds()),
            file=self.name,
            line=post.line,
            media_digest=digest,
        )

    def post_targets(self, post: LocDict, where: str) -> list[tuple[int, str]]:
        if "to" not in post:
            self.error(post.line, f"a post needs to: (target aliases or chat ids){where}")
            return []
        value = post["to"]
        items: list[tuple[Any, int]]
        if isinstance(value, LocList):
            items = [(item, value.item_line(i)) for i, item in enumerate(value)]
        else:
            items = [(value, post.value_line("to"))]
        if not items:
            self.error(post.value_line("to"), f"to: is empty{where}")
        found = []
        for item, line in items:
            ref = self.chat_ref(item, line, f"to{where}")
            if ref is not None and ref not in found:
                found.append(ref)
        return found

    def schedule(self, post: LocDict, where: str, tz: str) -> Schedule | None:
        given = [key for key in ("at", "cron", "every") if key in post]
        if len(given) != 1:
            line = post.key_line(given[1]) if len(given) > 1 else post.line
            self.error(line, f"a post needs exactly one of at:, cron: or every:{where}")
            return None
        start = self.moment(post, "from", where, need_time=False)
        end = self.moment(post, "until", where, need_time=False)
        if start and end and end < start:
            self.error(post.value_line("until"), f"until{where} is before from")
            return None
        kind = given[0]
        line = post.value_line(kind)
        if kind == "at":
            if "from" in post or "until" in post:
                self.error(
                    post.key_line("from" if "from" in post else "until"),
                    f"from/until apply to cron: and every: posts, not at:{where}",
                )
            at = self.moment(post, "at", where, need_time=True)
            return Schedule(tz=tz, at=at) if at else None
        text = self.string(post, kind, where)
        if text is None:
            return None
        if kind == "cron":
            expression = " ".join(text.split())
            fields = expression.split()
            if expression.startswith("@"):
                valid = expression in (
                    "@yearly",
                    "@annually",
                    "@monthly",
                    "@weekly",
                    "@daily",
                    "@midnight",
                    "@hourly",
                )
            else:
                valid = len(fields) == 5 and croniter.is_valid(expression)
            if not valid:
                self.error(
                    line,
                    f"cron{where}: {text!r} is not a cron expression "
                    '(minute hour day month weekday, e.g. "0 9 * * MON-FRI")',
                )
                return None
            schedule = Schedule(tz=tz, cron=expression, start=start, end=end)
        else:
            schedule = self.every(text, line, where, tz, start, end)
            if schedule is None:
                return None
        return self.check_recurrence(schedule, line, where)

    def every(
        self,
        text: str,
        line: int,
        where: str,
        tz: str,
        start: datetime | None,
        end: datetime | None,
    ) -> Schedule | None:
        match = _EVERY.match(text.strip())
        period_text = match.group(1).strip().lower() if match else ""
        period_text = {"day": "1d", "week": "1w", "hour": "1h"}.get(period_text, period_text)
        period = parse_duration(period_text) if match else None
        clock_text = match.group(2) if match else None
        if period is None:
            self.error(
                line, f"every{where}: {text!r} is not like '2d at 09:00', '1w at 10:00' or '6h'"
            )
            return None
        clock = None
        if clock_text:
            hour, minute = re.split("[:：]", clock_text)
            if int(hour) > 23 or int(minute) > 59:
                self.error(line, f"every{where}: {clock_text} is not a time of day")
                return None
            clock = time(int(hour), int(minute))
            if period % timedelta(days=1):
                self.error(
                    line, f"every{where}: 'at HH:MM' needs a period of whole days (1d, 2d, 1w)"
                )
                return None
        return Schedule(tz=tz, every=period, every_at=clock, start=start, end=end)

    def check_recurrence(self, schedule: Schedule, line: int, where: str) -> Schedule | None:
        """A recurrence that never fires, or more often than every 5 minutes, is a mistake."""
        base = datetime(2026, 1, 1, tzinfo=UTC)
        if schedule.start is not None:
            base = min(
                base, local_to_utc(schedule.start.date(), schedule.start.time(), schedule.zone)
            )
        try:
            moments = schedule.occurrences(base, base + timedelta(days=1500), limit=60)
        except Exception as exc:  # croniter: an expression that can never match (e.g. 30 Feb)
            self.error(line, f"{where.strip() or 'schedule'}: never fires ({exc})")
            return None
        if not moments and schedule.end is None:
            self.error(
                line, f"schedule{where} never fires (is the date impossible, e.g. 30 February?)"
            )
            return None
        gaps = [b - a for a, b in zip(moments, moments[1:], strict=False)]
        if gaps and min(gaps) < MIN_INTERVAL:
            self.error(
                line,
                f"schedule{where} fires more often than every {format_duration(MIN_INTERVAL)}",
            )
            return None
        return schedule

    def content(
        self, post: LocDict, where: str
    ) -> tuple[str | None, dict[str, Any] | None, str | None]:
        given = [key for key in CONTENT_KINDS if key in post]
        if len(given) != 1:
            line = post.key_line(given[1]) if len(given) > 1 else post.line
            self.error(line, f"a post needs exactly one of {', '.join(CONTENT_KINDS)}{where}")
            return None, None, None
        kind = given[0]
        caption = None
        if "caption" in post:
            if kind not in (*MEDIA_KINDS, "copy"):
                self.error(
                    post.key_line("caption"),
                    f"caption{where} goes with photo, document, video or copy; "
                    "a text post is all text",
                )
            else:
                caption = self.html(post, "caption", where, MAX_CAPTION_UTF16)
        content: dict[str, Any] | None
        digest = None
        if kind == "text":
            text = self.html(post, "text", where, MAX_MESSAGE_UTF16)
            if text is not None and not text.strip():
                self.error(post.value_line("text"), f"text{where} is empty")
            content = {"text": text}
        elif kind in MEDIA_KINDS:
            content, digest = self.media(post, kind, where)
            if content is not None and caption:
                content["caption"] = caption
        elif kind == "copy":
            content = self.copy(post, where)
            if content is not None and caption:
                content["caption"] = caption
        elif kind == "poll":
            content = self.poll(post, where)
        else:
            content = self.lottery(post, where)
        registered = post_kind(kind)
        if registered is None or not registered.available:
            feature = registered.feature if registered else kind
            self.error(
                post.key_line(kind),
                f"{kind} posts are not available yet{where}: this bot does not have the "
                f"{feature} feature that delivers them; remove the post (or keep it in a file "
                "outside the calendar folder) until it does",
            )
        elif registered.validate is not None and content is not None:
            for found in registered.validate(content):
                message = found.message if isinstance(found, Invalid) else found
                line = self.kind_line(post, kind, found)
                self.error(line, f"{kind}{where}: {message}")
        return kind, content, digest

    @staticmethod
    def kind_line(post: LocDict, kind: str, found: str | Invalid) -> int:
        """Where a validator's finding is in the file: the key (or list item) it names."""
        block = post[kind]
        if not isinstance(found, Invalid) or not isinstance(block, LocDict):
            return post.key_line(kind)
        if found.key is None or found.key not in block:
            return block.line if found.key is not None else post.key_line(kind)
        value = block[found.key]
        if found.index is not None and isinstance(value, LocList):
            return value.item_line(found.index)
        return block.value_line(found.key)

    def html(self, data: LocDict, key: str, where: str, limit: int) -> str | None:
        text = self.string(data, key, where)
        if text is None:
            return None
        report = check_telegram_html(text, limit=limit)
        base = data.value_line(key) + (1 if data.block.get(key) else 0)
        for problem in report.problems:
            line = base + text[: problem.offset].count("\n") if data.block.get(key) else base
            self.error(line, f"{key}{where}: {problem.message}")
        return text

    def media(
        self, post: LocDict, kind: str, where: str
    ) -> tuple[dict[str, Any] | None, str | None]:
        value = self.string(post, kind, where)
        line = post.value_line(kind)
        if not value:
            self.error(
                line, f"{kind}{where}: give a path under the calendar folder or an https:// URL"
            )
            return None, None
        if re.match(r"^https?://\S+$", value):
            return {"media": value, "local": False}, None
        if "://" in value:
            self.error(line, f"{kind}{where}: only http(s) URLs can be posted: {value!r}")
            return None, None
        path = (self.directory / value).resolve()
        if not path.is_relative_to(self.directory):
            self.error(line, f"{kind}{where}: {value!r} is outside the calendar folder")
            return None, None
        if not path.is_file():
            self.error(
                line, f"{kind}{where}: media file {value!r} not found under {self.directory}"
            )
            return None, None
        data = path.read_bytes()
        if len(data) > MEDIA_LIMITS[kind]:
            limit_mb = MEDIA_LIMITS[kind] // (1024 * 1024)
            self.error(
                line,
                f"{kind}{where}: {value!r} is {len(data) / 1048576:.1f} MB; "
                f"Telegram takes at most {limit_mb} MB from bots",
            )
            return None, None
        if not data:
            self.error(line, f"{kind}{where}: {value!r} is empty")
            return None, None
        relative = path.relative_to(self.directory).as_posix()
        return {"media": relative, "local": True}, hashlib.sha256(data).hexdigest()

    def copy(self, post: LocDict, where: str) -> dict[str, Any] | None:
        block = post["copy"]
        if not isinstance(block, LocDict):
            self.error(
                post.value_line("copy"),
                f"copy{where} needs from: (alias or chat id) and message_id:",
            )
            return None
        self.unknown_keys(block, COPY_KEYS, f" in copy{where}")
        source = None
        if "from" not in block:
            self.error(block.line, f"copy{where} needs from: (alias or chat id)")
        else:
            source = self.chat_ref(block["from"], block.value_line("from"), f"copy from{where}")
        message_id = block.get("message_id")
        if isinstance(message_id, bool) or not isinstance(message_id, int) or message_id <= 0:
            self.error(
                block.value_line("message_id") if "message_id" in block else block.line,
                f"copy{where} needs message_id: a positive number",
            )
            return None
        if source is None:
            return None
        return {"from_chat_id": source[0], "message_id": message_id}

    def poll(self, post: LocDict, where: str) -> dict[str, Any] | None:
        """The shape of a poll; its limits (lengths, counts, the quiz answer) are the polls
        feature's, checked by the poll kind's validator. None when the shape is wrong."""
        block = post["poll"]
        if not isinstance(block, LocDict):
            self.error(post.value_line("poll"), f"poll{where} needs question: and options:")
            return None
        before = len(self.calendar.problems)
        inside = f" in poll{where}"
        self.unknown_keys(block, POLL_KEYS, inside)
        question = self.string(block, "question", inside)
        if "question" not in block:
            self.error(block.line, f"poll{where} needs question:")
        options = block.get("options")
        texts: list[str] = []
        if not isinstance(options, LocList):
            self.error(
                block.value_line("options") if "options" in block else block.line,
                f'poll{where}: options: is a list of answers, e.g. ["Yes", "No"]',
            )
        else:
            for index, option in enumerate(options):
                if isinstance(option, (LocDict, LocList)):
                    self.error(options.item_line(index), f"poll{where}: each option is a text")
                texts.append("" if option is None else str(option))
        anonymous = self.boolean(block, "anonymous", inside, False)  # as /poll
        multi = self.boolean(block, "multi", inside, False)
        quiz = block.get("quiz")
        if quiz is not None and (isinstance(quiz, bool) or not isinstance(quiz, int)):
            self.error(
                block.value_line("quiz"),
                f"poll{where}: quiz: is the number of the right option, counted from 1",
            )
        explanation = self.string(block, "explanation", inside)
        close_after = self.duration(block, "close_after", inside)
        if len(self.calendar.problems) > before:
            return None
        return {
            "question": question or "",
            "options": texts,
            "anonymous": anonymous,
            "multi": multi,
            "quiz": quiz - 1 if quiz is not None else None,  # stored 0-based, as Telegram's
            "explanation": explanation,
            "close_after": int(close_after.total_seconds()) if close_after else None,
        }

    def lottery(self, post: LocDict, where: str) -> dict[str, Any] | None:
        """The shape of a lottery; its limits are the lotteries feature's, checked by the
        lottery kind's validator (on the keys that have the right shape)."""
        block = post["lottery"]
        if not isinstance(block, LocDict):
            self.error(
                post.value_line("lottery"),
                f"lottery{where} needs prize:, winners: and draw_after:",
            )
            return None
        inside = f" in lottery{where}"
        self.unknown_keys(block, LOTTERY_KEYS, inside)
        prize = self.string(block, "prize", inside)
        if "prize" not in block:
            self.error(block.line, f"lottery{where} needs prize:")
        content: dict[str, Any] = {"prize": prize or ""}
        for key, default in (("winners", 1), ("min_points", None)):
            value = block.get(key, default)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                self.error(block.value_line(key), f"lottery{where}: {key}: is a whole number")
            elif value is not None:
                content[key] = value
        draw_after = self.duration(block, "draw_after", inside)
        if "draw_after" not in block:
            self.error(block.line, f"lottery{where}: draw_after: says when the draw is, e.g. 48h")
        if draw_after is not None:
            content["draw_after"] = int(draw_after.total_seconds())
        checkins = self.string(block, "checkins", inside)
        if checkins is not None:
            match = _CHECKINS.match(checkins)
            if match is None:
                self.error(
                    block.value_line("checkins"),
                    f"lottery{where}: checkins: is K/D, checked in on K of the last D days "
                    "(e.g. 5/7)",
                )
            else:
                content["checkins"] = [int(match.group(1)), int(match.group(2))]
        member = self.duration(block, "member", inside)
        if member is not None:
            content["member"] = int(member.total_seconds())
        joined = self.string(block, "joined_after", inside)
        if joined is not None:
            day = parse_date(joined)
            if day is None:
                self.error(
                    block.value_line("joined_after"),
                    f"lottery{where}: joined_after: {joined!r} is not a date like 2026-12-01",
                )
            else:
                content["joined_after"] = day.isoformat()
        keyword = self.string(block, "keyword", inside)
        if keyword is not None:
            content["keyword"] = keyword
        return content

    def buttons(self, post: LocDict, where: str, kind: str | None) -> list[list[dict[str, str]]]:
        if "buttons" not in post:
            return []
        if kind in ("poll", "lottery"):
            self.error(
                post.key_line("buttons"), f"buttons{where}: a {kind} post has its own buttons"
            )
            return []
        value = post["buttons"]
        if not isinstance(value, LocList) or not value:
            self.error(
                post.value_line("buttons"),
                f"buttons{where}: a list of {{text: …, url: …}} (a nested list makes a row)",
            )
            return []
        rows: list[list[dict[str, str]]] = []
        total = 0
        for index, item in enumerate(value):
            line = value.item_line(index)
            row_items = list(enumerate(item)) if isinstance(item, LocList) else [(None, item)]
            row = []
            for sub, button in row_items:
                button_line = item.item_line(sub) if sub is not None else line
                parsed = self.button(button, button_line, where)
                if parsed:
                    row.append(parsed)
            if len(row) > 8:
                self.error(line, f"buttons{where}: at most 8 buttons in a row")
            total += len(row)
            if row:
                rows.append(row)
        if total > 100:
            self.error(post.value_line("buttons"), f"buttons{where}: at most 100 buttons")
        return rows

    def button(self, button: Any, line: int, where: str) -> dict[str, str] | None:
        if not isinstance(button, LocDict):
            self.error(line, f"buttons{where}: each button is {{text: …, url: https://…}}")
            return None
        self.unknown_keys(button, BUTTON_KEYS, f" in a button{where}")
        text = self.string(button, "text", f" in a button{where}")
        url = self.string(button, "url", f" in a button{where}")
        if not text or not text.strip():
            self.error(button.line, f"buttons{where}: a button needs text:")
            return None
        if not url or not re.match(r"^(https?|tg)://\S+$", url):
            self.error(
                button.value_line("url") if "url" in button else button.line,
                f"buttons{where}: url: must be an http(s):// or tg:// link",
            )
            return None
        return {"text": text, "url": url}


def preview(
    calendar: Calendar, start: datetime, end: datetime, *, chat: int | None = None
) -> list[tuple[datetime, PostSpec, int]]:
    """Every (UTC due time, post, chat) in [start, end), in order — what will be sent."""
    planned = []
    for spec in calendar.posts:
        if not spec.enabled:
            continue
        for moment in spec.schedule.occurrences(start, end):
            for target in spec.targets:
                if chat is None or target == chat:
                    planned.append((moment, spec, target))
    planned.sort(key=lambda item: (item[0], item[1].key, item[1].targets.index(item[2])))
    return planned
