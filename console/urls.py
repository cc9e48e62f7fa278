from django.contrib.auth import views as auth_views
from django.urls import path

from console.views import (
    account,
    applications,
    backups,
    code_versions,
    dashboard,
    data_services,
    environments,
    service_page,
    services,
    swap,
)

app_name = "console"

urlpatterns = [
    path("login/", account.LoginView.as_view(), name="login"),
    path("first-account/", account.first_account_create, name="first-account"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", dashboard.dashboard, name="dashboard"),
    path("services/list/", dashboard.dashboard_services, name="dashboard-services"),
    path("services/new/", services.service_create, name="service-create"),
    path("services/<int:pk>/", service_page.service_detail, name="service"),
    path("services/<int:pk>/overview/", service_page.service_overview, name="service-overview"),
    path("services/<int:pk>/activity/", service_page.service_activity, name="service-activity"),
    path("services/<int:pk>/logs/", service_page.service_logs, name="service-logs"),
    path("services/<int:pk>/metrics/", service_page.service_metrics, name="service-metrics"),
    path("services/<int:pk>/autoscaling/", services.service_autoscaling, name="service-autoscaling"),
    path("services/<int:pk>/options/", services.service_options, name="service-options"),
    path("services/<int:pk>/delete/", services.service_delete, name="service-delete"),
    path("services/<int:pk>/versions/", code_versions.version_upload, name="version-upload"),
    path("services/<int:pk>/load/", data_services.dump_load, name="dump-load"),
    path("services/<int:pk>/backups/", backups.backup_list, name="backups"),
    path("services/<int:pk>/backups/policy/", backups.backup_policy, name="backup-policy"),
    path("services/<int:pk>/backups/take/", backups.backup_take, name="backup-take"),
    path("services/<int:pk>/restore/", backups.backup_restore, name="backup-restore"),
    path("services/<int:pk>/versions/<int:version_pk>/delete/", code_versions.version_delete, name="version-delete"),
    path("services/<int:pk>/environments/", environments.environment_add, name="environment-add"),
    path(
        "services/<int:pk>/environments/<str:name>/deploy/", environments.environment_deploy, name="environment-deploy"
    ),
    path(
        "services/<int:pk>/environments/<str:name>/settings/",
        environments.environment_settings,
        name="environment-settings",
    ),
    path(
        "services/<int:pk>/environments/<str:name>/delete/", environments.environment_delete, name="environment-delete"
    ),
    path("services/<int:pk>/swap/", swap.service_swap, name="swap"),
    path("services/<int:pk>/swap/done/", swap.swap_done, name="swap-done"),
    path("applications/", applications.application_list, name="applications"),
    path("applications/<int:pk>/delete/", applications.application_delete, name="application-delete"),
    path("tokens/", account.token_list, name="tokens"),
    path("tokens/<int:token_pk>/revoke/", account.token_revoke, name="token-revoke"),
]
