"""The dashboard: the user's services as cards, each with its environments and saved health."""

from collections import defaultdict

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render
from django.views.decorators.http import require_GET

from console.views.service_page import environment_rows
from services.choices import ServiceState
from services.models import Service, active_operations, production_urls
from versions.models import Environment

# Services per dashboard page: a page a person can scan (2, 3 or 4 cards a row), and a render
# that stays fast at any count; the search finds the others.
DASHBOARD_PAGE = 24


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
