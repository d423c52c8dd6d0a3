"""Import every module that defines tables, so `SQLModel.metadata` is complete.

Alembic's env.py, the tests and `create_all` use `metadata` from here. A feature that adds
tables adds its module to this list (and a migration under migrations/versions/).
"""

from sqlmodel import SQLModel

import bot.models  # noqa: F401  (chat, member, daily_activity, chat_admin, user_profile, …)
import bot.moderation  # noqa: F401  (moderation_settings, warning, word_filter, mod_log, …)
import bot.rules  # noqa: F401  (group_rules, welcome_settings, join_check_settings, newcomer)

metadata = SQLModel.metadata
