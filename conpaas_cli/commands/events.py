"""`events`: a service's history, and `--follow`."""

import json
from argparse import Namespace

from conpaas_cli.commands.common import client, find_service, follow
from conpaas_cli.errors import OK
from conpaas_cli.output import print_json, short_time


def _event_line(event: dict) -> str:
    return "  ".join(
        [
            short_time(event.get("created")),
            f"{event['action']:<14}",
            f"{event.get('outcome') or '-':<9}",
            f"{event.get('actor') or 'system':<10}",
            event.get("message") or "",
        ]
    ).rstrip()


def events(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    path = f"services/{service['id']}/events/"
    history = api.get(path)  # newest first
    last = history[0]["id"] if history else 0
    if args.limit is not None:
        history = history[: args.limit]
    if args.json and not args.follow:
        print_json(history)
        return OK
    show = (lambda e: print(json.dumps(e, ensure_ascii=False))) if args.json else (lambda e: print(_event_line(e)))
    for event in reversed(history):
        show(event)
    if args.follow:

        def poll() -> None:
            nonlocal last
            for event in reversed(api.get(path, params={"since": last})):
                show(event)
                last = max(last, event["id"])

        follow(args, poll)
    return OK
