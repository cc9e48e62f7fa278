import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "images"))


@pytest.fixture(autouse=True)
def _isolated_archives(request, tmp_path_factory):
    """Unit tests store archives in a fresh folder, so 'nothing stored' can be checked."""
    if "django" not in sys.modules or request.node.get_closest_marker("integration"):
        yield None
        return
    settings = request.getfixturevalue("settings")
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only
    settings.CONPAAS_ARCHIVES = tmp_path_factory.mktemp("archives")
    yield settings.CONPAAS_ARCHIVES
