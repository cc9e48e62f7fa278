from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from api.views.applications import ApplicationViewSet
from api.views.auth import ApiTokenViewSet, TokenView
from api.views.code_versions import CodeVersionViewSet
from api.views.environments import EnvironmentViewSet
from api.views.node_downloads import archive_download, build_download
from api.views.operations import OperationViewSet
from api.views.services import ServiceViewSet

router = DefaultRouter()
router.register("services", ServiceViewSet, basename="service")
router.register("applications", ApplicationViewSet, basename="application")
router.register("operations", OperationViewSet, basename="operation")
router.register("auth/tokens", ApiTokenViewSet, basename="token")
router.register(r"services/(?P<service_pk>\d+)/versions", CodeVersionViewSet, basename="version")
router.register(r"services/(?P<service_pk>\d+)/environments", EnvironmentViewSet, basename="environment")

urlpatterns = [
    path("api/v1/auth/token/", TokenView.as_view(), name="api-token"),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("internal/archives/<str:token>/", archive_download, name="version-archive"),
    path("internal/builds/<str:token>/", build_download, name="build-archive"),
]
