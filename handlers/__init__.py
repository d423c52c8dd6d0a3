"""Telegram-facing feature modules; each exposes `register(app)` and a `COMMANDS` list.

Handler groups (lower runs first; every group gets its chance at each update):
GUARDS drop or act on updates before anything else (filters, flood, join checks),
TRACKING records activity, COMMANDS answers commands and buttons.
"""

GUARDS = -2
TRACKING = -1
COMMANDS = 0
