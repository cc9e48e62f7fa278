"""`services` (list, create, show, delete), `nodes`, `scale` and `autoscale`."""

from argparse import Namespace

from conpaas_cli.commands.common import client, confirm_name, find_service, production_label
from conpaas_cli.commands.data import DB_CLIENTS
from conpaas_cli.commands.operations import finish
from conpaas_cli.errors import OK, USAGE, ApiError, CliError
from conpaas_cli.output import fields, print_json, short_time, table


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
        if service["runtime"] in DB_CLIENTS:
            what = "its data, backups, nodes and history"
        elif service["runtime"] == "storage":
            what = "its objects, nodes and history"
        else:
            what = "its nodes, code versions and history"
        confirm_name(service["name"], f"This deletes {service['name']}: {what}")
    try:
        operation = api.delete(
            f"services/{service['id']}/", expect=(202,), params={"force": "true"} if args.force else None
        )
    except ApiError as exc:
        if exc.status == 409:  # other services link it: the API names them and says how to go on
            raise CliError(f"{exc} (--force)") from None
        raise
    return finish(api, operation, args)


def nodes(args: Namespace) -> int:
    api = client()
    service = find_service(api, args.service)
    found = api.get(f"services/{service['id']}/nodes/")
    if args.json:
        print_json(found)
        return OK
    rows = [
        [n["name"], n["role"], n["state"], n["address"], n.get("cloud"), short_time(n.get("created"))] for n in found
    ]
    if any(n.get("replication_role") for n in found):  # a replicated data service's members
        for row, node in zip(rows, found, strict=True):
            lag = node.get("lag_s")
            row.append(node.get("replication_role") or "-")
            row.append("-" if lag is None else f"{lag} s")
        table(["name", "role", "state", "address", "cloud", "created", "replication", "lag"], rows)
    else:
        table(["name", "role", "state", "address", "cloud", "created"], rows)
    return OK


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
