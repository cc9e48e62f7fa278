"""The README's example manifests apply one after another, in the README's order, as one user
would try them: service names are the user's, so no two examples may share one."""

import contextlib
import re
from pathlib import Path

from conpaas_cli.commands.apply import named_files
from conpaas_cli.packing import open_code
from services.models import Service
from workflows.applying import apply
from workflows.manifest import parse

REPO = Path(__file__).resolve().parents[2]


def readme_manifests() -> list[Path]:
    """Each examples/<name>/manifest.yaml the README names, in the order it names them."""
    named = re.findall(r"examples/([a-z0-9-]+)/", (REPO / "README.md").read_text())
    found = [REPO / "examples" / name / "manifest.yaml" for name in dict.fromkeys(named)]
    return [path for path in found if path.exists()]


def test_no_two_example_manifests_name_the_same_service():
    manifests = readme_manifests()
    assert {p.parent.name for p in manifests} >= {"notes", "manifest", "mediawiki"}
    seen = {}
    for path in manifests:
        for name in parse(path.read_text()).services:
            assert name not in seen, f"{name} is in both {seen.get(name)} and {path.parent.name}"
            seen[name] = path.parent.name


def test_the_readme_examples_apply_one_after_another(alice):
    # MediaWiki's archives are built from Debian's package (examples/mediawiki/build.py): not here.
    runnable = [p for p in readme_manifests() if all((p.parent / f).exists() for f in named_files(p.read_text()))]
    assert [p.parent.name for p in runnable] == ["notes", "manifest"]
    for path in runnable:
        text = path.read_text()
        with contextlib.ExitStack() as stack:
            files = {name: stack.enter_context(open_code(path.parent / name)).file for name in named_files(text)}
            # A name another application holds is refused here, before any step (its operations,
            # left to the workers, are not what this test is about: notes' need PostgreSQL).
            apply(alice, parse(text), files)

    services = Service.objects.filter(owner=alice)
    assert dict(services.values_list("name", "application__name")) == {
        "notes-db": "notes",
        "notes": "notes",
        "api": "greetings",
        "web": "greetings",
    }
    assert services.get(name="api").health_check_path == "/healthz"
