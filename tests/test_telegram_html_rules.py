"""bot.telegram_html: the HTML Telegram accepts, and the reasons it refuses the rest."""

from __future__ import annotations

import pytest

from bot.telegram_html import check_telegram_html
from bot.text import escape, mention
from tests.telegram_html import check_html

ACCEPTED = [
    "plain text",
    "<b>bold</b> <strong>s</strong> <i>i</i> <em>e</em> <u>u</u> <ins>i</ins>",
    "<s>s</s> <strike>s</strike> <del>d</del>",
    "<b>bold <i>italic <u>under <tg-spoiler>spoiler</tg-spoiler></u></i></b>",
    '<span class="tg-spoiler">hidden</span>',
    '<a href="https://example.com/?a=1&amp;b=2">link</a> <a href="tg://user?id=1">me</a>',
    '<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>',
    '<tg-time unix="1647531900" format="wDT">22:45</tg-time> <tg-time unix="1">x</tg-time>',
    "<code>x &lt; y</code> <pre>block</pre>",
    '<pre><code class="language-python">print(1)</code></pre>',
    "<blockquote>quote</blockquote> <blockquote expandable>long</blockquote>",
    "&lt;&gt;&amp;&quot; &#169; &#x1F600;",
    "<B>upper case tags</B>",
]

REFUSED = [
    ("<b>never closed", "<b> is never closed"),
    ("<b><i>crossed</b></i>", "unmatched end tag </b>, expected </i>"),
    ("a < b", "'<' must be written &lt;"),
    ("a > b", "'>' must be written &gt;"),
    ("fish & chips", "'&' must be written &amp;"),
    ("&nbsp;", "unsupported HTML entity &nbsp;"),
    ("<div>x</div>", "unsupported tag <div>"),
    ("<a>x</a>", "<a> needs an href"),
    ("<span>x</span>", '<span> must be <span class="tg-spoiler">'),
    ("<code><b>x</b></code>", "<b> inside <code>"),
    ("<pre><i>x</i></pre>", "<i> inside <pre>"),
    ("<blockquote><blockquote>x</blockquote></blockquote>", "blockquote can't be inside"),
    ('<a href="https://a"><a href="https://b">x</a></a>', "link can't be inside another link"),
    ('<code class="language-py">x</code>', "only be given on <code> directly inside <pre>"),
    ("<tg-emoji>x</tg-emoji>", "needs a numeric emoji-id"),
    ('<tg-time unix="1" format="xyz">x</tg-time>', "format must match"),
    ('<b style="x">x</b>', "unsupported attribute 'style'"),
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_accepted(text):
    report = check_telegram_html(text, limit=4096)
    assert report.ok, report.problems
    assert check_html(text) is None  # the test harness's stricter-tag check agrees


@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_refused_with_the_reason(text, reason):
    report = check_telegram_html(text)
    assert any(reason in p.message for p in report.problems), report.problems


def test_offsets_point_at_the_problem():
    text = "ok\nfine <x> & then"
    offsets = [p.offset for p in check_telegram_html(text).problems]
    assert offsets == [text.index("<x>"), text.index("&")]


def test_length_is_counted_on_visible_utf16_text():
    assert check_telegram_html("<b>" + "a" * 4096 + "</b>", limit=4096).ok
    assert not check_telegram_html("😀" * 2049, limit=4096).ok  # 2 UTF-16 units each
    assert check_telegram_html("&amp;" * 1024, limit=1024).ok
    assert not check_telegram_html("<b>x</b>" * 101).ok  # more than 100 entities


@pytest.mark.parametrize("hostile", ["<b>x</b>", "&amp;", '</a><a href="x">', "a & b <c>"])
def test_what_the_bot_escapes_always_passes(hostile):
    assert check_telegram_html(f"<b>{escape(hostile)}</b> {mention(1, hostile)}").ok
