"""tap-events: a Singer tap for SaaS event streams."""
