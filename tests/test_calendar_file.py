"""The calendar file format: the shipped example, every kind of error with its line,
recurrence (DST included), preview, and the `calendar check` / `preview` commands."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.calendar_file import Schedule, load_calendar, preview
from bot.post_kinds import PostKind, post_kind, register_post_kind

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "content"


def write(folder: Path, text: str, name: str = "cal.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def problems(folder: Path) -> list[tuple[int, str]]:
    return [(p.line, p.message) for p in load_calendar(folder).problems]


def test_the_shipped_example_validates_and_covers_every_kind():
    calendar = load_calendar(EXAMPLE)
    assert calendar.problems == []
    kinds = {post.kind for post in calendar.posts}
    assert kinds == {"text", "photo", "document", "video", "copy", "poll", "lottery"}
    features = {
        "pin": any(p.pin for p in calendar.posts),
        "buttons": any(p.buttons for p in calendar.posts),
        "delete_after": any(p.delete_after for p in calendar.posts),
        "approval": any(p.approval for p in calendar.posts),
        "disabled": any(not p.enabled for p in calendar.posts),
        "other zone": any(p.schedule.tz != "Asia/Shanghai" for p in calendar.posts),
        "every": any(p.schedule.every for p in calendar.posts),
        "cron": any(p.schedule.cron for p in calendar.posts),
        "at": any(p.schedule.at for p in calendar.posts),
        "quiz": any(p.kind == "poll" and p.content["quiz"] is not None for p in calendar.posts),
        "lottery conditions": any(
            p.kind == "lottery" and {"min_points", "checkins", "member"} <= set(p.content)
            for p in calendar.posts
        ),
        "lottery keyword": any("keyword" in p.content for p in calendar.posts),
    }
    assert all(features.values()), features
    quiz = next(p for p in calendar.posts if p.key == "friday-quiz")
    # `quiz: 2` counts from 1; stored as Telegram's 0-based index.
    assert quiz.content["quiz"] == 1 and quiz.content["close_after"] == 7200
    assert quiz.content["anonymous"] is False  # as /poll: not anonymous unless asked
    giveaway = next(p for p in calendar.posts if p.key == "year-end-giveaway")
    assert giveaway.content == {
        "prize": "年终大礼包 · Year-end gift box",
        "winners": 3,
        "draw_after": 48 * 3600,
        "min_points": 100,
        "checkins": [3, 7],
        "member": 7 * 86400,
    }


def test_a_kind_no_feature_delivers_is_refused_as_not_available(tmp_path, monkeypatch):
    """The registry's fallback: a kind of the format without a deliverer fails the check."""
    from bot import post_kinds

    monkeypatch.setattr(post_kinds, "_KINDS", dict(post_kinds._KINDS))
    register_post_kind(PostKind("lottery", post_kind("lottery").summary, None, feature="prizes"))
    write(
        tmp_path,
        """
        targets: {main: -1001}
        posts:
          - id: hat
            to: main
            at: 2026-12-01 20:00
            lottery: {prize: Hat, winners: 1, draw_after: 2h}
          - id: ask
            to: main
            at: 2026-12-01 20:00
            poll: {question: "Tea?", options: [yes, no]}
        """,
    )
    calendar = load_calendar(tmp_path)
    assert [(p.line, p.message.split(":")[0]) for p in calendar.problems] == [
        (6, "lottery posts are not available yet (post 'hat')")
    ]
    assert "the prizes feature" in calendar.problems[0].message
    assert [p.key for p in calendar.posts] == ["ask"]  # polls are delivered


def test_poll_and_lottery_limits_are_the_features_and_reported_at_their_lines(tmp_path):
    long_question = "Q" * 290 + "😀" * 6  # 302 UTF-16 units, as Telegram counts
    write(
        tmp_path,
        f"""
        targets: {{main: -1001}}
        posts:
          - id: long
            to: main
            at: 2026-12-01 20:00
            poll:
              question: "{long_question}"
              options:
                - fine
                - "{"o" * 101}"
                - Fine
                -
              quiz: 5
          - id: quiz
            to: main
            at: 2026-12-01 20:00
            poll:
              question: "2 + 2?"
              options: ["3", "4"]
              quiz: 2
              multi: true
              explanation: "{"e" * 201}"
              close_after: 30s
          - id: bad-lottery
            to: main
            at: 2026-12-01 20:00
            lottery:
              prize: "  "
              winners: 101
              draw_after: 400d
              min_points: 0
              checkins: 8/7
              member: 4000d
              keyword: "/join"
          - id: shapes
            to: main
            at: 2026-12-01 20:00
            lottery:
              prize: Hat
              winners: many
              draw_after: 2h
              checkins: often
              joined_after: 2026-02-30
          - id: fine
            to: main
            at: 2026-12-01 20:00
            lottery: {{prize: Hat, draw_after: 2h, keyword: " Open Sesame! "}}
        """,
    )
    calendar = load_calendar(tmp_path)
    found = [(p.line, p.message) for p in calendar.problems]
    expected = [
        (7, "poll (post 'long'): question is too long: 302 characters, Telegram allows 300"),
        (10, "poll (post 'long'): option 2 is too long: 101 characters, Telegram allows 100"),
        (11, "poll (post 'long'): option 3 repeats 'Fine'"),
        (12, "poll (post 'long'): option 4 is empty"),
        (13, "poll (post 'long'): quiz: 5 names no option: counted from 1, there are 4"),
        (20, "poll (post 'quiz'): a quiz has one right answer, so it can't be multi"),
        (22, "poll (post 'quiz'): explanation is too long: 201 characters, Telegram allows 200"),
        (23, "poll (post 'quiz'): close_after: at least 1m"),
        (28, "lottery (post 'bad-lottery'): prize: is required"),
        (29, "lottery (post 'bad-lottery'): winners: from 1 to 100"),
        (30, "lottery (post 'bad-lottery'): draw_after: from 1m to 366 days"),
        (31, "lottery (post 'bad-lottery'): min_points: from 1 to 1000000000"),
        (32, "lottery (post 'bad-lottery'): checkins: 8/7 doesn't fit"),
        (33, "lottery (post 'bad-lottery'): member: at most 3660 days"),
        (34, "lottery (post 'bad-lottery'): keyword: 1 to 32 characters, not starting with /"),
        (40, "lottery (post 'shapes'): winners: is a whole number"),
        (42, "lottery (post 'shapes'): checkins: is K/D"),
        (43, "lottery (post 'shapes'): joined_after: '2026-02-30' is not a date"),
    ]
    for line, start in expected:
        assert any(got == line and message.startswith(start) for got, message in found), (
            f"missing {line}: {start!r} in {found}"
        )
    assert len(found) == len(expected), found
    assert [p.key for p in calendar.posts] == ["fine"]
    assert calendar.posts[0].summary() == (
        "lottery: Hat (1 winner, draws 2h after posting; keyword open sesame)"
    )


BAD = """\
timezone: Mars/Olympus
targets:
  main: -1001
  broken: "abc"
posts:
  - id: one
    to: [main, mian]
    cron: "61 9 * * *"
    text: "<b>hi"
  - id: two
    to: main
    at: 2026-02-30 20:00
    text: ok
    colour: red
  - id: three
    to: main
    every: fortnightly
    photo: media/missing.png
  - id: four
    to: main
    at: 2026-12-01 20:00
    text: |
      fine line
      a <blink>bad</blink> tag
      & more
  - id: one
    to: main
    at: 2026-12-01 20:00
    text: dup
  - to: main
    at: 2026-12-01 20:00
    text: no id
  - id: five
    to: main
    cron: "0 9 30 2 *"
    text: never
  - id: six
    to: main
    at: 2026-12-01 20:00
    copy: {from: nowhere, message_id: 0}
  - id: seven
    to: main
    cron: "* * * * *"
    text: spam
  - id: eight
    to: main
    at: 2026-12-01 20:00
    text: x
    buttons:
      - {text: Go, url: "javascript:alert(1)"}
  - id: nine
    to: main
    at: 2026-12-01 20:00
    text: "<a>no href</a> <span>no class</span>"
    pin: maybe
"""


def test_each_error_is_reported_with_its_line(tmp_path):
    write(tmp_path, BAD)
    found = problems(tmp_path)
    expected = [
        (1, "unknown time zone 'Mars/Olympus'"),
        (4, "target 'broken' must be a numeric chat id"),
        (7, "unknown target alias 'mian' (did you mean 'main'?)"),
        (8, "cron (post 'one'): '61 9 * * *' is not a cron expression"),
        (9, "text (post 'one'): <b> is never closed"),
        (12, "at (post 'two'): '2026-02-30 20:00' is not a real date"),
        (14, "unknown key 'colour' (post 'two')"),
        (17, "every (post 'three'): 'fortnightly' is not like"),
        (18, "photo (post 'three'): media file 'media/missing.png' not found"),
        (24, "text (post 'four'): unsupported tag <blink>"),
        (25, "text (post 'four'): '&' must be written &amp;"),
        (26, "post id 'one' is already used in"),
        (30, "a post needs an id"),
        (35, "never fires"),
        (40, "copy from (post 'six'): unknown target alias 'nowhere'"),
        (40, "copy (post 'six') needs message_id"),
        (43, "schedule (post 'seven') fires more often than every 5m"),
        (50, "buttons (post 'eight'): url: must be an http(s):// or tg:// link"),
        (54, "text (post 'nine'): <a> needs an href"),
        (54, "text (post 'nine'): <span> must be <span class=\"tg-spoiler\">"),
        (55, "pin (post 'nine') must be true or false"),
    ]
    for line, start in expected:
        assert any(got_line == line and start in message for got_line, message in found), (
            f"missing {line}: {start!r} in {found}"
        )
    assert len(found) == len(expected), found
    assert load_calendar(tmp_path).posts == []  # nothing from a post with an error


def test_limits_and_yaml_errors(tmp_path):
    long_text = "x" * 4097
    write(
        tmp_path,
        f"""
        targets: {{main: -1001}}
        posts:
          - id: long
            to: main
            at: 2026-12-01 20:00
            text: "{long_text}"
          - id: cap
            to: main
            at: 2026-12-01 20:00
            photo: https://example.com/a.png
            caption: "{"y" * 1025}"
          - id: txtcap
            to: main
            at: 2026-12-01 20:00
            text: hi
            caption: no
          - id: late-delete
            to: main
            at: 2026-12-01 20:00
            text: hi
            delete_after: 3d
        """,
    )
    write(tmp_path, "posts: [\n  - id: x\n", name="broken.yaml")
    found = load_calendar(tmp_path).problems
    messages = [str(p) for p in found]
    assert any("broken.yaml:2: not valid YAML" in m for m in messages), messages
    assert any(
        ":6: text (post 'long'): too long: 4097 characters (max 4096)" in m for m in messages
    )
    assert any(":11: caption (post 'cap'): too long: 1025" in m for m in messages)
    assert any(":16: caption (post 'txtcap') goes with photo" in m for m in messages)
    assert any(":21: delete_after (post 'late-delete'): Telegram lets bots" in m for m in messages)


def test_media_must_stay_inside_the_folder(tmp_path):
    (tmp_path / "secret.png").write_bytes(b"x")
    folder = tmp_path / "content"
    write(
        folder,
        "targets: {main: -1001}\nposts:\n"
        "  - {id: a, to: main, at: 2026-12-01 20:00, photo: ../secret.png}\n",
    )
    assert "outside the calendar folder" in problems(folder)[0][1]


def test_targets_are_shared_between_files_and_must_agree(tmp_path):
    write(tmp_path, "targets: {main: -1001}\n", name="a-targets.yaml")
    write(
        tmp_path, "posts:\n  - {id: a, to: main, at: 2026-12-01 20:00, text: hi}\n", name="b.yaml"
    )
    assert problems(tmp_path) == []
    write(tmp_path, "targets: {main: -1002}\n", name="c.yaml")
    assert problems(tmp_path) == [
        (1, "target 'main' is already -1001 in " + str(tmp_path / "a-targets.yaml") + ":1")
    ]


# --- recurrence ------------------------------------------------------------------------------


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_daily_cron_fires_once_per_local_day_across_both_dst_changes():
    schedule = Schedule(tz="Europe/Berlin", cron="30 2 * * *")
    spring = schedule.occurrences(utc(2026, 3, 27), utc(2026, 3, 31))
    # 02:30 does not exist on 29 March (clocks jump 02:00 → 03:00): it fires at 03:30 CEST.
    assert spring == [
        utc(2026, 3, 27, 1, 30),
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 30, 0, 30),
    ]
    autumn = schedule.occurrences(utc(2026, 10, 23), utc(2026, 10, 27))
    # 02:30 happens twice on 25 October (03:00 → 02:00): it fires on the first one only.
    assert autumn == [
        utc(2026, 10, 23, 0, 30),
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]


def test_hourly_cron_fires_once_per_local_hour_on_dst_days():
    schedule = Schedule(tz="Europe/Berlin", cron="0 * * * *")
    autumn_day = schedule.occurrences(utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))  # 25 Oct local
    assert len(autumn_day) == 24  # 02:00 once, although the day has 25 hours
    spring_day = schedule.occurrences(utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))  # 29 Mar local
    assert len(spring_day) == 23 and len(set(spring_day)) == 23


def test_local_time_stays_put_across_dst_for_every():
    schedule = Schedule(
        tz="America/New_York", every=timedelta(days=1), every_at=datetime(2026, 1, 1, 9).time()
    )
    moments = schedule.occurrences(utc(2026, 10, 31), utc(2026, 11, 3))
    assert [m.hour for m in moments] == [13, 14, 14]  # 09:00 EDT, then 09:00 EST


def test_every_with_from_until_and_anchor():
    schedule = Schedule(
        tz="UTC",
        every=timedelta(days=2),
        every_at=datetime(2026, 1, 1, 20).time(),
        start=datetime(2026, 12, 1),
        end=datetime(2026, 12, 6, 23, 59, 59),
    )
    assert schedule.occurrences(utc(2026, 11, 1), utc(2027, 1, 1)) == [
        utc(2026, 12, 1, 20),
        utc(2026, 12, 3, 20),
        utc(2026, 12, 5, 20),
    ]
    assert schedule.next_after(utc(2026, 12, 2)) == utc(2026, 12, 3, 20)


def test_preview_lists_every_send_in_order(tmp_path):
    write(
        tmp_path,
        """
        timezone: Asia/Shanghai
        targets: {main: -1001, news: -1002}
        posts:
          - {id: b-tip, to: [news, main], cron: "0 9 * * *", text: "<b>Tip</b> of the day"}
          - {id: a-once, to: main, at: "2026-12-01 09:00", text: Once}
          - {id: off, to: main, at: "2026-12-01 10:00", text: Off, enabled: false}
        """,
    )
    calendar = load_calendar(tmp_path)
    planned = preview(calendar, utc(2026, 12, 1), utc(2026, 12, 2, 12))
    assert [(m, s.key, c) for m, s, c in planned] == [
        (utc(2026, 12, 1, 1), "a-once", -1001),
        (utc(2026, 12, 1, 1), "b-tip", -1002),
        (utc(2026, 12, 1, 1), "b-tip", -1001),
        (utc(2026, 12, 2, 1), "b-tip", -1002),
        (utc(2026, 12, 2, 1), "b-tip", -1001),
    ]
    assert preview(calendar, utc(2026, 12, 1), utc(2026, 12, 2), chat=-1002)[0][2] == -1002
    assert planned[1][1].summary() == "Tip of the day"


# --- the command line --------------------------------------------------------------------------


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"CONTENT_DIR", "BOT_TOKEN"}}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_exits_non_zero_with_file_and_line(tmp_path):
    write(tmp_path / "content", BAD)
    bad = cli("calendar", "check", "content", cwd=tmp_path)
    assert bad.returncode == 1
    assert "content/cal.yaml:7: to (post 'one'): unknown target alias 'mian'" in bad.stderr
    good = cli("calendar", "check", str(EXAMPLE), cwd=tmp_path)
    assert good.returncode == 0 and good.stdout.startswith("OK: 12 post(s) in 1 file(s)")


def test_preview_command_prints_local_time_utc_target_and_summary(tmp_path):
    result = cli(
        "calendar",
        "preview",
        "--dir",
        str(EXAMPLE),
        "--days",
        "1",
        "--from",
        "2026-12-07 00:00",
        "--chat",
        "main",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "2026-12-07 09:00 Asia/Shanghai    2026-12-07 01:00Z main (-1001234567890) "
        "morning-tip: ☀️ 早安 · Good morning!"
    )
    assert lines[1].startswith("2026-12-07 10:00 Asia/Shanghai    2026-12-07 02:00Z main")
    assert lines[1].endswith("[pin]")
    assert lines[-1] == "2 send(s) in the 1 day(s) from 2026-12-07 00:00 UTC"


@pytest.mark.parametrize(
    "text",
    [
        "<b>ok</b> &amp; <i>fine</i>",
        '<a href="https://x.y">x</a>',
        '<pre><code class="language-py">x</code></pre>',
    ],
)
def test_valid_html_passes(tmp_path, text):
    write(
        tmp_path,
        "targets: {main: -1}\nposts:\n  - id: a\n    to: main\n    at: 2026-12-01 20:00\n"
        f"    text: '{text}'\n",
    )
    assert problems(tmp_path) == []
