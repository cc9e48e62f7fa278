"""Wikipedia's software on ConPaaS, as the original ConPaaS demo ran it: MediaWiki on a php
service in front of a PostgreSQL service loaded from a dump. Nothing of MediaWiki is in this
repository: this script packs Debian's `mediawiki` package as it is installed on this machine.

    sudo apt-get install --no-install-recommends mediawiki   # ./run tests installs it (./run up does not)
    python3 examples/mediawiki/build.py                      # wiki.sql, wiki-v1.zip, wiki-v2.zip here
    conpaas apply examples/mediawiki/manifest.yaml

It makes:

- `wiki-v1.zip`: /usr/share/mediawiki, every file unchanged, but for `LocalSettings.php` (this
  folder's: it reads DATABASE_URL). Debian links parts of the tree to /var/lib/mediawiki and
  archives hold no links, so the links are followed: `extensions/` holds the bundled extensions
  (Debian's `extensions-core/`, which the links point into, is left out: it would be a second
  copy); Debian's `config/` (empty), `images/` (uploads, turned off) and its LocalSettings.php
  link are left out.
- `wiki-v2.zip`: the same, with another name and skin (V2_SETTINGS): what a preview shows.
- `wiki.sql`: a dump of the database MediaWiki's own installer (maintenance/install.php) made,
  plus a page (Demo_page), from a scratch database on a PostgreSQL server (--postgres, default
  postgres://postgres@127.0.0.1:5432: a user that may create databases), dropped after.
  `pg_dump --no-owner --no-privileges`: the platform loads it as its database's own user. The
  installer's administrator (Admin) gets a random password nobody keeps: anyone edits, as
  MediaWiki allows by default, and its API takes anonymous edits (the test saves one).

The zips are the same bytes for the same package (sorted, the files' own times), so applying
the manifest again after a rebuild changes nothing. The test tests/e2e/test_mediawiki.py uses
this script."""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
MEDIAWIKI = Path("/usr/share/mediawiki")
# Debian's parts of the tree that are not MediaWiki's code (see the docstring).
LEFT_OUT = {"LocalSettings.php", "config", "images", "extensions-core"}
LOCAL_SETTINGS = HERE / "LocalSettings.php"
# What v2 changes: visible on every page.
V2_SETTINGS = """
# v2 of the example (examples/mediawiki/build.py): a new name and a new look.
$wgSitename = "ConPaaS wiki v2";
$wgDefaultSkin = "timeless";
"""
DEMO_PAGE = "Demo_page"
DEMO_TEXT = "This page was loaded from a dump that MediaWiki's own installer made."


def local_settings(version: str = "v1") -> str:
    text = LOCAL_SETTINGS.read_text()
    return text + V2_SETTINGS if version == "v2" else text


def mediawiki_files(tree: Path = MEDIAWIKI) -> Iterator[tuple[str, Path]]:
    """(name in the archive, path) of every folder and file of the installed MediaWiki, links
    followed, sorted; folders' names end with '/'."""
    if not (tree / "index.php").is_file():
        raise SystemExit(f"no MediaWiki in {tree}: apt-get install --no-install-recommends mediawiki")
    for top in sorted(os.listdir(tree)):
        if top in LEFT_OUT:
            continue
        path = tree / top
        if not path.is_dir():
            yield top, path
            continue
        for folder, dirs, files in os.walk(path, followlinks=True):
            dirs.sort()
            relative = Path(folder).relative_to(tree).as_posix()
            yield relative + "/", Path(folder)
            for name in sorted(files):
                yield f"{relative}/{name}", Path(folder) / name


def pack(folder: Path, versions: tuple[str, ...] = ("v1", "v2"), tree: Path = MEDIAWIKI) -> dict[str, Path]:
    """`folder/wiki-<version>.zip` for each of `versions`: MediaWiki, zipped once, and our
    LocalSettings.php for that version added to a copy."""
    mediawiki = folder / "mediawiki.zip.partial"
    with zipfile.ZipFile(mediawiki, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name, path in mediawiki_files(tree):
            archive.write(path, name)
    packed = {}
    for version in versions:
        destination = folder / f"wiki-{version}.zip"
        partial = destination.with_name(destination.name + ".partial")
        shutil.copyfile(mediawiki, partial)
        settings = zipfile.ZipInfo("LocalSettings.php", date_time=(2024, 1, 1, 0, 0, 0))
        settings.external_attr = 0o644 << 16
        with zipfile.ZipFile(partial, "a", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(settings, local_settings(version), compress_type=zipfile.ZIP_DEFLATED)
        packed[version] = partial.replace(destination)
    mediawiki.unlink()
    return packed


def installer_dump(
    destination: Path,
    postgres: str = "postgres://postgres@127.0.0.1:5432",
    scratch_prefix: str = "mediawiki_install",
    tree: Path = MEDIAWIKI,
) -> Path:
    """Run MediaWiki's installer into a scratch database of `postgres` (`<scratch_prefix>_<random>`),
    add the demo page, and dump it as plain SQL to `destination`; the scratch database is dropped,
    even on failure."""
    server = urlsplit(postgres)
    host, port, user = server.hostname or "127.0.0.1", str(server.port or 5432), server.username or "postgres"
    env = {**os.environ, "PGHOST": host, "PGPORT": port, "PGUSER": user, "PGPASSWORD": server.password or ""}
    scratch = f"{scratch_prefix}_{secrets.token_hex(4)}"

    def run(*argv: str, input: str | None = None) -> None:
        done = subprocess.run(argv, env=env, input=input, capture_output=True, text=True, timeout=300)
        if done.returncode:
            what = Path(argv[1]).name if argv[0] == "php" else argv[0]
            raise RuntimeError(f"{what} failed: {done.stdout}{done.stderr}")

    run("psql", "-X", "-q", "-d", "postgres", "-c", f'CREATE DATABASE "{scratch}"')
    try:
        with tempfile.TemporaryDirectory() as confpath:
            # --confpath: the installer writes its LocalSettings.php there, not into Debian's /etc.
            run(
                "php", str(tree / "maintenance" / "install.php"),
                "--dbtype", "postgres", "--dbserver", host, "--dbport", port, "--dbname", scratch,
                "--installdbuser", user, "--installdbpass", server.password or "",
                "--dbuser", user, "--dbpass", server.password or "",
                "--pass", secrets.token_urlsafe(16), "--scriptpath", "", "--server", "http://localhost",
                "--confpath", confpath, "--lang", "en",
                "ConPaaS wiki", "Admin",
            )  # fmt: skip
            run(
                "php", str(tree / "maintenance" / "edit.php"),
                "--conf", os.path.join(confpath, "LocalSettings.php"),
                "--user", "Admin", "--summary", "the demo's page", DEMO_PAGE,
                input=DEMO_TEXT + "\n",
            )  # fmt: skip
        partial = destination.with_name(destination.name + ".partial")
        with open(partial, "w") as out:
            subprocess.run(
                ["pg_dump", "--no-owner", "--no-privileges", "-d", scratch], env=env, check=True, stdout=out, text=True
            )
        partial.replace(destination)
    finally:
        run("psql", "-X", "-q", "-d", "postgres", "-c", f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    return destination


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432", help="where the installer runs")
    parser.add_argument("--out", type=Path, default=HERE, help="where the files go (the manifest's folder)")
    args = parser.parse_args()
    if shutil.which("pg_dump") is None or shutil.which("php") is None:
        raise SystemExit("needs php (php-cli, php-pgsql) and pg_dump (postgresql-client)")
    print(installer_dump(args.out / "wiki.sql", args.postgres))
    for path in pack(args.out).values():
        print(path)


if __name__ == "__main__":
    main()
