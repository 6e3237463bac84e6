"""Leased rate-limit tokens: spend a shared limit without one Redis round trip per request.

A rate limit that lives in Redis costs a round trip on every request it counts; on the cache-hit path that was most
of the work (two limits, two round trips, ~60 % of a hit in the profile). `TokenLeases` takes a key's tokens from the
shared limit in batches, with one `hit(cost=n)` of the limits library, and hands them out locally.

What this keeps and what it costs:

- **Never more than the limit.** A batch is counted in the shared store when it is taken, before any request uses
  it, and only if the whole batch fits (else one token is asked for, exactly as without leases). Every worker and
  instance together admit at most the limit (as the sliding-window counter weighs it: a token counted up to a
  second before its request can weigh slightly less once the window rolls over).
- **Tokens are counted at most `LEASE_SECONDS` before the request they admit.** A batch not spent by then is
  dropped, so a lease cannot carry old tokens into a later part of the sliding window.
- **The price is early refusals, and it is bounded.** Tokens a worker took but did not spend stay counted, so a
  key can be refused up to (batch - 1) tokens early per worker. Batches therefore start at 1 and double only while
  each one is used up within `LEASE_SECONDS` (a key as hot as that), shrink when one goes stale, and never exceed 1 %
  of the limit (`MAX_BATCH_SHARE`). Limits under 200 per window, which includes every default (120/minute per
  address, 30/minute per user, 10 per 5 minutes upstream), are therefore always spent one exact hit at a time.
- **One refill at a time per key and process.** While a batch is being fetched for a key, other requests for it wait
  for that batch instead of each asking the store too, and the next batch is at least as large as the number of
  requests that waited (within the caps above). A finished refill wakes only as many waiters as it brought tokens
  for (plus one to ask for more when that falls short). A burst of a hundred requests on one hot key then costs a
  worker a few store round trips and one wake-up per request, not a hundred requests competing for the GIL, again and
  again, with the request that has real work to do. Limits whose
  batch is capped at 1 keep one exact hit per request, concurrently, as before.
- **A refusal is remembered locally** for as long as one token takes to free up (window / limit, at most
  `REFUSAL_MEMORY_SECONDS`), so a client hammering past its limit is answered without a round trip each time.

Local state is per process, bounded (`MAX_KEYS`), and only ever errs towards refusing: forgetting it drops unspent
tokens, never grants any.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem

LEASE_SECONDS = 1.0
MAX_BATCH_SHARE = 0.01
MAX_BATCH = 256
REFUSAL_MEMORY_SECONDS = 1.0
MAX_KEYS = 4096
REFILL_WAIT_SECONDS = 1.0  # a waiter re-checks at least this often (a refill is bounded by the store's own timeout)

# (limit, identity, cost) -> whether `cost` tokens were taken from the shared limit.
TakeTokens = Callable[[RateLimitItem, str, int], bool]
# (limit, identity) -> whole seconds until the limit admits a request again (the Retry-After of a refusal).
WaitHint = Callable[[RateLimitItem, str], int]


@dataclass
class _Lease:
    refilled: threading.Condition  # on TokenLeases' lock: notified when a refill of this key's tokens ends
    tokens: int = 0
    expires: float = 0.0  # monotonic
    batch: int = 1  # the size of the next batch to ask for
    refused_until: float = 0.0  # monotonic
    retry_after: int = 1
    refilling: bool = False  # a thread of this process is asking the store for this key's next batch
    waiting: int = 0  # requests waiting for that batch


class TokenLeases:
    """Admits requests against shared limits, asking the shared store only when this process runs out of tokens."""

    def __init__(self, take: TakeTokens, wait_hint: WaitHint, clock: Callable[[], float] = time.monotonic):
        self._take = take
        self._wait_hint = wait_hint
        self._clock = clock
        self._leases: dict[tuple[RateLimitItem, str], _Lease] = {}
        self._lock = threading.Lock()

    def admit(self, item: RateLimitItem, identity: str) -> int | None:
        """Spend one token of `item` for `identity`: None when the request may go ahead, else seconds to wait."""
        key = (item, identity)
        with self._lock:
            lease = self._leases.get(key)
            if lease is None:
                if len(self._leases) >= MAX_KEYS:
                    self._leases.clear()  # drops unspent tokens only: errs towards refusing, never grants
                lease = self._leases[key] = _Lease(threading.Condition(self._lock))
            while True:
                now = self._clock()
                if now < lease.refused_until:
                    return lease.retry_after
                if lease.tokens and now < lease.expires:
                    lease.tokens -= 1
                    return None
                if not (lease.refilling and _max_batch(item) > 1):
                    break
                lease.waiting += 1
                lease.refilled.wait(REFILL_WAIT_SECONDS)
                lease.waiting -= 1
            # Out of tokens: a key that ran through its last batch within the lease earns a bigger one; a key whose
            # batch went stale (or ran out long ago) gets a smaller one. Requests already waiting are demand enough.
            hot = now < lease.expires
            max_batch = _max_batch(item)
            lease.batch = min(max_batch, lease.batch * 2) if hot else max(1, lease.batch // 2)
            lease.batch = max(lease.batch, min(max_batch, lease.waiting + 1))
            lease.tokens = 0
            lease.refilling = True
            batch = lease.batch
        taken, retry_after = 0, None
        try:
            # The shared store is asked outside the lock: other keys never wait for this round trip.
            taken = batch if batch > 1 and self._take(item, identity, batch) else 0
            if not taken and self._take(item, identity, 1):
                taken = 1
            if not taken:
                retry_after = self._wait_hint(item, identity)
        finally:
            with self._lock:
                if taken:
                    lease.tokens += taken - 1
                    lease.expires = now + LEASE_SECONDS
                elif retry_after is not None:
                    lease.batch = 1
                    lease.retry_after = retry_after
                    lease.refused_until = now + min(REFUSAL_MEMORY_SECONDS, item.get_expiry() / item.amount)
                lease.refilling = False
                if retry_after is not None:
                    lease.refilled.notify_all()  # every waiter answers with the refusal
                else:
                    # Wake only the waiters this batch can serve, plus one to ask for the next batch if it falls short:
                    # waking all of a burst's waiters to find one token each would queue them all for the GIL again.
                    lease.refilled.notify(min(lease.waiting, lease.tokens + 1))
        return retry_after


def _max_batch(item: RateLimitItem) -> int:
    return max(1, min(MAX_BATCH, int(item.amount * MAX_BATCH_SHARE)))
