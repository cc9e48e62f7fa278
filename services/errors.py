"""The platform's refusals and failures, each carrying the HTTP answer it maps to.

The API answers `http_status` with the message as `detail`; the console shows the message in
place. One mapping, declared with the error, so no layer keeps a second table of its own."""


class ConpaasError(Exception):
    """A refusal or failure whose message is meant for the user."""

    http_status = 400


class NotFound(ConpaasError):
    """The object does not exist, or the user may not see it."""

    http_status = 404


class Conflict(ConpaasError):
    """The request conflicts with the current state (busy, in use, unhealthy)."""

    http_status = 409


class OperationFailed(ConpaasError):
    """The operation cannot go on; the message is shown to the user as the operation's error.

    Raised synchronously (a router that does not answer during a swap), it is the platform's
    trouble rather than the request's: 503."""

    http_status = 503


class QuotaExceeded(ConpaasError):
    """The owner's quota does not allow it; nothing was stored or started. Operators raise
    quotas per user in the admin."""

    http_status = 403
