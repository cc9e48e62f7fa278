import pytest

from services.choices import OperationState
from services.models import Event
from workflows.scaling import request_scale

pytestmark = pytest.mark.django_db


def test_it_polls_the_history_while_an_operation_runs_and_stops_after(client, service, alice):
    operation = request_scale(service, "backend", 2, alice)
    Event.record(service, "note", "a line of history")
    fragment = client.get(f"/services/{service.pk}/activity/")
    assert b'hx-trigger="every 2s"' in fragment.content
    assert b"a line of history" in fragment.content
    assert b"scale" in fragment.content

    operation.state = OperationState.SUCCEEDED
    operation.save()
    settled = client.get(f"/services/{service.pk}/activity/?polling=1")
    assert b"every 2s" not in settled.content
    assert settled["HX-Trigger"] == "conpaas-settled", "the overview reloads when the last operation ends"


def test_the_overview_reloads_on_its_own(client, service):
    fragment = client.get(f"/services/{service.pk}/overview/").content.decode()
    assert 'hx-trigger="conpaas-settled from:body, conpaas-changed from:body"' in fragment
    assert "No nodes yet" in fragment
