"""`conpaas`: the command line. Parses arguments, runs one command, turns errors into one line and an exit code.

Exit codes: 0 ok; 1 the API refused, an operation failed, or something named was not found;
2 usage; 3 cannot reach the server, or not logged in."""

import argparse
import os
import sys
from collections.abc import Sequence

from conpaas_cli.commands import apply, auth, data, deploys, environments, events, logs, operations, services, versions
from conpaas_cli.errors import USAGE, CliError

EPILOG = """\
SERVICE is a service name or id, VERSION a code version label or id.
Exit codes: 0 ok, 1 refused/failed/not found, 2 usage, 3 cannot reach the server or not logged in.
The login is stored in $XDG_CONFIG_HOME/conpaas/config.json (or $CONPAAS_CONFIG)."""


def build_parser() -> argparse.ArgumentParser:
    # --json is accepted before and after the command: the sub-parsers leave it unset unless given.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the API's JSON")
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument(
        "--no-wait", action="store_true", help="print the operation id and return at once instead of waiting"
    )

    parser = argparse.ArgumentParser(
        prog="conpaas",
        description="Command-line client of ConPaaS: services, code versions, blue-green deploys.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", default=False, help="print the API's JSON (for scripts)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, handler, help, parents=(common,), subparsers=sub):
        p = subparsers.add_parser(name, help=help, description=help, parents=list(parents))
        p.set_defaults(handler=handler)
        return p

    p = command("login", auth.login, "log in to a ConPaaS server and store the API token")
    p.add_argument("url", metavar="URL", help="the server, e.g. https://paas.example.org")
    p.add_argument("--username", "-u", help="the user name (asked for when not given)")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from stdin (or set CONPAAS_PASSWORD); asked for otherwise",
    )
    command("logout", auth.logout, "revoke the stored token on the server and forget the login")

    tokens = command("tokens", auth.tokens_list, "list your API tokens (the one this login uses is marked)")
    token_sub = tokens.add_subparsers(dest="action", metavar="ACTION")
    command("list", auth.tokens_list, "list your API tokens", subparsers=token_sub)
    p = command("revoke", auth.tokens_revoke, "revoke one of your API tokens", subparsers=token_sub)
    p.add_argument("token", metavar="ID", type=int, help="the token's id (see: conpaas tokens)")

    services_group = sub.add_parser("services", help="list, create, show and delete services")
    services_group.set_defaults(handler=None, group=services_group)
    service_sub = services_group.add_subparsers(dest="action", metavar="ACTION")
    command("list", services.services_list, "list your services", subparsers=service_sub)
    p = command("create", services.services_create, "create a service", (common, waiting), service_sub)
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--runtime",
        default="python",
        help="python (the default), php, java, static; postgresql, mysql or redis for a data service; storage (S3)",
    )
    p = command("show", services.services_show, "show a service, its environments and nodes", subparsers=service_sub)
    p.add_argument("service", metavar="SERVICE")
    p = command("delete", services.services_delete, "delete a service and its nodes", (common, waiting), service_sub)
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for the name to be typed (for scripts)")
    p.add_argument(
        "--force", action="store_true", help="delete it even though other services link it (they keep a dead link)"
    )

    versions_group = sub.add_parser("versions", help="list, upload and delete code versions")
    versions_group.set_defaults(handler=None, group=versions_group)
    version_sub = versions_group.add_subparsers(dest="action", metavar="ACTION")
    p = command("list", versions.versions_list, "list the code versions of a service", subparsers=version_sub)
    p.add_argument("service", metavar="SERVICE")
    p = command(
        "upload",
        versions.versions_upload,
        "upload a code version: a zip, tar.gz or .war, or a directory packed into a tar.gz",
        subparsers=version_sub,
    )
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("file", metavar="PATH", help="an archive file, or a directory to pack (see: conpaas push --help)")
    p.add_argument("--label", "-l", help="the version's label (default: v1, v2, …)")
    p = command("delete", versions.versions_delete, "delete a code version no environment uses", subparsers=version_sub)
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("version", metavar="VERSION")

    p = command("deploy", deploys.deploy, "deploy a code version into an environment", (common, waiting))
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("environment", metavar="ENV", help="production, development, …")
    p.add_argument("version", metavar="VERSION")

    p = command(
        "push",
        deploys.push,
        "pack a directory, upload it as a code version and deploy it into an environment",
        (common, waiting),
    )
    p.add_argument("service", metavar="SERVICE")
    p.add_argument(
        "dir",
        metavar="DIR",
        nargs="?",
        default=".",
        help="the directory to pack (default: the current one; .git and what .conpaasignore names are left out), "
        "or an archive file (zip, tar.gz, .war) to upload as it is",
    )
    p.add_argument("--env", "-e", default="development", help="the environment (default: development; made if missing)")
    p.add_argument(
        "--label",
        "-l",
        help="the version's label (default: the short git commit when DIR is a checkout with nothing changed, "
        "else the time, UTC, as 20250131-123456)",
    )

    p = command("swap", deploys.swap, "swap an environment's code version with production's (atomic)")
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("environment", metavar="ENV", nargs="?", default="development", help="default: development")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print what the swap would change (versions, settings) and change nothing; exit 1 if it would be refused",
    )

    environments_group = sub.add_parser("environments", help="list, add and delete the environments of a service")
    environments_group.set_defaults(handler=None, group=environments_group)
    environment_sub = environments_group.add_subparsers(dest="action", metavar="ACTION")
    p = command(
        "list",
        environments.environments_list,
        "list a service's environments: version, settings, database copy, preview URL",
        subparsers=environment_sub,
    )
    p.add_argument("service", metavar="SERVICE")
    p = command("add", environments.environments_add, "add an environment to a service", subparsers=environment_sub)
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--database-copy",
        action="store_true",
        help="its own copy of each database the service links, made from production's at its first deploy",
    )
    p.add_argument("--preview-key", help="a readable preview key (default: a random one)")
    p = command(
        "delete",
        environments.environments_delete,
        "delete an environment: its route, the instances only it ran and its database copies",
        subparsers=environment_sub,
    )
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("name", metavar="NAME")

    p = command(
        "settings",
        environments.settings,
        "print an environment's settings, or change them (the new set is deployed, health-gated)",
        (common, waiting),
    )
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("environment", metavar="ENV")
    p.add_argument(
        "assignments",
        metavar="NAME=VALUE",
        nargs="*",
        help="set travelling settings (they follow the version on a swap)",
    )
    p.add_argument(
        "--sticky", metavar="NAME=VALUE", action="append", help="set a sticky setting (it stays with the environment)"
    )
    p.add_argument("--unset", metavar="NAME", action="append", help="remove a setting")

    p = command("preview", environments.preview, "print the preview URL of an environment")
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("environment", metavar="ENV", nargs="?", default="development", help="default: development")

    p = command("scale", services.scale, "set the number of nodes of a role", (common, waiting))
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("role", metavar="ROLE", choices=["backend", "proxy"], help="backend or proxy")
    p.add_argument("nodes", metavar="N", type=int)

    p = command(
        "autoscale",
        services.autoscale,
        "scale a service's backend nodes to a p95 response-time target (without options: show the policy)",
    )
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("--p95", type=int, metavar="MS", help="the p95 response time to keep under, in ms")
    p.add_argument("--min", type=int, metavar="N", help="backend nodes at least")
    p.add_argument("--max", type=int, metavar="N", help="backend nodes at most (within your node quota)")
    p.add_argument("--cooldown", type=int, metavar="S", help="seconds after a change before scaling in")
    p.add_argument("--off", action="store_true", help="stop autoscaling (the nodes stay as they are)")

    p = command("nodes", services.nodes, "list the nodes of a service")
    p.add_argument("service", metavar="SERVICE")

    p = command("events", events.events, "show the history of a service, oldest first")
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C")
    p.add_argument("--follow-seconds", type=float, metavar="S", help="with --follow: stop after S seconds")
    p.add_argument("--limit", "-n", type=int, metavar="N", help="only the N most recent events")

    p = command("logs", logs.logs, "show the recent log lines of an environment's instances")
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("environment", metavar="ENV", nargs="?", default="production", help="default: production")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until Ctrl-C")
    p.add_argument("--follow-seconds", type=float, metavar="S", help="with --follow: stop after S seconds")
    p.add_argument("--lines", "-n", type=int, default=20, metavar="N", help="the last N lines of each file (20)")
    p.add_argument(
        "--failed", action="store_true", help="the logs of the last failed deploy into ENV, kept when it was retired"
    )
    p = command("apply", apply.apply, "create or update an application from its manifest", (common, waiting))
    p.add_argument("file", metavar="FILE", help="the manifest (YAML); the paths in it are relative to it")
    p.add_argument("--dry-run", action="store_true", help="print the plan (created, changed, removed); change nothing")

    p = command(
        "db",
        data.db,
        "a data service: open its client shell (psql, mariadb, redis-cli) with its credentials; `dump` exports it to "
        "stdout; `load FILE` loads a dump with a live counter; `credentials` prints them; `backups`, `backup`, "
        "`restore` its backups",
        (common, waiting),
    )
    p.add_argument("service", metavar="SERVICE")
    p.add_argument(
        "action",
        metavar="ACTION",
        nargs="?",
        choices=["shell", "dump", "load", "credentials", "backups", "backup", "restore"],
        default="shell",
        help="shell (the default), dump, load FILE; credentials (its URL, user and password, as JSON, for "
        "a client of your own); backups (list them, verified or not), backup (take one now, "
        "verified), restore [BACKUP] [--time T] [--into NAME] [--yes]",
    )
    p.add_argument(
        "file",
        metavar="FILE|BACKUP",
        nargs="?",
        help="with load: the dump (SQL, pg_dump -Fc, Redis protocol, key value lines); with restore: a backup's id",
    )
    p.add_argument("--time", metavar="T", help="with restore (PostgreSQL): the moment to restore to, ISO 8601")
    p.add_argument("--into", metavar="NAME", help="with restore: into a new service NAME instead of in place")
    p.add_argument(
        "--yes", "-y", action="store_true", help="with restore in place: do not ask for the name to be typed (scripts)"
    )

    p = command("wait", operations.wait_command, "wait for an operation started with --no-wait")
    p.add_argument("operation", metavar="OPERATION", type=int, help="the operation id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on usage errors (2) and --help (0)
        return exc.code if isinstance(exc.code, int) else USAGE
    handler = getattr(args, "handler", None)
    if handler is None:
        (getattr(args, "group", None) or parser).print_help(sys.stderr)
        return USAGE
    if getattr(args, "follow_seconds", None) is not None and not args.follow:
        print("error: --follow-seconds goes with --follow", file=sys.stderr)
        return USAGE
    try:
        return handler(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # `conpaas events x | head`: the reader left; nothing to report
        try:  # and nothing more to write: keep the final flush at exit from failing again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
