"""Environments: adding one, deploying a version to it, its settings, deleting it."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_http_methods, require_POST

from console.errors import back, refusals
from console.forms import DeployForm, EnvironmentForm, SettingsForm
from console.views.service_page import back_to, render_service, shows_setting_values
from services.models import Service
from versions.models import setting_problems
from workflows.deploy import request_deploy
from workflows.environments import add_environment, change_environment, delete_environment


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
