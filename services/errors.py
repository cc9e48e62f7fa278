"""The platform's refusals and failures, each carrying the HTTP answer it maps to.

The API answers `http_status` with the message as `detail`; the console shows the message in
place. One mapping, declared with the error, so no layer keeps a second table of its own."""

import difflib


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


NO_SUCH_SHOWN = 10  # names listed at most: a staff user sees every user's services


def no_such(thing: str, name, known, within: str | None = None) -> str:
    """The one sentence for "no such thing": what was asked, what there is, the close names.

    `thing` says how it was asked ("service named", "version with id"), `within` whose it would
    be (a service's name; None: the user's). The CLI may not import the platform, so
    conpaas_cli/errors.py has its twin; tests/test_no_such.py holds the two to one form."""
    known = [str(k) for k in known]
    owner, has = (f"{within} has", "it has") if within else ("", "you have")
    shown = f"{has}: " + ", ".join(known[:NO_SUCH_SHOWN]) if known else f"{has} none"
    if len(known) > NO_SUCH_SHOWN:
        shown += f", and {len(known) - NO_SUCH_SHOWN} more"
    sentence = f"{owner} no {thing} '{name}' ({shown})".lstrip()
    if close := difflib.get_close_matches(str(name), known, n=3):
        sentence += "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return sentence
