"""images/boot.sh on a VM: which Debian packages it installs for a node's roles and runtime.

apt-get, systemctl and update-rc.d are stand-ins that record their arguments (nothing is
installed or disabled on this machine); the agent's interpreter is one that records how it was
started."""

import json
import stat
import subprocess

import pytest

from tests.agent.agent_helpers import IMAGES

RECORDER = '#!/bin/sh\necho "$(basename "$0") $*" >> "$RECORD"\n'


@pytest.fixture
def vm(tmp_path):
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name in ("apt-get", "systemctl", "update-rc.d", "agent-python"):
        (stubs / name).write_text(RECORDER)
        (stubs / name).chmod(stat.S_IRWXU)
    record = tmp_path / "record"

    def boot(**config) -> list[str]:
        path = tmp_path / "node.json"
        path.write_text(json.dumps({"name": "n", "secret": "s", "roles": ["backend"], **config}))
        env = {
            "PATH": f"{stubs}:/usr/bin:/bin",
            "RECORD": str(record),
            "CONPAAS_PYTHON": str(stubs / "agent-python"),
            "HOME": str(tmp_path),
        }
        subprocess.run(["sh", str(IMAGES / "boot.sh"), str(path)], env=env, check=True, timeout=60)
        lines = record.read_text().splitlines()
        record.unlink()
        return lines

    return boot


def installed(lines: list[str]) -> set[str]:
    (install,) = [line for line in lines if line.startswith("apt-get install")]
    return {word for word in install.split()[2:] if not word.startswith("-")}


PYTHON = {"python3", "python3-venv", "gunicorn"}


@pytest.mark.parametrize(
    ("config", "packages"),
    [
        ({"roles": ["proxy", "backend"]}, PYTHON | {"haproxy"}),
        ({"runtime": "python"}, PYTHON),
        (
            {"runtime": "php"},
            PYTHON
            | {
                "nginx-light",
                "php-fpm",
                *(f"php-{e}" for e in ("pgsql", "mysql", "mbstring", "intl")),
                *(f"php-{e}" for e in ("xml", "gd", "zip", "curl", "apcu", "redis")),
            },
        ),
        ({"runtime": "static"}, PYTHON | {"nginx-light"}),
        (
            {"runtime": "java", "roles": ["proxy", "backend"]},
            PYTHON | {"haproxy", "openjdk-17-jre-headless", "tomcat10-common"},
        ),
        ({"runtime": "java", "roles": ["proxy"]}, PYTHON | {"haproxy"}),  # no instance runs on it
    ],
)
def test_a_vm_installs_the_packages_of_its_roles_and_runtime(vm, config, packages):
    lines = vm(**config)
    assert lines[0] == "apt-get update -q"
    assert installed(lines) == packages
    assert lines[-1].startswith("agent-python -m conpaas_agent "), "then it runs the agent"


def test_the_recipes_name_packages_debian_has():
    # Every name is a real package of this (Debian) machine's archive: a typo would fail a VM's boot.
    names = set()
    for recipe in (IMAGES / "recipes").glob("*.txt"):
        for line in recipe.read_text().splitlines():
            names.update(line.split("#")[0].split())
    known = subprocess.run(["apt-cache", "show", *sorted(names)], capture_output=True, text=True)
    found = {line.split(": ", 1)[1] for line in known.stdout.splitlines() if line.startswith("Package: ")}
    assert found == names, f"unknown to apt: {names - found}"
