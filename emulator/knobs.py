"""Run-time fault-injection knobs and their validation.

Knobs exist so tests and benchmarks can make the emulator misbehave the way a real upstream might. With
every knob at its default the emulator follows the vendor docs exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

# Default per-profile limit per 5-minute window. Doc versions say 150, 200, 250 or 300; the newest says 300.
DEFAULT_RATE_LIMIT_MAX = 300

# Faults that replace the whole exchange; they fire before any validation, like a broken upstream would.
TRANSPORT_FAULTS = frozenset({"429", "500", "502", "503", "malformed", "non_json", "hang", "drop", "echo"})
# Faults that corrupt an otherwise successful answer; they fire only when the request would succeed.
TOKEN_FAULTS = frozenset({"missing_url", "missing_token", "unsigned", "expired", "foreign_host", "long_expiry"})
# A Link Session has no signature to forge, so "unsigned" does not apply to one: it stays armed for generateJWT.
SESSION_TOKEN_FAULTS = TOKEN_FAULTS - {"unsigned"}
# Faults that corrupt a successful profile create: the profile exists afterwards, but the answer lacks its key (the
# orphaned-profile case the vendor warns about, since the key is returned only there).
PROFILE_FAULTS = frozenset({"missing_profile_key"})
ALL_FAULTS = TRANSPORT_FAULTS | TOKEN_FAULTS | PROFILE_FAULTS
# Faults of the emulator's own webhook deliveries (emulator/webhooks.py), armed separately from `fault` so an API
# fault and a delivery fault can be set at once: each consumed delivery is sent twice ("duplicate"), with a timestamp
# an hour old ("stale_timestamp") or signed with a secret the receiver does not know ("bad_signature").
WEBHOOK_FAULTS = frozenset({"duplicate", "stale_timestamp", "bad_signature"})

# fault_count value meaning "every call until reset".
UNLIMITED = -1


class KnobError(ValueError):
    """A knobs update was rejected; the message says which field and why."""


@dataclass(frozen=True)
class Knobs:
    """Current knob values. Immutable: an update builds a new instance under the state lock."""

    latency_ms: int = 0
    fault: str | None = None
    fault_count: int = 0
    token_lifetime_seconds: int | None = None
    rate_limit_max: int = DEFAULT_RATE_LIMIT_MAX
    # Webhook delivery (emulator/webhooks.py); None means the instance's configuration (the vendor's 5 s and 30 s
    # retries and 10 s answer limit unless the CLI says otherwise, so tests need not wait that long).
    webhook_retry_delays_ms: tuple[int, ...] | None = None
    webhook_timeout_ms: int | None = None
    # How long deliveries stay signed with the previous secret after a rotation; None is the vendor's 24 hours.
    webhook_grace_seconds: int | None = None
    # A delivery fault and how many deliveries (events, not attempts) it applies to; -1 is every one until reset.
    webhook_fault: str | None = None
    webhook_fault_count: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _require_int(name: str, value: object, minimum: int) -> int:
    # bool is an int subclass in Python; `true` is never a sensible count or duration here.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise KnobError(f"{name} must be an integer >= {minimum}")
    return value


def merge_knobs(current: Knobs, update: object) -> Knobs:
    """Return `current` with the JSON object `update` merged in, or raise KnobError.

    Setting a fault without a fault_count arms it for one call; setting fault to null disarms it. The same goes for
    webhook_fault and webhook_fault_count, counted in deliveries.
    """
    if not isinstance(update, dict):
        raise KnobError("knobs must be a JSON object")
    unknown = set(update) - set(Knobs.__dataclass_fields__)
    if unknown:
        raise KnobError(f"unknown knobs: {', '.join(sorted(unknown))}")

    changes: dict[str, object] = {}
    if "latency_ms" in update:
        changes["latency_ms"] = _require_int("latency_ms", update["latency_ms"], 0)
    if "rate_limit_max" in update:
        changes["rate_limit_max"] = _require_int("rate_limit_max", update["rate_limit_max"], 1)
    if "token_lifetime_seconds" in update:
        lifetime = update["token_lifetime_seconds"]
        changes["token_lifetime_seconds"] = (
            None if lifetime is None else _require_int("token_lifetime_seconds", lifetime, 1)
        )
    if "webhook_retry_delays_ms" in update:
        delays = update["webhook_retry_delays_ms"]
        if delays is not None and not isinstance(delays, list):
            raise KnobError("webhook_retry_delays_ms must be null or an array of integers >= 0")
        changes["webhook_retry_delays_ms"] = (
            None if delays is None else tuple(_require_int("webhook_retry_delays_ms", delay, 0) for delay in delays)
        )
    for name, minimum in (("webhook_timeout_ms", 1), ("webhook_grace_seconds", 0)):
        if name in update:
            changes[name] = None if update[name] is None else _require_int(name, update[name], minimum)
    if "fault" in update:
        fault = update["fault"]
        if fault is not None and fault not in ALL_FAULTS:
            raise KnobError(f"fault must be null or one of: {', '.join(sorted(ALL_FAULTS))}")
        changes["fault"] = fault
        changes["fault_count"] = 0 if fault is None else 1
    if "fault_count" in update:
        changes["fault_count"] = _require_int("fault_count", update["fault_count"], UNLIMITED)
    if "webhook_fault" in update:
        fault = update["webhook_fault"]
        if fault is not None and fault not in WEBHOOK_FAULTS:
            raise KnobError(f"webhook_fault must be null or one of: {', '.join(sorted(WEBHOOK_FAULTS))}")
        changes["webhook_fault"] = fault
        changes["webhook_fault_count"] = 0 if fault is None else 1
    if "webhook_fault_count" in update:
        changes["webhook_fault_count"] = _require_int("webhook_fault_count", update["webhook_fault_count"], UNLIMITED)
    return replace(current, **changes)
