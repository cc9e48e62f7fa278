"""One error type for everything the CLI reports; its exit code says what kind of failure it was."""

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
