import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import ServiceFactory


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def api(alice):
    return client_for(alice)


@pytest.fixture
def service(alice):
    return ServiceFactory(owner=alice, name="shop")
