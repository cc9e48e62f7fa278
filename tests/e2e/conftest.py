"""End-to-end tests use the session's `control_plane` fixture from tests/conftest.py."""
