"""What the control plane keeps in CONPAAS_HOME is its own: tenant code runs as other Unix users
(isolated nodes), so no file or folder there may be readable, writable or crossable by them."""

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.harness import REPO


def test_a_new_installation_keeps_its_home_to_itself():
    parent = Path(tempfile.mkdtemp(prefix="conpaas-perms-"))
    try:
        parent.chmod(0o755)  # a folder anyone may cross, like /srv or a checkout's
        home = parent / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONPAAS_", "DATABASE_URL"))}
        env["CONPAAS_HOME"] = str(home)
        subprocess.run(
            [sys.executable, str(REPO / "manage.py"), "migrate", "--noinput", "-v", "0"],
            env=env,
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=120,
        )
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        kept = [home / "conpaas.sqlite3", home / "secret_key"]
        assert all(path.exists() for path in kept)
        for folder, folders, files in os.walk(home):
            for name in [*folders, *files]:
                mode = os.lstat(os.path.join(folder, name)).st_mode
                assert not mode & 0o077, f"{name} is {stat.filemode(mode)}"
    finally:
        subprocess.run(["rm", "-rf", str(parent)], check=True)


def test_an_older_installation_is_closed_at_the_next_start(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONPAAS_", "DATABASE_URL"))}
    env["CONPAAS_HOME"] = str(home)
    subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "check"], env=env, cwd=REPO, check=True, capture_output=True
    )
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
