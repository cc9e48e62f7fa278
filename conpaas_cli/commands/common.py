"""What every command uses: the client of the stored login, finding a service, code version or
environment by name, following what the server adds (`events -f`, `logs -f`), and the name typed
before what cannot be undone."""

import sys
import time
from argparse import Namespace

from conpaas_cli import config
from conpaas_cli.client import Client
from conpaas_cli.errors import USAGE, CliError, no_such

FOLLOW_SECONDS = 1.0  # how often `events --follow` asks for new events


def client() -> Client:
    stored = config.load()
    return Client(stored["url"], stored["token"])


def find_service(api: Client, name_or_id: str) -> dict:
    """A service by name, or by numeric id when no service has that name."""
    services = api.get("services/")
    named = [service for service in services if service["name"] == name_or_id]
    if len(named) > 1:  # staff see every user's services, and names are unique per owner only
        ids = ", ".join(str(service["id"]) for service in named)
        raise CliError(f"several services are named {name_or_id!r} (ids {ids}); give the id instead")
    if named:
        return named[0]
    if name_or_id.isdigit():
        for service in services:
            if service["id"] == int(name_or_id):
                return service
    raise CliError(no_such("service named", name_or_id, sorted({service["name"] for service in services})))


def find_version(api: Client, service: dict, label_or_id: str) -> dict:
    versions = api.get(f"services/{service['id']}/versions/")
    for version in versions:
        if version["label"] == label_or_id:
            return version
    if label_or_id.isdigit():
        for version in versions:
            if version["id"] == int(label_or_id):
                return version
    raise CliError(no_such("version", label_or_id, [version["label"] for version in versions], service["name"]))


def find_environment(service: dict, name: str) -> dict:
    for environment in service["environments"]:
        if environment["name"] == name:
            return environment
    known = [environment["name"] for environment in service["environments"]]
    raise CliError(no_such("environment named", name, known, service["name"]))


def production_label(service: dict) -> str | None:
    for environment in service.get("environments", []):
        if environment["name"] == "production":
            return environment.get("version_label")
    return None


def follow(args: Namespace, poll) -> None:
    """Call `poll` every FOLLOW_SECONDS until Ctrl-C, or for --follow-seconds."""
    deadline = time.monotonic() + args.follow_seconds if args.follow_seconds is not None else None
    sys.stdout.flush()
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(FOLLOW_SECONDS if deadline is None else min(FOLLOW_SECONDS, max(0, deadline - time.monotonic())))
            poll()
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass  # Ctrl-C is how one stops following; not an error


def confirm_name(name: str, what: str, undone: str = "not deleted") -> None:
    """Ask for `name` to be typed before what cannot be undone (`what`: "This deletes shop: …");
    `undone` says what did not happen otherwise. A script says --yes."""
    if not sys.stdin.isatty():
        raise CliError(f"{undone}: confirm by typing {name} on a terminal, or give --yes", USAGE)
    print(f"{what}. Type its name to confirm: ", end="", file=sys.stderr, flush=True)  # stdout stays the result
    typed = sys.stdin.readline().strip()
    if typed != name:
        raise CliError(f"{undone}: {typed!r} is not {name!r}")
