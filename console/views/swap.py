"""The swap with production: its confirmation page (the plan, or why not) and its result."""

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from console.errors import refusals
from console.views.service_page import environment_rows, shows_setting_values, swap_blockers
from services.models import Service
from versions.models import DEVELOPMENT, PRODUCTION
from workflows.swap import swap, swap_plan


def swap_environment(service: Service, request) -> str:
    name = (request.POST if request.method == "POST" else request.GET).get("environment") or DEVELOPMENT
    if name == PRODUCTION or not service.environments.filter(name=name).exists():
        raise Http404(f"{service.name} has no environment named {name} to swap with production")
    return name


@login_required
@require_http_methods(["GET", "POST"])
@refusals(lambda request, exc, pk: service_swap(request, pk, refusal=exc))
def service_swap(request, pk: int, refusal=None):
    """GET: what the swap would change, or why it cannot happen now. POST: swap, then show the
    result; a refused swap comes back as `refusal`, said on this page with its status."""
    service = Service.objects.get_visible(request.user, pk)
    name = swap_environment(service, request)
    error, status = (str(refusal), refusal.http_status) if refusal else ("", 200)
    if request.method == "POST" and refusal is None:
        swap(service, name, request.user)
        return redirect(reverse("console:swap-done", args=[service.pk]) + f"?environment={name}")
    rows = environment_rows(service)
    by_name = {row["environment"].name: row for row in rows}
    blockers = swap_blockers(rows, name)
    plan = swap_plan(service, name).describe(blockers[0] if blockers else None)
    context = {
        "service": service,
        "name": name,
        "production": by_name[PRODUCTION],
        "other": by_name[name],
        "blockers": blockers,
        "error": error,
        "plan": plan,
        "setting_values": shows_setting_values(request, service),
        "setting_changes": [
            (env, setting, change)
            for env, planned in plan["environments"].items()
            for setting, change in planned["settings"].items()
        ],
    }
    return render(request, "console/swap_confirm.html", context, status=status)


@login_required
@require_GET
def swap_done(request, pk: int):
    service = Service.objects.get_visible(request.user, pk)
    name = swap_environment(service, request)
    environments = {env.name: env for env in service.environments.select_related("version")}
    context = {
        "service": service,
        "name": name,
        "production": environments[PRODUCTION],
        "other": environments[name],
        "event": service.events.filter(action="swap").first(),
        "url": service.url,
    }
    return render(request, "console/swap_done.html", context)
