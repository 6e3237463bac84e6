"""Ayrshare itself: the client for the calls we make, its transport with retries and deadlines, the circuit
breaker, and the values exchanged."""

from .ayrshare import AllowedLinkHosts, AyrshareClient, EmailSent
from .circuit import CircuitBreaker, CircuitOpen
from .models import CreatedProfile, Link, LinkedAccounts, LinkOptions
from .transport import AyrshareRefusal, DuplicateTitle, MalformedAnswer, ProfileKeyRefused, UpstreamNotFound

__all__ = [
    "AllowedLinkHosts",
    "AyrshareClient",
    "AyrshareRefusal",
    "CircuitBreaker",
    "CircuitOpen",
    "CreatedProfile",
    "DuplicateTitle",
    "EmailSent",
    "Link",
    "LinkOptions",
    "LinkedAccounts",
    "MalformedAnswer",
    "ProfileKeyRefused",
    "UpstreamNotFound",
]
