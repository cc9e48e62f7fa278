"""The service page: what it shows (environments with their saved health, versions, nodes,
activity, metrics, autoscaling, options), the fragments it reloads on its own, and the helpers
that the actions on it (console/views/services.py, environments.py, swap.py …) use to show it again."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from console.charts import DEFAULT_WINDOW, WINDOWS, charts
from console.errors import refusals
from console.forms import AutoscalingForm, EnvironmentForm, ServiceOptionsForm, UploadForm
from routing.metrics import interval as metrics_interval
from routing.metrics import series
from services import quotas
from services.choices import Runtime
from services.models import Service, active_operations
from versions.logs import environment_logs
from versions.models import PRODUCTION, preview_url
from versions.storage import stored_bytes
from workflows import lifecycle
from workflows.models import Autoscaling
from workflows.swap import swap_refusal

HISTORY_LENGTH = 30
LOG_LINES = 30  # the last lines of each log file of each instance that the service page shows
SETTLED_EVENT = "conpaas-settled"


def age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def environment_rows(service: Service, environments=None, url: str | None = "") -> list[dict]:
    """One row per environment: the environment, its saved health problems (None: not checked),
    whether it is healthy, when it was checked (and whether that is stale), its link.
    A list page passes each service's environments and URL (None: no URL yet), read for the whole
    page at once; left out ("") they are read here."""
    if url == "":
        url = service.url  # one query, not one per environment
    if environments is None:
        environments = service.environments.select_related("version").order_by("created", "id")
    now = timezone.now()
    rows = []
    for environment in environments:
        environment.service = service
        problems = environment.stored_problems
        checked = environment.health_checked if problems is not None else None
        seconds = (now - checked).total_seconds() if checked else None
        rows.append(
            {
                "environment": environment,
                "problems": problems,
                "healthy": problems is not None and not problems,
                "checked": checked,
                "checked_ago": age(seconds) if checked else "",
                # Missed three timer passes: the workers are behind or stopped; say so.
                "stale": checked is not None and seconds > 3 * settings.CONPAAS_HEALTH_REFRESH,
                "preview_url": preview_url(url, environment.name, environment.preview_key),
            }
        )
    return rows


def swap_blockers(rows: list[dict], name: str) -> list[str]:
    """Why a swap of `name` with production would be refused, for the disabled button's reason.

    Display only: workflows.swap.swap() checks again under the service's lock and is the authority."""
    by_name = {row["environment"].name: row for row in rows}
    production, other = by_name.get(PRODUCTION), by_name.get(name)
    if other is None or production is None:
        return ["unknown environment"]
    refusal = swap_refusal(production["environment"], other["environment"], other["problems"])
    return [refusal] if refusal else []


def shows_setting_values(request, service: Service) -> bool:
    """Settings may hold secrets: their values are shown to the service's owner only (staff, who see
    every service, see their names)."""
    return service.owner_id == request.user.pk


def activity_context(service: Service) -> dict:
    operations = list(service.operations.all()[:8])
    running = [op for op in operations if not op.done]
    return {
        "service": service,
        "operations": operations,
        "active": bool(running) or active_operations().filter(service=service).exists(),
        "events": service.events.select_related("actor")[:HISTORY_LENGTH],
    }


def overview_context(request, service: Service) -> dict:
    rows = environment_rows(service)
    for row in rows:
        if not row["environment"].is_production:
            row["swap_blockers"] = swap_blockers(rows, row["environment"].name)
    versions = list(service.versions.prefetch_related("environments"))
    return {
        "service": service,
        "url": next((row["preview_url"] for row in rows if row["environment"].is_production), None),
        "rows": rows,
        "versions": versions,
        "nodes": service.live_nodes(),
        "setting_values": shows_setting_values(request, service),
    }


def metrics_context(request, service: Service) -> dict:
    """The charts of one environment (`env`, default production) over a window (`window`), from
    the kept metrics: no router is asked."""
    try:
        window = int(request.GET.get("window", DEFAULT_WINDOW))
    except ValueError:
        window = DEFAULT_WINDOW
    window = window if window in WINDOWS else DEFAULT_WINDOW
    names = list(service.environments.order_by("created", "id").values_list("name", flat=True))
    name = request.GET.get("env") if request.GET.get("env") in names else PRODUCTION
    now = timezone.now()
    kept = series(service, window, now, environment=name).get(name, [])
    policy = Autoscaling.objects.filter(service=service, enabled=True).first()
    target = policy.target_p95_ms if policy and name == PRODUCTION else None
    return {
        "service": service,
        "charts": charts(kept, window, now, metrics_interval(), target),
        "metrics_window": window,
        "metrics_window_label": WINDOWS[window],
        "metrics_windows": WINDOWS,
        "metrics_environment": name,
        "metrics_environments": names,
        "metrics_since": now - timedelta(seconds=window),
        "metrics_now": now,
    }


def autoscaling_context(service: Service, form=None) -> dict:
    policy = Autoscaling.objects.filter(service=service).first() or Autoscaling(service=service)
    if form is None:
        form = AutoscalingForm(initial={name: getattr(policy, name) for name in AutoscalingForm.base_fields})
    return {"autoscaling": policy, "autoscaling_form": form}


def storage_context(service: Service) -> dict:
    """A storage service's buckets with their objects and bytes as the workers last counted them
    (workflows.tasks: the store is never asked by a page), and the owner's storage quota."""
    if service.runtime != Runtime.STORAGE:
        return {}
    return {
        "buckets": service.buckets.select_related("holder"),
        "storage_used_mb": stored_bytes(service.owner) / 2**20,
        "storage_quota_mb": quotas.limit(service.owner, "storage_mb"),
    }


def options_context(service: Service, form=None) -> dict:
    if service.is_data:
        return {}  # no router checks it, no JVM
    if form is None:
        form = ServiceOptionsForm(service=service, initial={name: getattr(service, name) for name in lifecycle.OPTIONS})
    return {"options_form": form}


def render_service(
    request, service: Service, environment_form=None, autoscaling_form=None, options_form=None, status: int = 200
) -> HttpResponse:
    context = {
        **overview_context(request, service),
        **activity_context(service),
        **metrics_context(request, service),
        **autoscaling_context(service, autoscaling_form),
        **options_context(service, options_form),
        **storage_context(service),
        "environment_form": environment_form or EnvironmentForm(),
        "upload_form": UploadForm(),
        "upload_limit_mb": settings.CONPAAS_MAX_UPLOAD_MB,
    }
    return render(request, "console/service_detail.html", context, status=status)


def back_to(service: Service, anchor: str = "") -> HttpResponse:
    return redirect(reverse("console:service", args=[service.pk]) + (f"#{anchor}" if anchor else ""))


@login_required
@require_GET
def service_detail(request, pk: int):
    return render_service(request, Service.objects.get_visible(request.user, pk))


@login_required
@require_GET
def service_overview(request, pk: int):
    service = Service.objects.get_visible(request.user, pk)
    return render(request, "console/fragments/overview.html", overview_context(request, service))


@login_required
@require_GET
def service_activity(request, pk: int):
    context = activity_context(Service.objects.get_visible(request.user, pk))
    response = render(request, "console/fragments/activity.html", context)
    if request.GET.get("polling") and not context["active"]:
        # The last operation just ended: the overview (state, versions, nodes, health) reloads itself.
        response["HX-Trigger"] = SETTLED_EVENT
    return response


def logs_context(request, pk: int) -> dict:
    service = Service.objects.get_visible(request.user, pk)
    name = request.GET.get("environment") or PRODUCTION
    return {"service": service, "environments": service.environments.order_by("created", "id"), "selected": name}


def service_logs_refused(request, exc, pk: int) -> HttpResponse:
    """An unknown environment, an agent that did not answer: said in the fragment."""
    context = {**logs_context(request, pk), "error": str(exc)}
    return render(request, "console/fragments/logs.html", context, status=exc.http_status)


@login_required
@require_GET
@refusals(service_logs_refused)
def service_logs(request, pk: int):
    context = logs_context(request, pk)
    context["logs"] = environment_logs(context["service"], context["selected"], LOG_LINES)
    return render(request, "console/fragments/logs.html", context)


@login_required
@require_GET
def service_metrics(request, pk: int):
    service = Service.objects.get_visible(request.user, pk)
    return render(request, "console/fragments/metrics.html", metrics_context(request, service))
