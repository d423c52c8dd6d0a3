"""Referral credits on time: every 10 minutes, judge the referral joins whose 7 days are over.

`bot.invites.settle_referrals` claims each pending referral join in the database, so the
credit and its points happen once whichever process (or `/top invites`, which settles its
group's due referrals first) gets there; a restart settles what fell due meanwhile.
"""

from __future__ import annotations

import logging
from typing import Any

from telegram.ext import Application

from bot.invites import settle_referrals
from bot.services import BotContext, Services, services_of

log = logging.getLogger(__name__)

JOB = "invites:referrals"
INTERVAL_SECONDS = 600
BATCH = 2000  # pending referral joins judged per run (the rest wait for the next run)


async def settle(services: Services) -> int:
    """Judge the due referral joins; returns how many referred members were credited."""
    async with services.db.begin() as session:
        credits = await settle_referrals(session, now=services.clock(), limit=BATCH)
    if credits:
        log.info("referrals: %d referred members credited", len(credits))
    return len(credits)


async def settle_job(context: BotContext) -> None:
    await settle(context.services)


async def on_startup(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Settle what fell due while the bot was down, then keep settling."""
    await settle(services_of(app))
    if app.job_queue is not None:
        for job in app.job_queue.get_jobs_by_name(JOB):
            job.schedule_removal()
        app.job_queue.run_repeating(
            settle_job, interval=INTERVAL_SECONDS, first=INTERVAL_SECONDS, name=JOB
        )
