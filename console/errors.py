"""Console-wide error handling: the one place a platform refusal (a ConpaasError, which carries its
own status: services/errors.py) becomes the console's answer, as api/errors.py is for the API.

A view says how its refusals are shown with `@refusals(answer)`; the view itself then calls the
domain functions without an `except ConpaasError` of its own. The answers:

- `back(anchor, say)`: a button on the service page; the message is flashed and the browser goes
  back to the page's card (`#anchor`), as a plain form post expects;
- `not_found`: the site's 404 page, with the message;
- a page's own function `(request, exc, **kwargs)`: pages that show the refusal in place (a form
  re-bound to what was sent, with the message above it) answer with the refusal's status."""

from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from services.errors import ConpaasError

Answer = Callable[..., HttpResponse]


def refusals(answer: Answer):
    """Answer a ConpaasError raised by the view with `answer(request, exc, **the view's kwargs)`."""

    def decorate(view):
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            # The body is read first, outside: an upload cut off while it arrived is the site's
            # refusal (conpaas_site/middleware.py), answered alike at every URL.
            request.FILES  # noqa: B018 (read for its effect: parsing the body)
            try:
                return view(request, *args, **kwargs)
            except ConpaasError as exc:
                return answer(request, exc, *args, **kwargs)

        return wrapper

    return decorate


def back(anchor: str, say: str = "{}") -> Answer:
    """Flash `say` (the refusal's message in place of `{}`) and go back to the service page's `#anchor`.

    The view's `pk` is the service's, already found visible: a refusal comes after that lookup."""

    def answer(request: HttpRequest, exc: ConpaasError, pk: int, **kwargs) -> HttpResponse:
        messages.error(request, say.format(exc))
        return redirect(reverse("console:service", args=[pk]) + f"#{anchor}")

    return answer


def not_found(request: HttpRequest, exc: ConpaasError, *args, **kwargs) -> HttpResponse:
    raise Http404(str(exc)) from None
