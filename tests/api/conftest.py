import pytest
from rest_framework.test import APIClient

from services import tokens
from tests.factories import ServiceFactory


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {tokens.issue(user)[1]}")
    return client


@pytest.fixture
def api(alice):
    return client_for(alice)


@pytest.fixture
def service(alice):
    return ServiceFactory(owner=alice, name="shop")
