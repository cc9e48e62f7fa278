"""Applications: the list, and deleting one with its services."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from console.forms import DeleteServiceForm
from services.models import Application
from workflows.applying import delete_application


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
