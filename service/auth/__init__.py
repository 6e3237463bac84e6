"""Who is asking: signed links, the internal bearer token, session JWTs, a trusted auth proxy."""

from .authenticator import Authenticator, require_internal_token
from .caller import Caller, PresentedCredentials
from .signed_links import breaks_lines, check_signature, sign, signed_path

__all__ = [
    "Authenticator",
    "Caller",
    "PresentedCredentials",
    "breaks_lines",
    "check_signature",
    "require_internal_token",
    "sign",
    "signed_path",
]
