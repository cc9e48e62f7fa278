"""Sign-in throttling with django-axes (settings: AXES_*), the parts that are ConPaaS's own.

One lockout for every password sign-in: the API's token endpoint, the console and the admin all
call django.contrib.auth.authenticate with the request, where axes counts the failures per
account and per address; AxesMiddleware then answers with `lockout_response`."""

from math import ceil

from axes.handlers.database import AxesDatabaseHandler
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from django.db.models import Max, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone


def client_address(request: HttpRequest) -> str | None:
    """The connection's address: gunicorn serves clients directly, and X-Forwarded-For is the
    client's own to write (with it, anyone could pick a fresh address for every guess)."""
    return request.META.get("REMOTE_ADDR")


class SigninAttempts(AxesDatabaseHandler):
    """Axes' database handler, with a narrower pardon on success."""

    def reset_user_attempts(self, request: HttpRequest, credentials: dict | None = None) -> int:
        """A successful sign-in forgives that account's failures from that address, nothing more.
        Axes' own reset also drops every failure from the address: anyone with an account could
        then wipe their address's count between guesses at someone else's password."""
        username = get_client_username(request, credentials)
        count, _ = AccessAttempt.objects.filter(username=username, ip_address=request.axes_ip_address).delete()
        return count

    def retry_after(self, request: HttpRequest, credentials: dict | None = None) -> int:
        """Seconds until the lockout ends at the latest: the newest failure of each count that is
        at the limit (the account's, the address's), plus the cool-off."""
        cool_off = get_cool_off(request)
        limit = get_failure_limit(request, credentials)
        ends = []
        for attempts in self.get_user_attempts(request, credentials):
            figures = attempts.aggregate(failures=Sum("failures_since_start"), latest=Max("attempt_time"))
            if (figures["failures"] or 0) >= limit:
                ends.append(figures["latest"] + cool_off)
        end = max(ends, default=timezone.now() + cool_off)
        return max(1, ceil((end - timezone.now()).total_seconds()))


def lockout_response(request: HttpRequest, original_response=None, credentials: dict | None = None) -> HttpResponse:
    """429 with Retry-After: `{"detail"}` for the API, a page for the console and the admin.
    It names neither the account nor whether it exists (failures are counted for any name)."""
    seconds = AxesProxyHandler.get_implementation().retry_after(request, credentials)
    wait = f"{seconds} s" if seconds < 120 else f"{ceil(seconds / 60)} min"
    message = f"too many failed sign-ins for this account or from this address; try again in {wait}"
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": message}, status=429)
    else:
        response = render(request, "console/locked_out.html", {"message": message}, status=429)
    response["Retry-After"] = str(seconds)
    return response
