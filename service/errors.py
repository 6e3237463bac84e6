"""The service's error family: every failure a caller can see is a `ServiceError` with an HTTP status, a stable
public `code` and a `message` that says what to fix. Messages are our own words, never copied from an upstream answer
or an exception, so no secret, token or linking URL can reach an error body through them.
"""

from __future__ import annotations


class StoreUnavailable(Exception):
    """The link store (Redis) cannot be used right now; callers go straight to Ayrshare. Never shown to a caller."""


class ServiceError(Exception):
    """A failure with a public status, code and message."""

    status = 500
    code = "internal_error"
    message = "The service failed unexpectedly. Try again; if it persists, check the service logs."

    def __init__(self, message: str | None = None, *, code: str | None = None, retry_after: int | None = None):
        super().__init__(message or self.message)
        if message:
            self.message = message
        if code:
            self.code = code
        self.retry_after = retry_after

    def public_fields(self) -> dict:
        """What a caller sees of this error, as data another process can answer with (our words only)."""
        return {"status": self.status, "code": self.code, "message": self.message, "retry_after": self.retry_after}

    @classmethod
    def from_public_fields(cls, fields: dict) -> ServiceError:
        """The error `public_fields` described; `ValueError` when they are not that shape."""
        try:
            retry_after = None if fields["retry_after"] is None else int(fields["retry_after"])
            error = cls(str(fields["message"]), code=str(fields["code"]), retry_after=retry_after)
            error.status = int(fields["status"])
        except (KeyError, TypeError, ValueError) as problem:
            raise ValueError("not an error's public fields") from problem
        if not 400 <= error.status < 600:
            raise ValueError("not an error's status")
        return error


class BadRequest(ServiceError):
    status = 400
    code = "bad_request"


class Unauthenticated(ServiceError):
    status = 401
    code = "auth_required"
    message = "This link needs a signature or a bearer token."


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"
    message = "This caller may not open this user's link."


class UnknownUser(ServiceError):
    status = 404
    code = "unknown_user"
    message = "No Ayrshare profile is configured for this user."


class NotFound(ServiceError):
    status = 404
    code = "not_found"
    message = "There is no such item."


class RateLimited(ServiceError):
    status = 429
    code = "rate_limited"
    message = "Too many requests. Wait a moment and try again."


class UpstreamRefused(ServiceError):
    """Ayrshare answered, but with a refusal or something we cannot use (502)."""

    status = 502
    code = "upstream_refused"
    message = "Ayrshare refused the request."


class UpstreamUnavailable(ServiceError):
    """Ayrshare is unreachable, failing or rate-limiting us (503, with Retry-After)."""

    status = 503
    code = "upstream_unavailable"
    message = "Ayrshare is unavailable right now. Try again shortly."
    request_sent = True  # False when no request left at all, so Ayrshare cannot have acted on it

    def __init__(self, message: str | None = None, *, code: str | None = None, retry_after: int | None = 5):
        super().__init__(message, code=code, retry_after=retry_after)


class UpstreamTimeout(ServiceError):
    status = 504
    code = "upstream_timeout"
    message = "Ayrshare did not answer in time. Try again shortly."
    request_sent = True  # as on UpstreamUnavailable
