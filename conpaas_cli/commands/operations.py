"""Waiting for an operation: how every command that starts one ends (`finish`), and `conpaas wait`."""

import sys
import time
from argparse import Namespace

from conpaas_cli.client import Client
from conpaas_cli.commands.common import client
from conpaas_cli.errors import OK, REFUSED, ApiError, CliError
from conpaas_cli.output import Progress, print_json, symbol

# How often an operation is polled while the CLI waits for it: often at first (most end in a
# few seconds), then less, so a long one costs the control plane a request a second at most.
POLL_SECONDS = (0.2, 0.3, 0.5, 0.8, 1.0)
FINISHED = ("succeeded", "failed")


def wait(api: Client, operation: dict) -> dict:
    """Poll the operation until it ends, showing its progress on one line; the finished operation."""
    progress, polls = Progress(), 0
    try:
        while operation["state"] not in FINISHED:
            progress.show(_status(operation))
            time.sleep(POLL_SECONDS[min(polls, len(POLL_SECONDS) - 1)])
            polls += 1
            operation = api.get(f"operations/{operation['id']}/")
    except KeyboardInterrupt:
        progress.done()
        raise CliError(
            f"stopped waiting; operation {operation['id']} goes on (see it with: conpaas wait {operation['id']})", 130
        ) from None
    progress.done()
    return operation


def _status(operation: dict) -> str:
    what = f"{operation['kind']} #{operation['id']}"
    if operation["state"] == "pending":  # its progress says why it waits (another operation, a limit)
        return f"{what}: queued, {operation['progress']}" if operation.get("progress") else f"{what}: queued"
    return f"{what}: {operation.get('progress') or operation['state']}"


def finish(api: Client, operation: dict, args: Namespace, then=None, result=None) -> int:
    """The end of every command that starts an operation: `--no-wait`, or wait and say how it went.

    `then(operation)` prints a human summary after a success; with `--json`, `result()` gives what
    to print after a success instead of the finished operation."""
    if args.no_wait:
        if args.json:
            print_json(operation)
        else:
            print(operation["id"])
            print(f"{operation['kind']} started; follow it with: conpaas wait {operation['id']}", file=sys.stderr)
        return OK
    operation = wait(api, operation)
    failed = operation["state"] == "failed"
    if args.json:
        print_json(result() if result and not failed else operation)
    elif not failed:
        print(f"{symbol(True)} {operation['kind']} succeeded")
        if then:
            then(operation)
    if failed:
        # The verdict is one line; an error that carries a log (an app's traceback) follows it, indented.
        reason, *log = (operation.get("error") or "no reason given").strip().splitlines()
        print(f"{symbol(False, sys.stderr)} {operation['kind']} failed: {reason}", file=sys.stderr)
        for line in log:
            print(f"  {line}", file=sys.stderr)
        return REFUSED
    return OK


def wait_command(args: Namespace) -> int:
    api = client()
    try:
        operation = api.get(f"operations/{args.operation}/")
    except ApiError as exc:
        if exc.status == 404:
            raise CliError(f"no operation {args.operation}") from None
        raise
    args.no_wait = False
    return finish(api, operation, args)
