from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from api.views import (
    ApiTokenViewSet,
    ApplicationViewSet,
    CodeVersionViewSet,
    EnvironmentViewSet,
    OperationViewSet,
    ServiceViewSet,
    TokenView,
    archive_download,
    build_download,
)

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
