"""Telegram's HTML parse mode rules, as the recording request checks them.

Telegram refuses a message ("can't parse entities") when a `<`, `>` or `&` is not part of a
supported tag or entity, or tags are not properly nested. It also refuses text longer than
4096 UTF-16 units (1024 for captions) after the tags are removed.
"""

from __future__ import annotations

import html
import re

ALLOWED_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
        "tg-time",
    }
)
_TAG = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+(?:=(?:\"[^\"]*\"|'[^']*'|[^\s>]+))?)*)\s*>"
)
_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#[0-9]+|#x[0-9a-fA-F]+);")


def check_html(text: str) -> str | None:
    """None if Telegram would accept `text` in HTML mode, else the reason it would not."""
    stack: list[str] = []
    plain: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "<":
            match = _TAG.match(text, i)
            if not match:
                return f"unescaped '<' at offset {i}"
            closing, name = match.group(1) == "/", match.group(2).lower()
            if name not in ALLOWED_TAGS:
                return f"unsupported tag <{name}> at offset {i}"
            if closing:
                if not stack or stack[-1] != name:
                    return f"unmatched end tag </{name}> at offset {i}"
                stack.pop()
            else:
                stack.append(name)
            i = match.end()
        elif char == "&":
            match = _ENTITY.match(text, i)
            if not match:
                return f"unescaped '&' at offset {i}"
            plain.append(html.unescape(match.group(0)))
            i = match.end()
        elif char == ">":
            return f"unescaped '>' at offset {i}"
        else:
            plain.append(char)
            i += 1
    if stack:
        return f"unclosed tag <{stack[-1]}>"
    return None


def visible_text(text: str) -> str:
    """The text a member sees: tags removed, entities decoded."""
    return html.unescape(_TAG.sub("", text))


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2
