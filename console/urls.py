from django.contrib.auth import views as auth_views
from django.urls import path

from console import views

app_name = "console"

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("first-account/", views.first_account_create, name="first-account"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.dashboard, name="dashboard"),
    path("services/list/", views.dashboard_services, name="dashboard-services"),
    path("services/new/", views.service_create, name="service-create"),
    path("services/<int:pk>/", views.service_detail, name="service"),
    path("services/<int:pk>/overview/", views.service_overview, name="service-overview"),
    path("services/<int:pk>/activity/", views.service_activity, name="service-activity"),
    path("services/<int:pk>/logs/", views.service_logs, name="service-logs"),
    path("services/<int:pk>/metrics/", views.service_metrics, name="service-metrics"),
    path("services/<int:pk>/autoscaling/", views.service_autoscaling, name="service-autoscaling"),
    path("services/<int:pk>/options/", views.service_options, name="service-options"),
    path("services/<int:pk>/delete/", views.service_delete, name="service-delete"),
    path("services/<int:pk>/versions/", views.version_upload, name="version-upload"),
    path("services/<int:pk>/load/", views.dump_load, name="dump-load"),
    path("services/<int:pk>/versions/<int:version_pk>/delete/", views.version_delete, name="version-delete"),
    path("services/<int:pk>/environments/", views.environment_add, name="environment-add"),
    path("services/<int:pk>/environments/<str:name>/deploy/", views.environment_deploy, name="environment-deploy"),
    path(
        "services/<int:pk>/environments/<str:name>/settings/", views.environment_settings, name="environment-settings"
    ),
    path("services/<int:pk>/environments/<str:name>/delete/", views.environment_delete, name="environment-delete"),
    path("services/<int:pk>/swap/", views.service_swap, name="swap"),
    path("services/<int:pk>/swap/done/", views.swap_done, name="swap-done"),
    path("applications/", views.application_list, name="applications"),
    path("applications/<int:pk>/delete/", views.application_delete, name="application-delete"),
    path("tokens/", views.token_list, name="tokens"),
    path("tokens/<int:token_pk>/revoke/", views.token_revoke, name="token-revoke"),
]
