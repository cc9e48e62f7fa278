"""`login`, `logout` and `tokens`: the stored login and the user's API tokens."""

import getpass
import os
import sys
from argparse import Namespace

from conpaas_cli import config
from conpaas_cli.client import Client
from conpaas_cli.commands.common import client
from conpaas_cli.errors import OK, USAGE, ApiError, CliError, NotLoggedIn
from conpaas_cli.output import print_json, short_time, table


def login(args: Namespace) -> int:
    url = args.url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CliError(f"the URL must start with http:// or https:// (got {args.url!r})", USAGE)
    if args.password_stdin and not args.username:
        raise CliError("--password-stdin needs --username (stdin carries only the password)", USAGE)
    username = args.username or _prompt("Username: ")
    if os.environ.get("CONPAAS_PASSWORD"):
        password = os.environ["CONPAAS_PASSWORD"]
    elif args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass("Password: ")
        except EOFError:  # no terminal and nothing on stdin (a script, </dev/null)
            raise CliError("no password given (use --password-stdin or CONPAAS_PASSWORD)", USAGE) from None
    if not username or not password:
        raise CliError("a username and a password are needed to log in", USAGE)
    try:
        answer = Client(url).post("auth/token/", json={"username": username, "password": password}, expect=(200,))
    except ApiError as exc:
        if exc.status == 404:
            raise CliError(f"{url} has no ConPaaS API (POST /api/v1/auth/token/ answered 404)") from None
        raise CliError(f"login refused: {exc}") from None
    if not isinstance(answer, dict) or not answer.get("token"):
        raise CliError(f"{url} answered without a token; is it a ConPaaS server?")
    path = config.save({"url": url, "token": answer["token"], "username": username})
    if args.json:
        print_json({"url": url, "username": username, "config": str(path)})
    else:
        print(f"logged in to {url} as {username} (token stored in {path})")
    return OK


def _prompt(text: str) -> str:
    print(text, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line:
        raise CliError("no username given (use --username)", USAGE)
    return line.strip()


def logout(args: Namespace) -> int:
    """Revoke the stored token on the server, then forget it here, even when the server cannot be reached."""
    try:
        stored = config.load()
    except CliError:  # no login, or a file that cannot be read: no token to revoke
        stored = None
    revoked = dead = False
    problem = None
    if stored:
        try:
            Client(stored["url"], stored["token"]).delete("auth/token/", expect=(204,))
            revoked = True
        except NotLoggedIn:  # the server no longer takes it: nothing left to revoke
            dead = True
        except CliError as exc:
            problem = exc
    removed = config.remove()
    if problem:
        raise CliError(
            f"{problem}; logged out here, but the token is not revoked: it works until it expires",
            problem.exit_code,
        )
    if args.json:
        print_json({"logged_out": removed, "revoked": revoked})
    elif revoked:
        print("logged out (token revoked)")
    elif dead:
        print("logged out (the token had already expired or been revoked)")
    else:
        print("logged out" if removed else "not logged in")
    return OK


def tokens_list(args: Namespace) -> int:
    found = client().get("auth/tokens/")
    if args.json:
        print_json(found)
        return OK
    table(
        ["id", "token", "created", "expires", "last used", "current"],
        [
            [
                t["id"],
                f"{t['prefix']}…",
                short_time(t.get("created")),
                short_time(t.get("expiry")),
                short_time(t.get("last_used")),
                "this login" if t.get("current") else "",
            ]
            for t in found
        ],
    )
    return OK


def tokens_revoke(args: Namespace) -> int:
    api = client()
    current = [t["id"] for t in api.get("auth/tokens/") if t.get("current")]
    api.delete(f"auth/tokens/{args.token}/", expect=(204,))
    ours = args.token in current
    if ours:  # this login's own token is dead now: keep no file that only says "not logged in"
        config.remove()
    if args.json:
        print_json({"revoked": args.token, "logged_out": ours})
    else:
        print(f"revoked token {args.token}" + (", the one this login used: logged out" if ours else ""))
    return OK
