"""`versions` (list, upload, delete) and what uploading a code version shows: packing, then sending."""

from argparse import Namespace
from pathlib import Path

from conpaas_cli.client import Client
from conpaas_cli.commands.common import client, find_service, find_version
from conpaas_cli.errors import OK, ApiError, CliError
from conpaas_cli.output import Progress, human_size, print_json, short_time, table
from conpaas_cli.packing import IGNORE_FILE, Code, open_code


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
    with open_code(Path(args.file), packing(progress, args.file)) as code:
        say_what_is_sent(progress, code)
        version = upload(api, service, code, args.label, progress)
    if args.json:
        print_json(version)
    else:
        print(uploaded(service, version))
    return OK


def packing(progress: Progress, shown: str):
    def show(files: int, done: int, total: int) -> None:
        progress.tick(f"packing {shown}: {_files(files)}, {human_size(done)} of {human_size(total)}")

    return show


def say_what_is_sent(progress: Progress, code: Code) -> None:
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


def upload(api: Client, service: dict, code: Code, label: str | None, progress: Progress) -> dict:
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


def uploaded(service: dict, version: dict) -> str:
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
