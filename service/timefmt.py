"""`iso_time`: the one way the service writes a moment in its JSON answers, ISO 8601 in UTC to the whole second
(`2026-09-02T08:03:26Z`)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_time(moment: datetime | float | None) -> str | None:
    """`2026-09-02T08:03:26Z` for a UTC datetime or Unix seconds (rounded down), None for None."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(int(moment), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
