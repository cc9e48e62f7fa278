"""`db`: a data service's client shell, its export, and loading a dump into it."""

import os
import sys
from argparse import Namespace
from pathlib import Path

from conpaas_cli.client import Client
from conpaas_cli.commands.common import client, confirm_name, find_service
from conpaas_cli.commands.operations import finish
from conpaas_cli.errors import CliError
from conpaas_cli.output import Progress, human_size, print_json, short_time, table

# What each data service's shell and export run; the password goes in the client's environment.
DB_CLIENTS = {
    "postgresql": {"shell": "psql", "dump": "pg_dump", "secret": "PGPASSWORD", "package": "postgresql-client"},
    "mysql": {"shell": "mariadb", "dump": "mariadb-dump", "secret": "MYSQL_PWD", "package": "mariadb-client"},
    "redis": {"shell": "redis-cli", "dump": "redis-cli", "secret": "REDISCLI_AUTH", "package": "redis-tools"},
}


def db(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    if service["runtime"] not in DB_CLIENTS:
        what = f"{service['name']} is a {service['runtime']} service"
        raise CliError(f"{what}, not a database (postgresql, redis, mysql)")
    if args.action != "restore" and (args.time or args.into or args.yes):
        raise CliError("--time, --into and --yes go with `conpaas db SERVICE restore`")
    if args.action == "load":
        return _db_load(api, service, args)
    if args.action in BACKUP_ACTIONS:
        return BACKUP_ACTIONS[args.action](api, service, args)
    if args.file:
        raise CliError(f"`conpaas db SERVICE {args.action}` takes no file")
    creds = api.get(f"services/{service['id']}/credentials/")
    if args.action == "credentials":
        print_json(creds)  # the owner's own request, as the API answers it
        return 0
    tool = DB_CLIENTS[service["runtime"]]
    where = ["-h", creds["host"], "-p", str(creds["port"])]
    if service["runtime"] == "postgresql":
        argv = [tool[args.action], *where, "-U", creds["user"], "-d", creds["database"]]
    elif service["runtime"] == "mysql":
        where = ["--no-defaults", "-h", creds["host"], "-P", str(creds["port"]), "-u", creds["user"]]
        consistent = ["--single-transaction", "--routines", "--triggers"] if args.action == "dump" else []
        argv = [tool[args.action], *where, *consistent, creds["database"]]
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


# --- backups -------------------------------------------------------------------------------


def _backups(api: Client, service: dict, args: Namespace) -> int:
    if args.file:
        raise CliError("`conpaas db SERVICE backups` takes no argument")
    listed = api.get(f"services/{service['id']}/backups/")
    if args.json:
        print_json(listed)
        return 0
    policy = api.get(f"services/{service['id']}/backups/policy/")
    if policy["enabled"]:
        print(f"backups every {policy['every_hours']} h, kept {policy['keep_days']} days")
    else:
        print("scheduled backups off")
    if service.get("backup_problem"):
        print(f"problem: {service['backup_problem']}", file=sys.stderr)
    if not listed:
        print("no backups yet")
        return 0
    window = listed[0]["recovery_window"]
    if service["runtime"] == "postgresql" and window["from"] and window["to"]:
        print(f"restorable to any moment from {short_time(window['from'])} to {short_time(window['to'])} (UTC)")
    elif service["runtime"] == "postgresql" and window["from"]:
        since = short_time(window["from"])
        print(f"restored in place at {since} (UTC): no moment restorable until its WAL is archived")
    table(
        ["id", "created", "size", "state", "verified"],
        [
            (b["id"], short_time(b["created"]), human_size(b["size"]), b["state"], VERIFIED[b["verified"]])
            for b in listed
        ],
    )
    return 0


VERIFIED = {True: "yes", False: "NO", None: "not yet"}


def _backup(api: Client, service: dict, args: Namespace) -> int:
    if args.file:
        raise CliError("`conpaas db SERVICE backup` takes no argument")
    operation = api.post(f"services/{service['id']}/backups/", json={}, expect=(202,))

    def taken(_operation: dict) -> None:
        newest = api.get(f"services/{service['id']}/backups/")[0]
        print(f"backup {newest['id']}: {human_size(newest['size'])}, verified {VERIFIED[newest['verified']]}")

    return finish(api, operation, args, then=taken)


def _restore(api: Client, service: dict, args: Namespace) -> int:
    body: dict = {}
    if args.file:
        if not args.file.isdigit():
            raise CliError(f"{args.file}: a backup's id is a number (see: conpaas db {service['name']} backups)")
        body["backup"] = int(args.file)
    if args.time:
        body["time"] = args.time
    if args.into:
        body["into"] = args.into
    elif not args.yes:
        confirm_name(
            service["name"],
            f"This replaces the data of {service['name']} with the backup's (later writes are gone)",
            undone="not restored",
        )
    operation = api.post(f"services/{service['id']}/restore/", json=body, expect=(202,))

    def restored(_operation: dict) -> None:
        if args.into:
            print(f"{args.into}: {find_service(api, args.into)['url']}")

    return finish(api, operation, args, then=restored)


BACKUP_ACTIONS = {"backups": _backups, "backup": _backup, "restore": _restore}
