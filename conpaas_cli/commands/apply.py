"""`apply`: send a manifest and the files it names; print the plan; wait for what it started."""

import contextlib
import sys
from argparse import Namespace
from pathlib import Path

import yaml

from conpaas_cli.commands.common import client
from conpaas_cli.commands.operations import wait
from conpaas_cli.errors import OK, REFUSED, USAGE, CliError
from conpaas_cli.output import print_json, symbol
from conpaas_cli.packing import open_code


def apply(args: Namespace) -> int:
    """Send the manifest and every file it names (its paths are relative to the manifest); the
    server checks it all and answers the plan, and the operations it started unless --dry-run."""
    manifest = Path(args.file)
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {manifest}: {exc}", USAGE) from None
    api = client()
    with contextlib.ExitStack() as stack:
        files = {}
        for path in named_files(text):
            source = manifest.parent / path
            if not source.exists():
                raise CliError(f"{manifest}: {path} does not exist (paths are relative to the manifest)", USAGE)
            code = stack.enter_context(open_code(source))
            files[path] = (code.filename, code.file, "application/octet-stream")
        data = {"manifest": text, "dry_run": "true" if args.dry_run else "false"}
        applied = api.post("applications/apply/", data=data, files=files or None, expect=(200, 202))
    if args.json and (args.dry_run or args.no_wait):
        print_json(applied)
        return OK
    print_plan(applied)
    if args.dry_run or not applied["operations"]:
        return OK
    if args.no_wait:
        for operation in applied["operations"]:
            print(f"{operation['kind']} {operation['service_name']}: operation {operation['id']}")
        return OK
    finished = [wait(api, operation) for operation in applied["operations"]]
    failed = [o for o in finished if o["state"] == "failed"]
    if args.json:
        print_json({**applied, "operations": finished})
    for operation in failed:
        print(
            f"{symbol(False, sys.stderr)} {operation['kind']} {operation['service_name']} failed: "
            f"{(operation.get('error') or 'no reason given').strip()}",
            file=sys.stderr,
        )
    if not failed and not args.json:
        print(f"{symbol(True)} {applied['application']} is as its manifest says")
    return REFUSED if failed else OK


def named_files(text: str) -> list[str]:
    """The paths a manifest names (code versions, dumps), as written; the server checks the rest."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return []  # the server says what is wrong with it, with the line
    services = document.get("services") if isinstance(document, dict) else None
    paths = []
    for body in services.values() if isinstance(services, dict) else ():
        if not isinstance(body, dict):
            continue
        versions = body.get("versions")
        paths += [p for p in (versions.values() if isinstance(versions, dict) else ()) if isinstance(p, str)]
        if isinstance(body.get("dump"), str):
            paths.append(body["dump"])
    return list(dict.fromkeys(paths))


def print_plan(applied: dict) -> None:
    changes = [(kind, line) for kind in ("created", "changed", "removed") for line in applied[kind]]
    if not changes:
        print(f"{applied['application']}: nothing to change")
        return
    marks = {"created": "+", "changed": "~", "removed": "-"}
    for kind, line in changes:
        print(f"{marks[kind]} {line}")
    counts = ", ".join(f"{len(applied[kind])} {kind}" for kind in ("created", "changed", "removed"))
    print(f"{applied['application']}: {counts}" + (" (dry run: nothing changed)" if applied["dry_run"] else ""))
