"""Telegram's HTML parse mode, checked before anything is sent (the calendar validates with it).

Telegram refuses a whole message ("can't parse entities") when the HTML is not its subset:
only the tags below, with their attributes; `<`, `>` and `&` escaped outside tags; only the
named entities &lt; &gt; &amp; &quot; (numeric ones are fine); tags properly nested; nothing
inside code/pre except <code> directly in <pre>; no blockquote in a blockquote; and at most
100 entities. The visible text must fit 4096 UTF-16 units (1024 for a caption).
See core.telegram.org/bots/api#html-style.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

MAX_ENTITIES = 100

# tag → attributes it may carry (Telegram ignores nothing else we'd want to keep)
TAGS: dict[str, frozenset[str]] = {
    "b": frozenset(),
    "strong": frozenset(),
    "i": frozenset(),
    "em": frozenset(),
    "u": frozenset(),
    "ins": frozenset(),
    "s": frozenset(),
    "strike": frozenset(),
    "del": frozenset(),
    "tg-spoiler": frozenset(),
    "span": frozenset({"class"}),
    "a": frozenset({"href"}),
    "tg-emoji": frozenset({"emoji-id"}),
    "tg-time": frozenset({"unix", "format"}),
    "code": frozenset({"class"}),
    "pre": frozenset(),
    "blockquote": frozenset({"expandable"}),
}
_LEAF = frozenset({"code", "pre"})  # entities that contain no other entity
_TAG = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)"
    r"((?:\s+[a-zA-Z][a-zA-Z0-9-]*(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'>]+))?)*)\s*>"
)
_ATTR = re.compile(r"([a-zA-Z][a-zA-Z0-9-]*)(?:\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s\"'>]+))?")
_ENTITY = re.compile(r"&(?:(lt|gt|amp|quot)|#([0-9]{1,7})|#[xX]([0-9a-fA-F]{1,6}));")
_NAMED_LIKE = re.compile(r"&[a-zA-Z][a-zA-Z0-9]*;")
_TIME_FORMAT = re.compile(r"^(?:r|w?[dD]?[tT]?)$")


@dataclass(frozen=True, slots=True)
class HtmlProblem:
    offset: int  # character offset in the source text
    message: str


@dataclass(slots=True)
class HtmlReport:
    problems: list[HtmlProblem] = field(default_factory=list)
    visible: str = ""
    entities: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _attributes(raw: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for match in _ATTR.finditer(raw):
        value = match.group(2) or ""
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        attrs[match.group(1).lower()] = html.unescape(value)
    return attrs


def _check_start_tag(name: str, attrs: dict[str, str], stack: list[str]) -> str | None:
    """Why Telegram would refuse this start tag here, or None."""
    if any(open_tag in _LEAF for open_tag in stack) and not (
        name == "code" and stack[-1:] == ["pre"]
    ):
        return f"<{name}> inside <{stack[-1]}>: code and pre can't contain formatting"
    if name == "blockquote" and "blockquote" in stack:
        return "a blockquote can't be inside another blockquote"
    if name == "a" and "a" in stack:
        return "a link can't be inside another link"
    if name == "a" and not attrs.get("href"):
        return '<a> needs an href, e.g. <a href="https://example.com">'
    if name == "span" and attrs.get("class") != "tg-spoiler":
        return '<span> must be <span class="tg-spoiler"> (Telegram has no other span)'
    if name == "tg-emoji" and not attrs.get("emoji-id", "").isdigit():
        return '<tg-emoji> needs a numeric emoji-id="…"'
    if name == "tg-time":
        if not attrs.get("unix", "").isdigit():
            return '<tg-time> needs unix="<Unix time>"'
        if not _TIME_FORMAT.match(attrs.get("format", "")):
            return "<tg-time> format must match r|w?[dD]?[tT]?"
    if name == "code" and "class" in attrs:
        if stack[-1:] != ["pre"]:
            return "a programming language can only be given on <code> directly inside <pre>"
        if not attrs["class"].startswith("language-"):
            return '<code class="…"> must be class="language-NAME"'
    unknown = set(attrs) - TAGS[name]
    if unknown:
        return f"<{name}> has unsupported attribute {sorted(unknown)[0]!r}"
    return None


def check_telegram_html(text: str, *, limit: int | None = None) -> HtmlReport:
    """Parse `text` as Telegram does; every reason it would refuse it, with offsets.

    `limit` is the visible length allowed (4096 for messages, 1024 for captions).
    """
    report = HtmlReport()
    stack: list[tuple[str, int]] = []
    visible: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "<":
            match = _TAG.match(text, i)
            if not match:
                report.problems.append(HtmlProblem(i, "'<' must be written &lt;"))
                visible.append(char)
                i += 1
                continue
            closing, name = match.group(1) == "/", match.group(2).lower()
            if name not in TAGS:
                if not closing:  # (its end tag would only repeat the same complaint)
                    report.problems.append(
                        HtmlProblem(i, f"unsupported tag <{name}> (write &lt; for a literal '<')")
                    )
            elif closing:
                if not stack or stack[-1][0] != name:
                    expected = f", expected </{stack[-1][0]}>" if stack else ""
                    report.problems.append(
                        HtmlProblem(i, f"unmatched end tag </{name}>{expected}")
                    )
                    if any(open_name == name for open_name, _ in stack):
                        while stack and stack[-1][0] != name:
                            stack.pop()
                        stack.pop()
                else:
                    stack.pop()
            else:
                reason = _check_start_tag(name, _attributes(match.group(3)), [s for s, _ in stack])
                if reason:
                    report.problems.append(HtmlProblem(i, reason))
                stack.append((name, i))
                report.entities += 1
            i = match.end()
        elif char == "&":
            match = _ENTITY.match(text, i)
            if match is None:
                named = _NAMED_LIKE.match(text, i)
                message = (
                    f"unsupported HTML entity {named.group(0)} (only &lt; &gt; &amp; &quot;)"
                    if named
                    else "'&' must be written &amp;"
                )
                report.problems.append(HtmlProblem(i, message))
                visible.append(char)
                i += 1
                continue
            visible.append(html.unescape(match.group(0)))
            i = match.end()
        elif char == ">":
            report.problems.append(HtmlProblem(i, "'>' must be written &gt;"))
            visible.append(char)
            i += 1
        else:
            visible.append(char)
            i += 1
    for name, offset in stack:
        report.problems.append(HtmlProblem(offset, f"<{name}> is never closed"))
    report.visible = "".join(visible)
    if report.entities > MAX_ENTITIES:
        report.problems.append(
            HtmlProblem(0, f"too much formatting: {report.entities} entities (max {MAX_ENTITIES})")
        )
    if limit is not None and utf16_len(report.visible) > limit:
        report.problems.append(
            HtmlProblem(0, f"too long: {utf16_len(report.visible)} characters (max {limit})")
        )
    return report
