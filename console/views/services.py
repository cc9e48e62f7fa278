"""Creating a service, changing its options and autoscaling policy, deleting it."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from console.errors import refusals
from console.forms import AutoscalingForm, DeleteServiceForm, ServiceForm, ServiceOptionsForm
from console.views.service_page import back_to, render_service
from services.models import Service
from workflows import autoscale, lifecycle


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
