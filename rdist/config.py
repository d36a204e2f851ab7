"""Configuration read from the environment (a fuller config object arrives with issue 6)."""

from __future__ import annotations

import os


def redis_url_from_env() -> str | None:
    """``RDIST_REDIS_URL``, else Heroku's ``REDIS_URL``, else None (start an embedded Redis)."""
    return os.environ.get("RDIST_REDIS_URL") or os.environ.get("REDIS_URL") or None


def cluster_from_env() -> str:
    return os.environ.get("RDIST_CLUSTER", "default")
