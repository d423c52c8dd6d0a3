"""Import every module that defines tables, so `SQLModel.metadata` is complete.

Alembic's env.py, the tests and `create_all` use `metadata` from here. A feature that adds
tables adds its module to this list (and a migration under migrations/versions/).
"""

from sqlmodel import SQLModel

import bot.digest  # noqa: F401  (kpi_target, digest_schedule, digest_run)
import bot.models  # noqa: F401  (chat, member, daily_activity, chat_admin, user_profile, …)

metadata = SQLModel.metadata
