"""The console's one error handler (console/errors.py): how a platform refusal becomes an answer."""

import pytest
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.http import Http404, HttpResponse
from django.test import RequestFactory

from console.errors import back, not_found, refusals
from services.errors import Conflict

pytestmark = pytest.mark.django_db


def post():
    request = RequestFactory().post("/services/7/anything/")
    request.session = {}
    request._messages = FallbackStorage(request)
    return request


def test_it_answers_the_view_when_nothing_is_refused():
    view = refusals(not_found)(lambda request, pk: HttpResponse("done"))

    assert view(post(), pk=7).content == b"done"


def test_it_flashes_the_refusal_and_goes_back_to_the_card():
    def view(request, pk):
        raise Conflict("version v1 is in use")

    request = post()
    response = refusals(back("versions", "Not deleted: {}."))(view)(request, pk=7)

    assert response.status_code == 302 and response["Location"] == "/services/7/#versions"
    assert [str(m) for m in get_messages(request)] == ["Not deleted: version v1 is in use."]


def test_it_makes_a_refusal_the_404_page():
    def view(request, pk):
        raise Conflict("no token 3")

    with pytest.raises(Http404, match="no token 3"):
        refusals(not_found)(view)(post(), pk=7)


def test_it_hands_a_refusal_to_the_pages_own_answer():
    def view(request, pk):
        raise Conflict("busy")

    def shown(request, exc, pk):
        return HttpResponse(f"{pk}: {exc}", status=exc.http_status)

    response = refusals(shown)(view)(post(), pk=7)

    assert response.status_code == 409 and response.content == b"7: busy"
