"""`deploy`, `push` (pack, upload and deploy) and `swap`."""

import itertools
import json
import shlex
from argparse import Namespace
from pathlib import Path

from conpaas_cli.client import Client
from conpaas_cli.commands.common import client, find_environment, find_service, find_version
from conpaas_cli.commands.operations import finish
from conpaas_cli.commands.versions import packing, say_what_is_sent, upload, uploaded
from conpaas_cli.errors import OK, REFUSED, CliError
from conpaas_cli.output import Progress, print_json
from conpaas_cli.packing import Code, git_label, open_code, time_label

# A swap that changes a version's settings starts it with them first: as long as a start (Tomcat's
# is the longest) for each of the two versions.
SWAP_TIMEOUT = 300


def deploy(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    find_environment(service, args.environment)
    version = find_version(api, service, args.version)
    operation = api.patch(
        f"services/{service['id']}/environments/{args.environment}/", json={"version": version["id"]}, expect=(202,)
    )
    return finish(api, operation, args, lambda _op: _deployed(api, service, args.environment, version["label"]))


def _deployed(api: Client, service: dict, environment: str, label: str) -> None:
    """What a deploy that succeeded says: the environment's version and where to see it."""
    print(f"{environment} of {service['name']} now serves {label}")
    if environment == "production":
        if service.get("url"):
            print(f"url: {service['url']}")
        return
    preview_url = api.get(f"services/{service['id']}/environments/{environment}/").get("preview_url")
    if preview_url:
        print(f"preview: {preview_url}")


def push(args: Namespace) -> int:
    """Pack DIR (or take an archive file), upload it as a code version and deploy it into ENV."""
    source = Path(args.dir)
    api = client()
    service = find_service(api, args.service)
    progress = Progress()
    with open_code(source, packing(progress, args.dir)) as code:
        say_what_is_sent(progress, code)
        label, version = _push_label(api, service, code, args.label, source)
        if version:
            progress.note(f"{label} (id {version['id']}) has this content already: deploying it")
        else:
            version = upload(api, service, code, label, progress)
            progress.note(uploaded(service, version))
    try:
        if args.env not in [environment["name"] for environment in service["environments"]]:
            api.post(f"services/{service['id']}/environments/", json={"name": args.env}, expect=(201,))
            progress.note(f"created environment {args.env}")
        operation = api.patch(
            f"services/{service['id']}/environments/{args.env}/", json={"version": version["id"]}, expect=(202,)
        )
    except CliError as exc:
        raise CliError(
            f"{exc}; {version['label']} is uploaded, deploy it with: "
            + shlex.join(["conpaas", "deploy", service["name"], args.env, version["label"]]),
            exc.exit_code,
        ) from None

    def result() -> dict:
        environment = api.get(f"services/{service['id']}/environments/{args.env}/")
        return {"version": version, "environment": environment}

    return finish(api, operation, args, lambda _op: _deployed(api, service, args.env, version["label"]), result)


def _push_label(api: Client, service: dict, code: Code, wanted: str | None, source: Path) -> tuple[str, dict | None]:
    """The label to upload under, or a version that already holds this very archive to deploy instead.

    A label given with --label is used as it is (a version with that label and this content is
    deployed again; with other content, refused). Otherwise any version with this content is
    deployed again; else the label is the git commit of a clean checkout, or the time, with -2,
    -3 … when taken."""
    versions = api.get(f"services/{service['id']}/versions/")
    labelled = {version["label"]: version for version in versions}
    if wanted:
        taken = labelled.get(wanted)
        if taken is not None and taken["sha256"] != code.sha256:
            raise CliError(
                f"{service['name']} already has a version labelled {wanted!r}, with other content; "
                "choose another --label"
            )
        return wanted, taken
    same = [version for version in versions if version["sha256"] == code.sha256]
    if same:
        newest = max(same, key=lambda version: version["id"])
        return newest["label"], newest
    base = (git_label(source) if source.is_dir() else None) or time_label()
    for n in itertools.count(1):
        label = base if n == 1 else f"{base}-{n}"
        if label not in labelled:
            return label, None


def swap(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    if args.dry_run:
        return _swap_plan(api, service, args)
    swapped = api.post(
        f"services/{service['id']}/swap/", json={"environment": args.environment}, expect=(200,), timeout=SWAP_TIMEOUT
    )
    if args.json:
        print_json(swapped)
        return OK
    # The answer holds version ids; the labels are what people know their versions by.
    labels = {v["id"]: v["label"] for v in api.get(f"services/{service['id']}/versions/")}
    for name in ("production", args.environment):
        version_id = swapped.get(name)
        label = labels.get(version_id, "nothing") if version_id is not None else "nothing"
        suffix = f" (id {version_id})" if version_id is not None else ""
        print(f"{name} now serves {label}{suffix}")
    print(f"swap back: conpaas swap {service['name']} {args.environment}")
    return OK


def _swap_plan(api: Client, service: dict, args: Namespace) -> int:
    """`swap --dry-run`: what the swap would change (versions, and each setting whose value the
    instances would see change); exit 1 when it would be refused now."""
    plan = api.post(
        f"services/{service['id']}/swap/", json={"environment": args.environment, "dry_run": True}, expect=(200,)
    )
    if args.json:
        print_json(plan)
    elif not plan["refused"]:  # a refused swap has no plan worth reading: the reason says it all
        for name, change in plan["environments"].items():
            labels = change["version_label"]
            print(f"{name}: {labels['from'] or 'nothing'} -> {labels['to'] or 'nothing'}")
            for setting, values in change["settings"].items():
                kind = "sticky" if values["sticky"] else "travelling"
                print(f"  {setting}: {_setting_value(values['from'])} -> {_setting_value(values['to'])} ({kind})")
        if plan["starts_instances"]:
            print(
                "the versions start with their new environment's settings and database copies and pass "
                "their health checks before the routes flip (this takes as long as a start)"
            )
        print(
            "dry run: nothing changed"
            + ("" if plan["refused"] else f"; swap with: conpaas swap {service['name']} {args.environment}")
        )
    if plan["refused"]:
        raise CliError(f"the swap would be refused now: {plan['refused']}", REFUSED)
    return OK


def _setting_value(value: str | None) -> str:
    return "(not set)" if value is None else json.dumps(value)
