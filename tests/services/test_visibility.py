"""Who sees what: the one rule per model (`visible_to`) that the API and the console both call."""

import pytest
from django.core.exceptions import ValidationError
from django.http import Http404

from services.choices import OperationKind
from services.models import Application, Operation, Service
from tests.factories import ServiceFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_it_shows_a_user_their_own_services_only(alice, bob):
    mine = ServiceFactory(owner=alice, name="shop")
    ServiceFactory(owner=bob, name="blog")

    assert list(Service.objects.visible_to(alice)) == [mine]


def test_it_shows_staff_every_service(alice, bob):
    ServiceFactory(owner=alice, name="shop")
    ServiceFactory(owner=bob, name="blog")
    staff = UserFactory(username="root", is_staff=True)

    assert sorted(Service.objects.visible_to(staff).values_list("name", flat=True)) == ["blog", "shop"]


def test_it_finds_a_visible_service_by_id(alice):
    service = ServiceFactory(owner=alice, name="shop")

    assert Service.objects.get_visible(alice, service.pk) == service


def test_it_answers_another_users_service_like_a_missing_one(alice, bob):
    theirs = ServiceFactory(owner=bob, name="blog")

    with pytest.raises(Http404):
        Service.objects.get_visible(alice, theirs.pk)
    with pytest.raises(Http404):
        Service.objects.get_visible(alice, theirs.pk + 1000)


def test_it_shows_a_user_their_own_applications_only(alice, bob):
    mine = Application.objects.create(owner=alice, name="wiki")
    Application.objects.create(owner=bob, name="bobs")
    staff = UserFactory(username="root", is_staff=True)

    assert list(Application.objects.visible_to(alice)) == [mine]
    assert Application.objects.visible_to(staff).count() == 2


def test_it_shows_the_operations_a_user_started_and_those_on_their_services(alice, bob):
    service = ServiceFactory(owner=alice, name="shop")
    started = Operation.objects.create(owner=alice, kind=OperationKind.DELETE)
    on_theirs = Operation.objects.create(owner=None, service=service, kind=OperationKind.HEAL)
    Operation.objects.create(owner=bob, kind=OperationKind.DELETE)
    staff = UserFactory(username="root", is_staff=True)

    assert set(Operation.objects.visible_to(alice)) == {started, on_theirs}
    assert Operation.objects.visible_to(staff).count() == 3


def test_it_refuses_a_second_application_of_the_same_name(alice, bob):
    Application.objects.create(owner=alice, name="wiki")

    with pytest.raises(ValidationError) as refused:
        Application(owner=alice, name="wiki").validate()
    assert refused.value.message_dict == {"name": ["you already have an application named wiki"]}
    Application(owner=bob, name="wiki").validate()  # another user's name is free


def test_it_refuses_an_application_name_that_is_not_a_slug(alice):
    with pytest.raises(ValidationError) as refused:
        Application(owner=alice, name="Wiki!").validate()
    assert list(refused.value.message_dict) == ["name"]
