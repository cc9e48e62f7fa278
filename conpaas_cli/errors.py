"""One error type for everything the CLI reports; its exit code says what kind of failure it was."""

import difflib

OK = 0
REFUSED = 1  # the API refused, an operation failed, or something named was not found
USAGE = 2  # what argparse uses for bad command lines
UNREACHABLE = 3  # cannot reach the server, or not logged in


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = REFUSED):
        super().__init__(message)
        self.exit_code = exit_code


class ApiError(CliError):
    """The API answered with a refusal; `status` is its HTTP status."""

    def __init__(self, message: str, status: int):
        super().__init__(message, REFUSED)
        self.status = status


class NotLoggedIn(CliError):
    def __init__(self):
        super().__init__("not logged in (run: conpaas login URL)", UNREACHABLE)


NO_SUCH_SHOWN = 10  # names listed at most: a staff user sees every user's services


def no_such(thing: str, name, known, within: str | None = None) -> str:
    """The one sentence for "no such thing", as the platform says it (services/errors.py, whose
    twin this is: the CLI may not import the platform; tests/test_no_such.py holds them to one form)."""
    known = [str(k) for k in known]
    owner, has = (f"{within} has", "it has") if within else ("", "you have")
    shown = f"{has}: " + ", ".join(known[:NO_SUCH_SHOWN]) if known else f"{has} none"
    if len(known) > NO_SUCH_SHOWN:
        shown += f", and {len(known) - NO_SUCH_SHOWN} more"
    sentence = f"{owner} no {thing} '{name}' ({shown})".lstrip()
    if close := difflib.get_close_matches(str(name), known, n=3):
        sentence += "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return sentence
