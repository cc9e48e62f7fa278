"""`logs`: the recent log lines of an environment's instances, and `--follow`."""

import json
import sys
from argparse import Namespace

from conpaas_cli.commands.common import client, find_service, follow
from conpaas_cli.errors import OK, CliError
from conpaas_cli.output import print_json


def logs(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    path = f"services/{service['id']}/logs/"
    params = {"environment": args.environment, "lines": args.lines}
    if args.failed:
        if args.follow:
            raise CliError("--failed shows kept logs, which do not grow: leave out --follow")
        params["failed"] = "true"
    found = api.get(path, params=params)
    if args.json and not args.follow:
        print_json(found)
        return OK
    failure = found.get("last_failure")
    if args.failed:
        if failure is None:
            raise CliError(f"no failed deploy into {service['name']} {args.environment} left logs")
        print(f"the logs of {failure['version']}, kept at {failure['at']} when its failed deploy retired it:")
    elif not found["lines"] and failure is not None:
        print(
            f"{args.environment} has no log lines; {failure['version']}'s deploy failed at {failure['at']}: "
            f"conpaas logs {service['name']} {args.environment} --failed",
            file=sys.stderr,
        )
    seen: dict[tuple, list[str]] = {}  # (node, instance, file) -> its lines at the last poll
    warned: set[str] = set()

    def show(found: dict) -> None:
        for error in found["errors"]:
            if error not in warned:  # a node that stays silent is said once
                print(f"warning: {error}", file=sys.stderr)
                warned.add(error)
        files: dict[tuple, list[str]] = {}
        for entry in found["lines"]:
            files.setdefault((entry["node"], entry["instance"], entry["file"]), []).append(entry["line"])
        for key, lines in files.items():
            node, instance, file = key
            for line in new_lines(seen.get(key, []), lines):
                entry = {"node": node, "instance": instance, "file": file, "line": line}
                print(json.dumps(entry, ensure_ascii=False) if args.json else f"{instance} {file}: {line}")
            seen[key] = lines

    show(found)
    if args.follow:
        follow(args, lambda: show(api.get(path, params=params)))
    return OK


def new_lines(before: list[str], now: list[str]) -> list[str]:
    """The lines of `now` (a file's last lines) written after `before` (its last lines at the
    previous poll): what follows the longest end of `before` that `now` starts with. Lines
    carry timestamps, so an overlap is rarely a coincidence; with more new lines than were
    asked for, all of `now` is new."""
    for start in range(len(before)):
        overlap = before[start:]
        if now[: len(overlap)] == overlap:
            return now[len(overlap) :]
    return now
