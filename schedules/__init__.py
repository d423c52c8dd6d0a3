"""Time-facing parts: everything that happens because the clock says so, on PTB's JobQueue.

Each module exposes `on_startup(app)` that derives its jobs from the database (the database is
the record; jobs are rebuilt from it at every start).
"""
