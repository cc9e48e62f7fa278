import pytest
from django.test import Client

from tests.factories import ServiceFactory


@pytest.fixture
def client(alice) -> Client:
    """A browser session signed in as alice."""
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def service(alice):
    return ServiceFactory(owner=alice, name="shop")
