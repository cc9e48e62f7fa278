"""Rules checked once more under the service's hold, and answers for a request that lost a race."""

import pytest
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from api.errors import exception_handler
from services.models import Event, Service
from tests.factories import ServiceFactory
from versions.models import Environment
from workflows import lifecycle
from workflows.environments import add_environment


def test_it_refuses_a_name_a_concurrent_create_took_after_the_check(monkeypatch, alice):
    ServiceFactory(owner=alice, name="shop")
    monkeypatch.setattr(Service, "validate", lambda self: None)  # the check ran before the other create saved

    with pytest.raises(ValidationError) as refused:
        lifecycle.create(alice, "shop", "python")

    assert refused.value.message_dict == {"name": ["you already have a service named shop"]}
    assert Service.objects.filter(owner=alice, name="shop").count() == 1


def test_it_checks_an_environment_name_again_once_it_holds_the_service(monkeypatch, service, alice):
    real_validate = Environment.validate
    checks = []

    def validate(environment):
        if not checks:  # between the first check and the hold, another request adds the same name
            Environment.objects.create(service=environment.service, name=environment.name, preview_key="other-key")
        else:
            real_validate(environment)
        checks.append(environment.name)

    monkeypatch.setattr(Environment, "validate", validate)

    with pytest.raises(ValidationError) as refused:
        add_environment(service, "staging", alice)

    assert "already has an environment named staging" in refused.value.message_dict["name"][0]
    assert service.environments.filter(name="staging").count() == 1
    assert not service.events.filter(message__contains="internal error").exists()
    assert Event.objects.filter(service=service, action="route", outcome="failed").exists()
    service.refresh_from_db()
    assert service.locked_by is None


def test_a_rule_of_the_whole_object_is_answered_as_the_detail():
    response = exception_handler(ValidationError({NON_FIELD_ERRORS: ["these two cannot go together"]}), {})

    assert response.status_code == 400
    assert response.data == {"detail": "these two cannot go together"}
