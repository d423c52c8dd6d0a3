"""Import every module that defines tables, so `SQLModel.metadata` is complete.

Alembic's env.py, the tests and `create_all` use `metadata` from here. A feature that adds
tables adds its module to this list (and a migration under migrations/versions/); so does a
feature that registers a content-calendar post kind (bot.post_kinds) or KPIs and digest
sections (bot.kpi.register_metrics, bot.digest.register_section).
"""

from sqlmodel import SQLModel

import bot.calendar  # noqa: F401  (calendar_post, calendar_delivery, calendar_approval, …)
import bot.calendar_kpi  # noqa: F401  (content sent/failed/missed: KPIs and digest section)
import bot.campaigns  # noqa: F401  (campaign)
import bot.checkins  # noqa: F401  (checkin, checkin_day, checkin_config)
import bot.cluster  # noqa: F401  (bot_process, update_seen)
import bot.dashboard_auth  # noqa: F401  (dashboard_login)
import bot.digest  # noqa: F401  (kpi_target, digest_schedule, digest_run)
import bot.heatmap  # noqa: F401  (chat_hour is in bot.models; the weekly report's heat map)
import bot.inbox  # noqa: F401  (update_inbox)
import bot.invites  # noqa: F401  (invite_link, join_source, invite_join_request, referral_credit, …)
import bot.lottery  # noqa: F401  (lottery, lottery_entry)
import bot.lottery_calendar  # noqa: F401  (the calendar's lottery posts: registers the kind)
import bot.lottery_form  # noqa: F401  (lottery_form: the guided /lottery in progress)
import bot.lottery_kpi  # noqa: F401  (lottery entries and draws: KPIs and digest section)
import bot.models  # noqa: F401  (chat, member, daily_activity, chat_hour, chat_admin, …)
import bot.moderation  # noqa: F401  (moderation_settings, warning, word_filter, mod_log, …)
import bot.points  # noqa: F401  (points_ledger, points_balance)
import bot.polls  # noqa: F401  (poll, poll_option, poll_vote, survey, poll_settings)
import bot.polls_calendar  # noqa: F401  (the calendar's poll posts: registers the kind)
import bot.polls_kpi  # noqa: F401  (polls closed and turnout: KPIs and digest section)
import bot.privacy  # noqa: F401  (privacy_optout, erasure_request)
import bot.rules  # noqa: F401  (group_rules, welcome_settings, join_check_settings, newcomer)
import bot.segments  # noqa: F401  (segment_settings)

metadata = SQLModel.metadata
