"""Ayrshare itself: the HTTP client with its retries and deadlines, the circuit breaker, and the values exchanged."""

from .ayrshare import AllowedLinkHosts, AyrshareClient, MalformedAnswer
from .circuit import CircuitBreaker, CircuitOpen
from .models import Link, LinkOptions

__all__ = [
    "AllowedLinkHosts",
    "AyrshareClient",
    "CircuitBreaker",
    "CircuitOpen",
    "Link",
    "LinkOptions",
    "MalformedAnswer",
]
