"""End-to-end fixtures: one real control plane per test session (see tests/harness.py)."""

import pytest

from tests.harness import ControlPlane


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    plane = ControlPlane(tmp_path_factory.mktemp("conpaas-home"))
    plane.manage("migrate", "--noinput")
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()
        plane.manage("down", check=False)
