"""Campaign reviews on time: one job per campaign with a planned end, `campaign:<id>`.

The job (or /campaign end, or the catch-up at start-up after downtime, in any process) claims
the review in the database (bot.campaigns.claim_review) and only the claimant posts it. A
`campaign:sync` job every few minutes posts reviews that fell due without a job (campaigns
planned through another process) and schedules their jobs.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from telegram import Bot
from telegram.ext import Application, ContextTypes

from bot import campaigns as domain
from bot.charts import render_chart_async
from bot.services import Services, services_of
from schedules.digest import _send_digest as send_chart_and_text

log = logging.getLogger(__name__)

SYNC_INTERVAL = timedelta(minutes=5)


def job_name(campaign_id: int) -> str:
    return f"campaign:{campaign_id}"


async def on_startup(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Recover interrupted claims, post reviews due while down, schedule the coming ones."""
    await sync(app)
    if app.job_queue is not None:
        for job in app.job_queue.get_jobs_by_name("campaign:sync"):
            job.schedule_removal()
        app.job_queue.run_repeating(
            _sync_job, interval=SYNC_INTERVAL, first=SYNC_INTERVAL, name="campaign:sync"
        )


async def sync(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    services = services_of(app)
    now = services.clock()
    await domain.recover_interrupted(services.db, now=now)
    async with services.db() as session:
        planned = await domain.planned_ends(session)
    for campaign in planned:
        assert campaign.id is not None and campaign.ends_at is not None
        if campaign.ends_at <= now:
            try:
                await run_review(app, campaign.id)
            except Exception:
                log.exception("campaign review %s failed", campaign.id)
        else:
            schedule(app, campaign)


def schedule(app: Application[Any, Any, Any, Any, Any, Any], campaign: domain.Campaign) -> None:
    """(Re)create the job that posts the campaign's review at its planned end."""
    queue = app.job_queue
    if queue is None or campaign.id is None or campaign.ends_at is None:
        return
    name = job_name(campaign.id)
    for job in queue.get_jobs_by_name(name):
        if job.data == campaign.ends_at:
            return
        job.schedule_removal()
    queue.run_once(
        _review_job,
        when=campaign.ends_at,
        name=name,
        data=campaign.ends_at,
        job_kwargs={"misfire_grace_time": None},  # late is fine: the claim decides
    )


def unschedule(app: Application[Any, Any, Any, Any, Any, Any], campaign_id: int) -> None:
    if app.job_queue is not None:
        for job in app.job_queue.get_jobs_by_name(job_name(campaign_id)):
            job.schedule_removal()


async def _sync_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    try:
        await sync(context.application)
    except Exception:
        log.exception("campaign sync failed")


async def _review_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    assert context.job is not None and context.job.name is not None
    campaign_id = int(context.job.name.split(":")[1])
    try:
        await run_review(context.application, campaign_id)
    except Exception:
        log.exception("campaign review %s failed", campaign_id)


async def run_review(
    app: Application[Any, Any, Any, Any, Any, Any],
    campaign_id: int,
    *,
    ended_by: int | None = None,
) -> str:
    """Claim the review and, if this process owns it, post it: "sent", "failed" or "taken"."""
    services = services_of(app)
    claimed = await domain.claim_review(
        services.db,
        campaign_id,
        now=services.clock(),
        worker=services.process_id,
        ended_by=ended_by,
    )
    if claimed is None:
        return "taken"
    unschedule(app, campaign_id)
    try:
        result = await post_review(app.bot, services, claimed, claimed.chat_id)
    except Exception as exc:
        await domain.finish_review(
            services.db, campaign_id, now=services.clock(), error=str(exc) or repr(exc)
        )
        log.warning("review of campaign %s could not be posted: %s", campaign_id, exc)
        return "failed"
    if result is None:
        await domain.finish_review(
            services.db, campaign_id, now=services.clock(), error="not delivered"
        )
        return "failed"
    await domain.finish_review(services.db, campaign_id, now=services.clock(), result=result)
    return "sent"


async def post_review(
    bot: Bot, services: Services, campaign: domain.Campaign, to_chat: int
) -> dict[str, Any] | None:
    """Compose, draw and send a campaign's review to `to_chat`; its summary figures when it
    was delivered, else None."""
    info = await services.chats.get(campaign.chat_id)
    if info is None:
        return None
    await services.activity.flush()  # the last seconds count too
    now = services.clock()
    async with services.db() as session:
        review = await domain.build_review(
            session, campaign, title=info.title, lang=info.language, tz=info.timezone, now=now
        )
    png = await render_chart_async(review.chart)
    if not await send_chart_and_text(bot, services, to_chat, png, review.caption, review.text):
        return None
    return review.result
