"""RoleFerry Integrations: reliable provider calls, durable jobs and verified webhooks."""

__version__ = "0.1.0"
