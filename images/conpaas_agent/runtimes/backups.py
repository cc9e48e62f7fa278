"""Backups of a postgresql instance in S3 through Debian's barman-cloud 3.4 (/usr/bin/barman-cloud-*):
the spec's S3 locations, checked, and the barman commands that use them.

The keys of each location go into one 0600 AWS config file of the instance, one profile per use
(``backup``: where the server archives and backs up to; ``restore``: where it restores from);
commands name the profile (``-P``) and get the file's path in their environment, so no secret is
ever on a command line, in a log or in an answer. Standard library only: barman runs as its own
processes (Debian's python3 with its boto3).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from datetime import UTC, datetime
from urllib.parse import urlsplit

from conpaas_common.wire import BARMAN_SERVER

from .base import InstanceError

BARMAN = "/usr/bin/barman-cloud-"
# WAL archiving through barman's own entry point, with gzip at level 6 (wal_archive.py says why),
# run by Debian's python3, which has barman.
WAL_ARCHIVE = ["/usr/bin/python3", os.path.join(os.path.dirname(os.path.abspath(__file__)), "wal_archive.py")]
BACKUP_PROFILE, RESTORE_PROFILE = "backup", "restore"
# barman-cloud-backup's ids are its start time: 20261207T203000.
BACKUP_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9._/-]{0,200}$")
_ACCESS_KEY_RE = re.compile(r"^[A-Za-z0-9_+/=.-]{1,128}$")
_SECRET_KEY_RE = re.compile(r"^[A-Za-z0-9_+/=.-]{1,256}$")  # one line of an INI file, nothing to escape
_REGION_RE = re.compile(r"^[a-z0-9-]{1,32}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9.:\[\]-]{1,255}$")
LOCATION_FIELDS = frozenset({"endpoint", "bucket", "prefix", "access_key", "secret_key", "region"})
# A slow store or a large database: the commands below are bounded, never left hanging forever.
BACKUP_TIMEOUT = 6 * 3600
LIST_TIMEOUT = 120


def location(value: object, field: str) -> dict:
    """An S3 location of the spec (backup_wire.md), checked: each value fits where it goes (a
    shell command of PostgreSQL's, an INI file) without escaping, so none can bend them."""
    if not isinstance(value, dict):
        raise InstanceError(f"{field} must be an S3 location: an object with {', '.join(sorted(LOCATION_FIELDS))}", 400)
    unknown = set(value) - LOCATION_FIELDS
    if unknown:
        raise InstanceError(f"{field}: unknown field(s) {', '.join(sorted(unknown))}", 400)
    endpoint = value.get("endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not _HOST_RE.match(parts.netloc or "")
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise InstanceError(f"{field}.endpoint must be an http:// or https:// URL of an S3 store (host and port)", 400)
    checks = (
        ("bucket", _BUCKET_RE, "a bucket name: 3 to 63 lowercase letters, digits, '.' or '-'"),
        ("prefix", _PREFIX_RE, "a path inside the bucket: letters, digits, '.', '_', '-' and '/'"),
        ("access_key", _ACCESS_KEY_RE, "an access key"),
        ("secret_key", _SECRET_KEY_RE, "a secret key"),
        ("region", _REGION_RE, "a region name such as us-east-1"),
    )
    found = {"endpoint": f"{parts.scheme}://{parts.netloc}", "prefix": "", "region": "us-east-1"}
    for name, pattern, what in checks:
        given = value.get(name) or found.get(name)  # an empty prefix or region: the default
        if not isinstance(given, str) or not pattern.match(given):
            raise InstanceError(f"{field}.{name} must be {what}", 400)
        found[name] = given
    prefix = found["prefix"].strip("/")
    if ".." in prefix.split("/") or "//" in prefix:
        raise InstanceError(f"{field}.prefix must be a path inside the bucket", 400)
    found["prefix"] = prefix
    return found


def url_of(where: dict) -> str:
    return f"s3://{where['bucket']}/{where['prefix']}" if where["prefix"] else f"s3://{where['bucket']}"


def target_time(value: object) -> str | None:
    """restore.target_time: ISO 8601 with its offset, as PostgreSQL's recovery_target_time takes it (UTC)."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise InstanceError("restore.target_time must be an ISO 8601 time with its offset (or null: the latest)", 400)
    return when.astimezone(UTC).isoformat()


class Barman:
    """The barman-cloud commands of one instance whose directory is ``directory``."""

    def __init__(self, directory: str, env: dict[str, str]):
        self.config = os.path.join(directory, "aws-config")
        self.env = {
            **env,
            "AWS_CONFIG_FILE": self.config,
            # No file of anyone else's: the keys are the profiles' alone.
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(directory, "aws-credentials-none"),
            "AWS_EC2_METADATA_DISABLED": "true",
            # barman records a backup's times in its session's time zone: UTC, the answers'.
            "PGTZ": "UTC",
        }

    def write_profiles(self, profiles: dict[str, dict]) -> None:
        lines = []
        for profile, where in profiles.items():
            lines += [
                f"[profile {profile}]",
                f"aws_access_key_id = {where['access_key']}",
                f"aws_secret_access_key = {where['secret_key']}",
                f"region = {where['region']}",
                # A store that does not answer fails a command in seconds, not boto's legacy
                # minute: PostgreSQL tries a failed WAL again itself, and sees the failure sooner.
                "retry_mode = standard",
                "max_attempts = 3",
                # An S3 store on a private network has no per-bucket host names.
                "s3 =",
                "    addressing_style = path",
                "",
            ]
        text = "\n".join(lines)
        try:
            with open(self.config) as fh:
                if fh.read() == text:
                    return
        except FileNotFoundError:
            pass
        # Whole or not at all: an archive_command may be reading it right now.
        partial = f"{self.config}.partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(partial, self.config)

    @staticmethod
    def argv(tool: str, profile: str, where: dict, options: tuple | list = (), rest: tuple | list = ()) -> list[str]:
        """``barman-cloud-<tool> [options] s3://bucket/prefix db [rest]``."""
        common = ["--cloud-provider", "aws-s3", "--endpoint-url", where["endpoint"], "-P", profile]
        command = WAL_ARCHIVE if tool == "wal-archive" else [BARMAN + tool]
        return [*command, *common, *options, url_of(where), BARMAN_SERVER, *rest]

    def shell_command(self, tool: str, profile: str, where: dict, options: list[str], rest: list[str]) -> str:
        """A command for PostgreSQL's archive_command or restore_command (run by /bin/sh, with
        the postgres process's environment, which names the AWS config file). ``rest`` follows
        the location unquoted: PostgreSQL's %p and %f."""
        command = " ".join(shlex.quote(arg) for arg in self.argv(tool, profile, where, options))
        return " ".join([command, *rest])

    def run(self, argv: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
        """Run one barman command; its output, or InstanceError with barman's own words."""
        try:
            done = subprocess.run(
                argv,
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise InstanceError(f"{os.path.basename(argv[0])} did not finish within {timeout:.0f} s", 504) from None
        except OSError as exc:
            raise InstanceError(f"{os.path.basename(argv[0])} could not run: {exc}", 500) from None
        if done.returncode != 0:
            words = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}")[-2000:]
            raise InstanceError(f"{os.path.basename(argv[0])} failed: {words}", 502)
        return done.stdout

    def list(self, profile: str, where: dict) -> list[dict]:
        """The location's finished backups, oldest first, as the agent answers them."""
        out = self.run(self.argv("backup-list", profile, where, ["--format", "json"]), LIST_TIMEOUT)
        try:
            found = json.loads(out)["backups_list"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InstanceError(f"barman-cloud-backup-list answered no list: {out[-500:]!r}", 502) from exc
        done = [info for info in found if info.get("status") == "DONE"]
        sizes = self.stored_sizes(profile, where) if done else {}
        return sorted((self.answer(info, sizes) for info in done), key=lambda backup: backup["backup_id"])

    @staticmethod
    def answer(info: dict, sizes: dict[str, int]) -> dict:
        return {
            "backup_id": info["backup_id"],
            "begin_time": _utc(info.get("begin_time")),
            "end_time": _utc(info.get("end_time")),
            "begin_wal": info.get("begin_wal"),
            "end_wal": info.get("end_wal"),
            "size": sizes.get(info["backup_id"]),
        }

    def stored_sizes(self, profile: str, where: dict) -> dict[str, int]:
        """What each backup's files take in the store, by backup id (barman-cloud records no size
        of its own), summed by Debian's python3 with its boto3, barman's own S3 client; {} when
        the store does not say."""
        prefix = "/".join(p for p in (where["prefix"], BARMAN_SERVER, "base") if p) + "/"
        argv = ["/usr/bin/python3", "-c", _SUM_SIZES, profile, where["endpoint"], where["bucket"], prefix]
        try:
            return {key: int(value) for key, value in json.loads(self.run(argv, LIST_TIMEOUT)).items()}
        except (InstanceError, ValueError, AttributeError):
            return {}


# Sizes by the first path part under the prefix: <prefix>db/base/<backup id>/…
_SUM_SIZES = """
import collections, json, sys, boto3
profile, endpoint, bucket, prefix = sys.argv[1:]
s3 = boto3.Session(profile_name=profile).client("s3", endpoint_url=endpoint)
sizes = collections.Counter()
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    for item in page.get("Contents", []):
        sizes[item["Key"][len(prefix):].split("/", 1)[0]] += item["Size"]
print(json.dumps(sizes))
"""


def _utc(ctime: str | None) -> str | None:
    """barman's JSON gives times as ctime() strings, in the session's time zone (PGTZ=UTC above)."""
    if not ctime:
        return None
    try:
        return datetime.strptime(ctime, "%a %b %d %H:%M:%S %Y").replace(tzinfo=UTC).isoformat()
    except ValueError:
        return None
