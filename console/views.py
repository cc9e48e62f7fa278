"""The web console: server-rendered pages that call the same domain functions as the API.

Every view that takes a service id goes through `Service.objects.get_visible`, so another user's
service is a 404 exactly like a missing one. Actions that change anything are POST only (and CSRF-checked).
No page asks a node agent: health is what the workers last saved on the rows (routing/health.py),
shown with its age; only the swap itself (workflows.swap) checks live, under the service's lock,
and the logs fragment, which the service page loads after it is shown (an agent may be slow)."""

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from console.charts import DEFAULT_WINDOW, WINDOWS, charts
from console.errors import back, not_found, refusals
from console.forms import (
    AutoscalingForm,
    DeleteServiceForm,
    DeployForm,
    EnvironmentForm,
    FirstAccountForm,
    ServiceForm,
    ServiceOptionsForm,
    SettingsForm,
    UploadForm,
)
from routing.metrics import interval as metrics_interval
from routing.metrics import series
from services import tokens
from services.choices import ServiceState
from services.models import Application, Service, active_operations, production_urls
from versions.logs import environment_logs
from versions.models import DEVELOPMENT, PRODUCTION, Environment, preview_url, setting_problems
from versions.storage import delete_version, store_version
from workflows import autoscale, first_account, lifecycle
from workflows.applying import delete_application
from workflows.databases import request_load
from workflows.deploy import request_deploy
from workflows.environments import add_environment, change_environment, delete_environment
from workflows.models import Autoscaling
from workflows.swap import swap, swap_plan, swap_refusal

HISTORY_LENGTH = 30
LOG_LINES = 30  # the last lines of each log file of each instance that the service page shows
SETTLED_EVENT = "conpaas-settled"
# Services per dashboard page: a page a person can scan (2, 3 or 4 cards a row), and a render
# that stays fast at any count; the search finds the others.
DASHBOARD_PAGE = 24


# ---------------------------------------------------------------- helpers


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
        "environment_form": environment_form or EnvironmentForm(),
        "upload_form": UploadForm(),
        "upload_limit_mb": settings.CONPAAS_MAX_UPLOAD_MB,
    }
    return render(request, "console/service_detail.html", context, status=status)


def back_to(service: Service, anchor: str = "") -> HttpResponse:
    return redirect(reverse("console:service", args=[service.pk]) + (f"#{anchor}" if anchor else ""))


def wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


# ---------------------------------------------------------------- signing in, the first account


class LoginView(auth_views.LoginView):
    """Django's sign-in page; while no account exists, the page that makes the first one instead."""

    template_name = "console/login.html"
    redirect_authenticated_user = True

    def dispatch(self, request, *args, **kwargs):
        if first_account.is_open():
            return redirect("console:first-account")
        return super().dispatch(request, *args, **kwargs)


@require_http_methods(["GET", "POST"])
def first_account_create(request):
    """Make the first account, a staff superuser, then sign it in. Gone (to the sign-in page) once
    any account exists; refused (403, nothing stored) from elsewhere than this machine without
    the one-time code `manage.py up` printed."""
    if not first_account.is_open():
        first_account.discard_code()  # made by `createsuperuser` meanwhile: the code dies with the page
        return redirect("console:login")
    local = first_account.is_local(request.META)
    form = FirstAccountForm(request.POST or None, needs_code=not local)
    context = {"form": form, "local": local, "refusal": ""}
    if request.method == "GET":
        return render(request, "console/first_account.html", context)
    code = request.POST.get("code", "")
    try:
        first_account.admission(request.META, code)  # refused before the rest of the form is even read
        if not form.is_valid():
            return render(request, "console/first_account.html", context, status=400)
        data = form.cleaned_data
        user = first_account.create(data["username"], data["email"], data["password1"], request.META, code)
    except first_account.FirstAccountRefused as exc:
        context.update(refusal=str(exc), form=FirstAccountForm(needs_code=not local))
        return render(request, "console/first_account.html", context, status=exc.http_status)
    except first_account.FirstAccountExists as exc:
        messages.info(request, str(exc))
        return redirect("console:login")
    # Two backends since axes: name the one that made the account.
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    messages.success(request, f"Welcome, {user.get_username()}: your account is staff, and may use the admin site.")
    return redirect("console:dashboard")


# ---------------------------------------------------------------- dashboard and services


def dashboard_context(request) -> dict:
    """One page of the user's services (by name; `q` filters by name), each with its environments
    and saved health: a fixed number of queries whatever the number of services."""
    query = request.GET.get("q", "").strip()
    services = Service.objects.visible_to(request.user).select_related("owner")
    if query:
        services = services.filter(name__icontains=query)
    page = Paginator(services, DASHBOARD_PAGE).get_page(request.GET.get("page"))
    shown = list(page)
    # The page's environments and URLs in two queries, whatever the number of services.
    environments = defaultdict(list)
    for environment in (
        Environment.objects.filter(service__in=shown).select_related("version").order_by("created", "id")
    ):
        environments[environment.service_id].append(environment)
    urls = production_urls(shown)
    cards = []
    for service in shown:
        rows = environment_rows(service, environments[service.pk], urls.get(service.pk))
        url = next((row["preview_url"] for row in rows if row["environment"].is_production), None)
        cards.append({"service": service, "rows": rows, "url": url})
    busy = any(service.state in (ServiceState.CREATING, ServiceState.DELETING) for service in shown)
    busy = busy or active_operations().filter(service__in=shown).exists()
    return {"cards": cards, "active": busy, "page": page, "query": query, "paginated": page.paginator.num_pages > 1}


@login_required
@require_GET
def dashboard(request):
    return render(request, "console/dashboard.html", dashboard_context(request))


@login_required
@require_GET
def dashboard_services(request):
    return render(request, "console/fragments/service_list.html", dashboard_context(request))


def service_create_refused(request, exc) -> HttpResponse:
    """A quota: said in place, with its own status."""
    form = ServiceForm(request.POST)
    form.is_valid()
    form.add_error(None, str(exc))
    return render(request, "console/service_create.html", {"form": form}, status=exc.http_status)


@login_required
@require_http_methods(["GET", "POST"])
@refusals(service_create_refused)
def service_create(request):
    form = ServiceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            service, _ = lifecycle.create(request.user, form.cleaned_data["name"], form.cleaned_data["runtime"])
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Service {service.name} is being created; its nodes are starting.")
            return back_to(service)
    return render(request, "console/service_create.html", {"form": form}, status=400 if form.errors else 200)


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


@login_required
@require_POST
def service_autoscaling(request, pk: int):
    service = Service.objects.get_visible(request.user, pk)
    form = AutoscalingForm(request.POST)
    if form.is_valid():
        try:
            policy = autoscale.configure(service, request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            state = "on" if policy.enabled else "off"
            messages.success(request, f"Autoscaling of {service.name} is {state}.")
            return back_to(service, "autoscaling")
    return render_service(request, service, autoscaling_form=form, status=400)


def service_options_refused(request, exc, pk: int) -> HttpResponse:
    """Busy with another operation, a router that did not answer: said on the form, a 400 like its
    other refusals. The service is read afresh: lifecycle.update set the refused values on the view's."""
    service = Service.objects.get_visible(request.user, pk)
    form = ServiceOptionsForm(request.POST, service=service)
    form.is_valid()
    form.add_error(None, str(exc))
    return render_service(request, service, options_form=form, status=400)


@login_required
@require_POST
@refusals(service_options_refused)
def service_options(request, pk: int):
    service = Service.objects.get_visible(request.user, pk)
    if service.is_data:
        raise Http404("a data service has no options to change here")
    form = ServiceOptionsForm(request.POST, service=service)
    if form.is_valid():
        try:
            lifecycle.update(service, request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"The options of {service.name} are saved.")
            return back_to(service, "options")
    service.refresh_from_db()  # lifecycle.update set the refused values on it
    return render_service(request, service, options_form=form, status=400)


def service_delete_page(request, pk: int, refusal=None) -> HttpResponse:
    service = Service.objects.get_visible(request.user, pk)
    linking = service.linking_services()
    form = DeleteServiceForm(request.POST or None, service=service, linking=linking)
    if request.method == "POST" and form.is_valid():
        if refusal is not None:  # linked services (unless forced), busy: said on the form, a 400
            form.add_error(None, str(refusal))
        else:  # the workflow decides whether links refuse it; the page only asks
            lifecycle.request_delete(service, request.user, force=form.cleaned_data.get("force", False))
            messages.success(request, f"Service {service.name} is being deleted; its nodes are stopping.")
            return redirect("console:dashboard")
    context = {"service": service, "form": form, "linking": linking}
    return render(request, "console/service_delete.html", context, status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
@refusals(lambda request, exc, pk: service_delete_page(request, pk, refusal=exc))
def service_delete(request, pk: int):
    return service_delete_page(request, pk)


# ---------------------------------------------------------------- applications


def visible_applications(request):
    return Application.objects.visible_to(request.user).prefetch_related("services").order_by("name", "id")


@login_required
@require_GET
def application_list(request):
    return render(request, "console/applications.html", {"applications": visible_applications(request)})


@login_required
@require_http_methods(["GET", "POST"])
def application_delete(request, pk: int):
    application = get_object_or_404(visible_applications(request), pk=pk)
    form = DeleteServiceForm(request.POST or None, service=application, what="application")
    if request.method == "POST" and form.is_valid():
        delete_application(application, request.user)
        messages.success(request, f"Application {application.name} is being deleted, with its services.")
        return redirect("console:applications")
    context = {"application": application, "form": form}
    return render(request, "console/application_delete.html", context, status=400 if form.errors else 200)


# ---------------------------------------------------------------- data services


@login_required
@require_POST
@refusals(back("load", "Load refused: {}"))
def dump_load(request, pk: int):
    """Load a dump into a data service: the activity card then shows the load's live counter."""
    service = Service.objects.get_visible(request.user, pk)
    dump = request.FILES.get("dump")
    if dump is None:
        messages.error(request, "Choose a dump to load.")
        return back_to(service, "load")
    operation = request_load(service, request.user, dump, dump.name)
    messages.success(request, f"Loading {dump.name} (operation #{operation.pk}).")
    return back_to(service, "activity")


# ---------------------------------------------------------------- code versions


def upload_refused(request, error: str, pk: int, status: int = 400) -> HttpResponse:
    """JSON to the upload script (progress bar), the versions card to a plain form post."""
    if wants_json(request):
        return JsonResponse({"ok": False, "error": f"Upload refused: {error}"}, status=status)
    messages.error(request, f"Upload refused: {error}")
    return redirect(reverse("console:service", args=[pk]) + "#versions")


@login_required
@require_POST
@refusals(lambda request, exc, pk: upload_refused(request, str(exc), pk, exc.http_status))  # a bad archive, a quota
def version_upload(request, pk: int):
    """Answers JSON to the upload script (progress bar) and redirects a plain form post."""
    service = Service.objects.get_visible(request.user, pk)
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        error = "Choose an archive to upload." if "archive" in form.errors else form.errors.as_text()
        return upload_refused(request, error, pk)
    archive = form.cleaned_data["archive"]
    version = store_version(service, archive, form.cleaned_data["label"], request.user, archive.name)
    if wants_json(request):
        return JsonResponse(
            {"ok": True, "id": version.pk, "label": version.label, "message": f"Uploaded {version.label}."},
            status=201,
        )
    messages.success(request, f"Uploaded {version.label}.")
    return back_to(service, "versions")


@login_required
@require_POST
@refusals(back("versions", "{}."))  # in use (409), or deleted meanwhile (404)
def version_delete(request, pk: int, version_pk: int):
    service = Service.objects.get_visible(request.user, pk)
    version = get_object_or_404(service.versions, pk=version_pk)
    delete_version(version, request.user)
    messages.success(request, f"Deleted {version.label}.")
    return back_to(service, "versions")


# ---------------------------------------------------------------- environments, deploy, swap


def environment_add_refused(request, exc, pk: int) -> HttpResponse:
    """Said on the form, with the refusal's own status."""
    form = EnvironmentForm(request.POST)
    form.is_valid()
    form.add_error(None, str(exc))
    service = Service.objects.get_visible(request.user, pk)
    return render_service(request, service, environment_form=form, status=exc.http_status)


@login_required
@require_POST
@refusals(environment_add_refused)
def environment_add(request, pk: int):
    service = Service.objects.get_visible(request.user, pk)
    form = EnvironmentForm(request.POST)
    if not form.is_valid():
        return render_service(request, service, environment_form=form, status=400)
    try:
        data = form.cleaned_data
        environment = add_environment(
            service, data["name"], request.user, data["preview_key"], database_copy=data["database_copy"]
        )
    except ValidationError as exc:
        form.add_error(None, exc)
        return render_service(request, service, environment_form=form, status=400)
    messages.success(request, f"Added environment {environment.name}.")
    return back_to(service, "environments")


@login_required
@require_POST
@refusals(back("environments", "Not deployed: {}."))
def environment_deploy(request, pk: int, name: str):
    service = Service.objects.get_visible(request.user, pk)
    environment = get_object_or_404(service.environments, name=name)
    form = DeployForm(request.POST, service=service)
    if not form.is_valid():
        messages.error(request, f"Choose a version of {service.name} to deploy.")
        return back_to(service, "environments")
    version = form.cleaned_data["version"]
    request_deploy(environment, version, request.user)
    messages.success(request, f"Deploying {version.label} to {environment.name}; follow it under Operations.")
    return back_to(service, "activity")


@login_required
@require_http_methods(["GET", "POST"])
@refusals(lambda request, exc, pk, name: environment_settings(request, pk, name, refusal=exc))
def environment_settings(request, pk: int, name: str, refusal=None):
    """The environment's settings, on a page of their own (the overview reloads itself when an
    operation ends, which would lose what is being typed). Written whole; a change reaches the
    instances through a deploy (followed under Operations), or waits for the first deploy when the
    environment has no version. A refusal keeps the text, with each wrong setting named; a refusal
    of the workflow (busy, the version deleted meanwhile) comes back as `refusal`, said on the form."""
    service = Service.objects.get_visible(request.user, pk)
    environment = get_object_or_404(service.environments.select_related("version"), name=name)
    if not shows_setting_values(request, service):
        raise PermissionDenied(f"Only the owner of {service.name} sees and changes its settings.")
    form = SettingsForm(request.POST or None, initial=SettingsForm.initial_for(environment.settings))
    # The form has one line a setting: a value over several lines (set through the API) cannot be shown.
    multiline = [key for key, setting in environment.settings.items() if len(setting["value"].splitlines()) > 1]
    status = 400 if request.method == "POST" else 200
    if request.method == "POST" and not multiline and form.is_valid() and refusal is not None:
        form.add_error(None, f"{refusal}.")
        status = refusal.http_status
    elif request.method == "POST" and not multiline and form.is_valid():
        try:
            wanted = form.settings()
            if wanted == environment.settings:  # stored form already: nothing to deploy
                messages.info(request, f"The settings of {name} are unchanged.")
                return back_to(service, "environments")
            operation = change_environment(environment, request.user, settings=wanted)
        except ValidationError as exc:
            for problem in setting_problems(exc):
                form.add_error(None, problem)
        else:
            if operation is None:
                messages.success(request, f"Saved the settings of {name}; they apply at its first deploy.")
                return back_to(service, "environments")
            messages.success(request, f"Deploying the new settings of {name}; follow it under Operations.")
            return back_to(service, "activity")
    context = {"service": service, "environment": environment, "form": form, "multiline": multiline}
    return render(request, "console/environment_settings.html", context, status=status)


@login_required
@require_POST
@refusals(back("environments", "Not deleted: {}."))
def environment_delete(request, pk: int, name: str):
    service = Service.objects.get_visible(request.user, pk)
    environment = get_object_or_404(service.environments, name=name)
    delete_environment(environment, request.user)
    messages.success(request, f"Deleted environment {name}.")
    return back_to(service, "environments")


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


# ---------------------------------------------------------------- API tokens


@login_required
@require_GET
def token_list(request):
    """The user's API tokens (what `conpaas login` and the API issued), without their secrets."""
    return render(request, "console/tokens.html", {"tokens": tokens.live_tokens(request.user)})


@login_required
@require_POST
@refusals(not_found)  # not the user's, or already gone
def token_revoke(request, token_pk: int):
    token = tokens.revoke(request.user, token_pk)
    messages.success(request, f"Revoked the token starting {token.prefix}; it no longer signs anything in.")
    return redirect("console:tokens")
