"""Community operations bot: the core (settings, database, domain services, wiring)."""
