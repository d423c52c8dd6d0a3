"""Escaping and splitting keep every message acceptable to Telegram."""

from __future__ import annotations

import pytest

from bot.text import escape, mention, split_message, utf16_len
from tests.telegram_html import check_html

HOSTILE = [
    "<b>x</b>",
    "&amp;",
    "a_b*c",
    '</a><a href="tg://user?id=1">',
    "\u202eevil",
    "名" * 64,
    "😀" * 40,
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_stay_literal(name):
    assert check_html(f"<b>{escape(name)}</b>") is None
    assert check_html(mention(5, name)) is None


def test_split_respects_utf16_limit_and_lines():
    lines = [f"{i:04d} " + "字😀" * 30 for i in range(300)]
    parts = split_message("\n".join(lines))
    assert len(parts) > 1
    assert all(utf16_len(p) <= 4096 for p in parts)
    assert "\n".join(parts).split("\n") == lines  # nothing lost, no line cut


def test_single_overlong_line_is_cut():
    parts = split_message("x" * 9000)
    assert [len(p) for p in parts] == [4096, 4096, 808]
