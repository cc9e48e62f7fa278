"""The layers (docs/design.md, Layout and layers) import only downwards; import-linter checks pyproject.toml."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_it_keeps_every_import_contract():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


SECOND_NAME = re.compile(r"^\s*(from|import) images\b|sys\.path.*images")


def test_the_node_packages_have_one_name_each():
    """conpaas_agent and conpaas_common are installed packages: importing them as `images.…`, or
    putting images/ on sys.path, would load one file under two module names."""
    folders = ["conpaas_site", "api", "console", "workflows", "routing", "versions", "services", "images"]
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in [*folders, "conpaas_cli", "tests", "bench"]
        for path in (ROOT / folder).rglob("*.py")
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SECOND_NAME.search(line)
    ]
    assert offenders == []
