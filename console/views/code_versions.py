"""Code versions: uploading and deleting them."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from console.errors import back, refusals
from console.forms import UploadForm
from console.views.service_page import back_to
from services.models import Service
from versions.storage import delete_version, store_version


def wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


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
