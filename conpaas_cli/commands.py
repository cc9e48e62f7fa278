"""The commands: each takes the parsed arguments and returns an exit code; refusals raise `CliError`."""

import contextlib
import getpass
import itertools
import json
import os
import shlex
import sys
import time
from argparse import Namespace
from pathlib import Path

import yaml

from conpaas_cli import config
from conpaas_cli.client import Client
from conpaas_cli.errors import OK, REFUSED, USAGE, ApiError, CliError, NotLoggedIn, no_such
from conpaas_cli.output import Progress, fields, human_size, print_json, short_time, symbol, table
from conpaas_cli.packing import IGNORE_FILE, Code, git_label, open_code, time_label

# How often an operation is polled while the CLI waits for it: often at first (most end in a
# few seconds), then less, so a long one costs the control plane a request a second at most.
POLL_SECONDS = (0.2, 0.3, 0.5, 0.8, 1.0)
FOLLOW_SECONDS = 1.0  # how often `events --follow` asks for new events
FINISHED = ("succeeded", "failed")
# A swap that changes a version's settings starts it with them first: as long as a start (Tomcat's
# is the longest) for each of the two versions.
SWAP_TIMEOUT = 300


# --- login ---------------------------------------------------------------------------------------


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


# --- API tokens ------------------------------------------------------------------------------------


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


# --- helpers shared by the commands ----------------------------------------------------------------


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
    if operation["state"] == "pending":
        return f"{what}: queued"
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


# --- services ------------------------------------------------------------------------------------


def services_list(args: Namespace) -> int:
    services = client().get("services/")
    if args.json:
        print_json(services)
        return OK
    table(
        ["id", "name", "runtime", "state", "url", "production"],
        [[s["id"], s["name"], s["runtime"], s["state"], s["url"], production_label(s)] for s in services],
    )
    return OK


def services_create(args: Namespace) -> int:
    api = client()
    service = api.post("services/", json={"name": args.name, "runtime": args.runtime})
    operation = service.pop("operation")  # the operation booting its first node

    def summary(_operation):
        created = api.get(f"services/{service['id']}/")
        print(f"{created['name']} (id {created['id']}) is {created['state']} at {created['url'] or '-'}")

    return finish(api, operation, args, summary, result=lambda: api.get(f"services/{service['id']}/"))


def services_show(args: Namespace) -> int:
    api = client()
    service = api.get(f"services/{find_service(api, args.service)['id']}/")
    if args.json:
        print_json(service)
        return OK
    fields(
        [
            ("name", service["name"]),
            ("id", service["id"]),
            ("runtime", service["runtime"]),
            ("state", service["state"]),
            ("url", service["url"]),
            ("created", short_time(service.get("created"))),
        ]
    )
    print()
    table(
        ["environment", "version", "preview key", "preview url"],
        [
            [e["name"], e.get("version_label"), e.get("preview_key"), e.get("preview_url")]
            for e in service["environments"]
        ],
    )
    print()
    table(
        ["node", "role", "state", "address"],
        [[n["name"], n["role"], n["state"], n["address"]] for n in service["nodes"]],
    )
    return OK


def services_delete(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    if not args.yes:
        data = service["runtime"] in DB_CLIENTS
        confirm_name(service["name"], "its data, nodes and history" if data else "its nodes, code versions and history")
    try:
        operation = api.delete(
            f"services/{service['id']}/", expect=(202,), params={"force": "true"} if args.force else None
        )
    except ApiError as exc:
        if exc.status == 409:  # other services link it: the API names them and says how to go on
            raise CliError(f"{exc} (--force)") from None
        raise
    return finish(api, operation, args)


def confirm_name(name: str, what: str) -> None:
    """Ask for `name` to be typed before deleting it and `what` goes with it, which cannot be
    undone; a script says --yes."""
    if not sys.stdin.isatty():
        raise CliError(f"not deleted: confirm by typing {name} on a terminal, or give --yes", USAGE)
    prompt = f"This deletes {name}: {what}. Type its name to confirm: "
    print(prompt, end="", file=sys.stderr, flush=True)  # stderr, as login's: stdout stays the result
    typed = sys.stdin.readline().strip()
    if typed != name:
        raise CliError(f"not deleted: {typed!r} is not {name!r}")


# --- code versions -------------------------------------------------------------------------------


def versions_list(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    versions = api.get(f"services/{service['id']}/versions/")
    if args.json:
        print_json(versions)
        return OK
    used_by: dict[int, list[str]] = {}
    for environment in service["environments"]:
        if environment.get("version") is not None:
            used_by.setdefault(environment["version"], []).append(environment["name"])
    table(
        ["id", "label", "kind", "size", "sha256", "created", "environments"],
        [
            [
                v["id"],
                v["label"],
                v.get("kind"),
                human_size(v.get("size")),
                (v.get("sha256") or "")[:12],
                short_time(v.get("created")),
                ", ".join(used_by.get(v["id"], [])),
            ]
            for v in versions
        ],
    )
    return OK


def versions_upload(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    progress = Progress()
    with open_code(Path(args.file), _packing(progress, args.file)) as code:
        _say_what_is_sent(progress, code)
        version = _upload(api, service, code, args.label, progress)
    if args.json:
        print_json(version)
    else:
        print(_uploaded(service, version))
    return OK


def _packing(progress: Progress, shown: str):
    def show(files: int, done: int, total: int) -> None:
        progress.tick(f"packing {shown}: {_files(files)}, {human_size(done)} of {human_size(total)}")

    return show


def _say_what_is_sent(progress: Progress, code: Code) -> None:
    if code.war:
        progress.note(f"{code.tree.shown} holds only {code.war}: uploading it as it is")
    elif code.tree:
        left_out = f"; {code.tree.left_out} left out by {IGNORE_FILE}" if code.tree.left_out else ""
        progress.note(
            f"packed {_files(len(code.tree.files))} ({human_size(code.tree.size)}) "
            f"into {code.filename} ({human_size(code.size)}){left_out}"
        )


def _files(count: int) -> str:
    return "1 file" if count == 1 else f"{count} files"


def _upload(api: Client, service: dict, code: Code, label: str | None, progress: Progress) -> dict:
    def show(sent: int, size: int) -> None:
        progress.tick(f"uploading {code.filename}: {human_size(sent)} of {human_size(size)} ({sent * 100 // size}%)")

    try:
        return api.upload(
            f"services/{service['id']}/versions/", code.file, code.filename, {"label": label} if label else {}, show
        )
    except ApiError as exc:
        if exc.status != 413:
            raise
        hint = f"; leave out what the app does not need with {IGNORE_FILE}" if code.tree and not code.war else ""
        raise CliError(f"{exc} ({code.filename} is {human_size(code.size)}){hint}") from None
    finally:
        progress.done()


def _uploaded(service: dict, version: dict) -> str:
    return (
        f"uploaded {version['label']} to {service['name']} "
        f"(id {version['id']}, {human_size(version.get('size'))}, sha256 {version['sha256'][:12]})"
    )


def versions_delete(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    version = find_version(api, service, args.version)
    api.delete(f"services/{service['id']}/versions/{version['id']}/", expect=(204,))
    if args.json:
        print_json({"deleted": version})
    else:
        print(f"deleted version {version['label']} (id {version['id']}) of {service['name']}")
    return OK


# --- deploy, swap, preview -----------------------------------------------------------------------


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
    with open_code(source, _packing(progress, args.dir)) as code:
        _say_what_is_sent(progress, code)
        label, version = _push_label(api, service, code, args.label, source)
        if version:
            progress.note(f"{label} (id {version['id']}) has this content already: deploying it")
        else:
            version = _upload(api, service, code, label, progress)
            progress.note(_uploaded(service, version))
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


# --- environments and their settings ------------------------------------------------------------


def environments_list(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    environments = api.get(f"services/{service['id']}/environments/")
    if args.json:
        print_json(environments)
        return OK
    table(
        ["environment", "version", "settings", "database copy", "preview url"],
        [
            [
                e["name"],
                e.get("version_label"),
                ", ".join(sorted(e.get("settings") or {})),
                "yes" if e.get("database_copy") else "",
                e.get("preview_url"),
            ]
            for e in environments
        ],
    )
    return OK


def environments_add(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    body = {"name": args.name, "database_copy": args.database_copy}
    if args.preview_key:
        body["preview_key"] = args.preview_key
    environment = api.post(f"services/{service['id']}/environments/", json=body, expect=(201,))
    if args.json:
        print_json(environment)
        return OK
    copy = " with its own copy of the linked databases (made at its first deploy)" if args.database_copy else ""
    print(f"added environment {args.name} to {service['name']}{copy}")
    print(f"preview: {environment.get('preview_url') or '(no URL yet)'}")
    return OK


def environments_delete(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    find_environment(service, args.name)
    api.delete(f"services/{service['id']}/environments/{args.name}/", expect=(204,))
    if args.json:
        print_json({"deleted": args.name})
    else:
        print(
            f"deleted environment {args.name} of {service['name']} (its instances stopped, its database copies dropped)"
        )
    return OK


def settings(args: Namespace) -> int:
    """Print an environment's settings, or change them: the whole new set is deployed."""
    api = client()
    service = find_service(api, args.service)
    find_environment(service, args.environment)
    path = f"services/{service['id']}/environments/{args.environment}/"
    current = api.get(path).get("settings") or {}
    changes = [(pair, False) for pair in args.assignments] + [(pair, True) for pair in args.sticky or []]
    if not changes and not args.unset:
        if args.json:
            print_json(current)
        else:
            for name, setting in sorted(current.items()):
                print(f"{name}={setting['value']}" + ("  (sticky)" if setting["sticky"] else ""))
        return OK
    wanted, named = dict(current), set(args.unset or [])
    for pair, sticky in changes:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise CliError(f"{pair!r}: a setting is NAME=VALUE", USAGE)
        if name in named:
            raise CliError(f"{name} is named twice; give each setting once", USAGE)
        named.add(name)
        # A new value keeps a setting sticky (--unset it first to make it travel).
        wanted[name] = {"value": value, "sticky": sticky or current.get(name, {}).get("sticky", False)}
    for name in args.unset or []:
        if wanted.pop(name, None) is None:
            within = f"{args.environment} of {service['name']}"
            raise CliError(no_such("setting named", name, sorted(current), within), REFUSED)
    answer = api.patch(path, json={"settings": wanted}, expect=(200, 202))
    if "kind" not in answer:  # the environment serves nothing yet: kept for its first deploy
        if args.json:
            print_json(answer)
        else:
            print(f"{args.environment} of {service['name']}: settings saved; they apply at its first deploy")
        return OK
    names = sorted({pair.partition("=")[0] for pair, _ in changes} | set(args.unset or []))
    return finish(
        api,
        answer,
        args,
        lambda _op: print(
            f"{args.environment} of {service['name']} now runs with its new settings: {', '.join(names)}"
        ),
    )


def preview(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    environment = find_environment(service, args.environment)
    if args.json:
        print_json(environment)
        return OK
    if not environment.get("preview_url"):
        raise CliError(f"{service['name']} has no URL yet (service state: {service['state']})")
    if environment.get("version") is None:
        print(f"note: {args.environment} has no code version yet; deploy one first", file=sys.stderr)
    print(environment["preview_url"])
    return OK


# --- nodes, scaling, events, operations ----------------------------------------------------------


def scale(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    operation = api.post(f"services/{service['id']}/scale/", json={"role": args.role, "nodes": args.nodes})
    return finish(api, operation, args, lambda _op: print(f"{service['name']} has {args.nodes} {args.role} node(s)"))


# The `autoscale` options and the policy fields they set (PUT /services/{id}/autoscaling/).
AUTOSCALE_OPTIONS = {"p95": "target_p95_ms", "min": "min_nodes", "max": "max_nodes", "cooldown": "cooldown_s"}


def autoscale(args: Namespace) -> int:
    """Turn autoscaling on with the options given (the server keeps the others), off, or show it."""
    given = {field: getattr(args, option) for option, field in AUTOSCALE_OPTIONS.items()}
    given = {field: value for field, value in given.items() if value is not None}
    if args.off and given:
        raise CliError("--off takes no other option", USAGE)
    api = client()
    service = find_service(api, args.service)
    path = f"services/{service['id']}/autoscaling/"
    if args.off:
        policy = api.put(path, json={"enabled": False})
    elif given:
        policy = api.put(path, json={"enabled": True, **given})
    else:
        policy = api.get(path)
    if args.json:
        print_json(policy)
        return OK
    if not policy["enabled"]:
        print(f"autoscaling of {service['name']} is off ({policy['nodes']} backend node(s) running)")
    else:
        print(
            f"autoscaling {service['name']}: p95 under {policy['target_p95_ms']} ms with {policy['min_nodes']} to "
            f"{policy['max_nodes']} backend node(s), cool-down {policy['cooldown_s']} s; "
            f"{policy['nodes']} running now"
        )
    decision = policy.get("last_decision")
    if decision:
        print(f"last decision ({short_time(decision.get('time'))}): {decision['action']} — {decision['reason']}")
    return OK


def nodes(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    found = api.get(f"services/{service['id']}/nodes/")
    if args.json:
        print_json(found)
        return OK
    table(
        ["name", "role", "state", "address", "cloud", "created"],
        [[n["name"], n["role"], n["state"], n["address"], n.get("cloud"), short_time(n.get("created"))] for n in found],
    )
    return OK


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

        _follow(args, poll)
    return OK


def _follow(args: Namespace, poll) -> None:
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
        _follow(args, lambda: show(api.get(path, params=params)))
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


# --- apply ---------------------------------------------------------------------------------------


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


# --- data services ------------------------------------------------------------------------------

# What each data service's shell and export run; the password goes in the client's environment.
DB_CLIENTS = {
    "postgresql": {"shell": "psql", "dump": "pg_dump", "secret": "PGPASSWORD", "package": "postgresql-client"},
    "redis": {"shell": "redis-cli", "dump": "redis-cli", "secret": "REDISCLI_AUTH", "package": "redis-tools"},
}


def db(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    if service["runtime"] not in DB_CLIENTS:
        raise CliError(f"{service['name']} is a {service['runtime']} service, not a data service (postgresql, redis)")
    if args.action == "load":
        return _db_load(api, service, args)
    if args.file:
        raise CliError(f"`conpaas db SERVICE {args.action}` takes no file")
    creds = api.get(f"services/{service['id']}/credentials/")
    tool = DB_CLIENTS[service["runtime"]]
    where = ["-h", creds["host"], "-p", str(creds["port"])]
    if service["runtime"] == "postgresql":
        argv = [tool[args.action], *where, "-U", creds["user"], "-d", creds["database"]]
    else:
        argv = [tool[args.action], *where, *(["--rdb", "-"] if args.action == "dump" else [])]
    env = {**os.environ, tool["secret"]: creds["password"]}
    try:
        os.execvpe(argv[0], argv, env)  # the client takes over the terminal; the password never on its command line
    except FileNotFoundError:
        raise CliError(f"{argv[0]} is not installed here (Debian package {tool['package']})") from None


def _db_load(api: Client, service: dict, args: Namespace) -> int:
    if not args.file:
        raise CliError("say which dump to load: conpaas db SERVICE load FILE")
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    progress = Progress()

    def show(sent: int, size: int) -> None:
        share = sent * 100 // max(size, 1)
        progress.tick(f"uploading {path.name}: {human_size(sent)} of {human_size(size)} ({share}%)")

    try:
        with path.open("rb") as fh:
            operation = api.upload(f"services/{service['id']}/load/", fh, path.name, {}, show, "dump", (202,))
    finally:
        progress.done()

    def loaded(operation: dict) -> None:
        counters = operation.get("counters") or {}
        if counters.get("unit"):
            print(f"{counters['items']:,} {counters['unit']} loaded into {service['name']}")

    return finish(api, operation, args, then=loaded)
