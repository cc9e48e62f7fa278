"""`environments` (list, add, delete), `settings` and `preview`."""

import sys
from argparse import Namespace

from conpaas_cli.commands.common import client, find_environment, find_service
from conpaas_cli.commands.operations import finish
from conpaas_cli.errors import OK, REFUSED, USAGE, CliError, no_such
from conpaas_cli.output import print_json, table


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
