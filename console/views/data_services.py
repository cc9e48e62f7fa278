"""Data services: loading a dump."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.views.decorators.http import require_POST

from console.errors import back, refusals
from console.views.service_page import back_to
from services.models import Service
from workflows.data_services import request_load


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
