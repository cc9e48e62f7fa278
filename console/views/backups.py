"""A data service's backups page: the list with each backup's verification, the policy, taking
one now and restoring; the same workflows as the API (workflows/backups.py)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from console.errors import not_found, refusals
from console.forms import BackupPolicyForm, RestoreForm
from services.errors import ConpaasError
from services.models import Service
from workflows import backups


def backups_page(service: Service) -> HttpResponse:
    return redirect(reverse("console:backups", args=[service.pk]))


def refused_here(request, exc: ConpaasError, pk: int, **kwargs) -> HttpResponse:
    messages.error(request, str(exc))
    return redirect(reverse("console:backups", args=[pk]))


def render_backups(request, service: Service, policy_form=None, restore_form=None, status: int = 200):
    listed = list(service.backups.all())
    window = backups.recovery_window(service, listed[0]) if listed else None
    context = {
        "service": service,
        "backups": listed,
        "window": window,
        "policy_form": policy_form or BackupPolicyForm(initial=backups.policy(service)),
        "restore_form": restore_form or RestoreForm(service=service),
    }
    return render(request, "console/backups.html", context, status=status)


@login_required
@require_GET
@refusals(not_found)
def backup_list(request, pk: int):
    service = Service.objects.get_visible(request.user, pk)
    backups.require_data(service)
    return render_backups(request, service)


@login_required
@require_POST
@refusals(refused_here)
def backup_policy(request, pk: int):
    service = Service.objects.get_visible(request.user, pk)
    form = BackupPolicyForm(request.POST)
    if form.is_valid():
        try:
            policy = backups.configure(service, request.user, **form.cleaned_data)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            state = "on" if policy["enabled"] else "off"
            messages.success(request, f"Scheduled backups of {service.name} are {state}.")
            return backups_page(service)
    return render_backups(request, service, policy_form=form, status=400)


@login_required
@require_POST
@refusals(refused_here)
def backup_take(request, pk: int):
    service = Service.objects.get_visible(request.user, pk)
    operation = backups.request_backup(service, request.user)
    messages.success(request, f"Taking a backup of {service.name} (operation #{operation.pk}); it is then verified.")
    return backups_page(service)


@login_required
@require_POST
@refusals(refused_here)
def backup_restore(request, pk: int):
    service = Service.objects.get_visible(request.user, pk)
    form = RestoreForm(request.POST, service=service)
    if form.is_valid():
        given = form.cleaned_data
        try:
            operation = backups.request_restore(
                service, request.user, backup_pk=given["backup"], time=given["time"], into=given["into"]
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            messages.success(request, f"Restoring (operation #{operation.pk}).")
            target = operation.service or service
            return redirect(reverse("console:service", args=[target.pk]) + "#activity")
    return render_backups(request, service, restore_form=form, status=400)
