"""Errors a flow refuses with; each has a stable code and the HTTP status the API maps it to."""

from __future__ import annotations

from station.domain.errors import DomainError


class FlowError(DomainError):
    code = "refused"
    status = 409

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code
        if status:
            self.status = status
        self.details = details or {}


class NotFound(FlowError):
    code = "not_found"
    status = 404


class Unavailable(FlowError):
    """A device a person needs is offline or did not answer."""

    code = "device_unavailable"
    status = 503


class AuthFailed(FlowError):
    code = "auth_failed"
    status = 401
