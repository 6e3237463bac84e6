"""Ayrshare itself: the client for the calls we make, its transport with retries and deadlines, the circuit
breaker, and the values exchanged."""

from .ayrshare import AllowedLinkHosts, AyrshareClient, EmailSent
from .circuit import CircuitBreaker, CircuitOpen
from .models import Link, LinkOptions
from .transport import MalformedAnswer, UpstreamNotFound

__all__ = [
    "AllowedLinkHosts",
    "AyrshareClient",
    "CircuitBreaker",
    "CircuitOpen",
    "EmailSent",
    "Link",
    "LinkOptions",
    "MalformedAnswer",
    "UpstreamNotFound",
]
