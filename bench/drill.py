"""The multi-process drill, longer: N bot processes on one PostgreSQL database, one killed.

Runs tests/drill.py with more posts, draws and digests over a longer window and prints what
happened: start-up time, when the kill came, what the killed process was sending (held at the
stand-in, so Telegram never saw it), which claims were taken over, how the work was shared,
and whether every action went out exactly once.

    TEST_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test \\
        python bench/drill.py [--processes 3] [--posts 40] [--lotteries 10] [--digests 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.drill import run_drill  # noqa: E402


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--posts", type=int, default=40)
    parser.add_argument("--lotteries", type=int, default=10)
    parser.add_argument("--digests", type=int, default=10)
    parser.add_argument("--window", type=float, default=30.0, help="seconds the work is spread")
    parser.add_argument("--lease", type=float, default=4.0, help="CLAIM_LEASE_SECONDS")
    parser.add_argument("--sweep", type=float, default=1.0, help="SWEEP_SECONDS")
    parser.add_argument("--no-kill", action="store_true")
    parser.add_argument("--logs", action="store_true", help="print each process's log tail")
    args = parser.parse_args()
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        print("set TEST_DATABASE_URL to a PostgreSQL server", file=sys.stderr)
        return 2
    result = await run_drill(
        url,
        processes=args.processes,
        posts=args.posts,
        lotteries=args.lotteries,
        digests=args.digests,
        window=args.window,
        lease=args.lease,
        sweep=args.sweep,
        kill=not args.no_kill,
        deadline=args.window + 40,
    )
    actions = args.posts + args.lotteries + 2 * args.digests
    print(
        f"{args.processes} processes, {args.posts} posts + {args.lotteries} draws + "
        f"{args.digests} digests (chart + text) due over {args.window:.0f} s; "
        f"lease {args.lease:.0f} s, sweep {args.sweep:.0f} s"
    )
    print(f"start-up until every process answered /healthz: {result.startup_seconds:.1f} s")
    if result.killed:
        print(f"killed {result.killed} (SIGKILL) {result.kill_at:.1f} s after the schedule")
        print(f"  it was sending (never reached Telegram): {result.held or 'nothing'}")
    print(f"its claims taken over and sent once by another process: {result.taken_over}")
    print(f"all done {result.done_seconds:.1f} s after the schedule was written")
    shares = ", ".join(f"{tag}: {n}" for tag, n in sorted(result.by_process.items()))
    print(f"sent by: {shares}")
    once = sum(1 for n in result.sends.values() if n == 1)
    print(
        f"actions sent exactly once: {once} of {actions} (more than once: "
        f"{sum(1 for n in result.sends.values() if n > 1)})"
    )
    late = sorted(result.lateness.values())
    if late:
        print(
            f"sent after its due time: median {late[len(late) // 2]:.1f} s, "
            f"max {late[-1]:.1f} s ({max(result.lateness, key=result.lateness.get)})"
        )
    print(f"redelivered /checkin handled {result.checkins} time(s)")
    if args.logs:
        for tag, text in result.logs.items():
            print(f"--- {tag}\n{text[-4000:]}")
    for problem in result.problems:
        print("PROBLEM:", problem)
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
