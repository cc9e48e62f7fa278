"""The operators' admin site: every model of the platform, with list views, filters and search."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from routing.models import MetricPoint
from services.models import ApiToken, Application, Bucket, Event, Node, Operation, Quota, Service
from versions.models import CodeVersion, Environment, FailedInstanceLog, Instance
from workflows.models import Autoscaling


class EnvironmentInline(admin.TabularInline):
    model = Environment
    fields = ["name", "version", "preview_key", "database_copy", "settings_key", "updated"]
    # Settings and copies change through a deploy (workflows.environments), never in place here.
    readonly_fields = ["database_copy", "settings_key", "updated"]
    extra = 0


class NodeInline(admin.TabularInline):
    model = Node
    fields = ["name", "is_proxy", "is_backend", "state", "address", "agent_port", "http_port", "created"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


class EventInline(admin.TabularInline):
    model = Event
    fields = ["created", "action", "outcome", "message", "actor"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0
    ordering = ["-created"]


@admin.register(Application)
class ApplicationAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "created"]
    search_fields = ["name", "owner__username"]


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "runtime", "state", "url", "backend_nodes", "production_version", "created"]
    list_filter = ["runtime", "state", "owner"]
    search_fields = ["name", "owner__username", "application__name"]
    readonly_fields = ["url", "version_counter", "locked_by", "created"]
    inlines = [EnvironmentInline, NodeInline, EventInline]

    @admin.display(description="production")
    def production_version(self, service):
        production = service.environments.filter(name="production").select_related("version").first()
        return production.version.label if production and production.version else "—"


@admin.register(Autoscaling)
class AutoscalingAdmin(admin.ModelAdmin):
    """Policies as their owners set them (the model's rules apply here too), with what the
    autoscaler measured and last decided."""

    list_display = ["service", "enabled", "target_p95_ms", "min_nodes", "max_nodes", "cooldown_s", "node_capacity"]
    list_filter = ["enabled"]
    search_fields = ["service__name", "service__owner__username"]
    readonly_fields = ["service", "node_capacity", "last_decision", "updated"]


@admin.register(MetricPoint)
class MetricPointAdmin(admin.ModelAdmin):
    """The kept metrics, to look at: the workers write and expire them."""

    list_display = ["time", "service", "environment", "resolution", "requests", "request_rate", "p95_ms", "error_rate"]
    list_filter = ["resolution", "environment"]
    search_fields = ["service__name"]
    list_select_related = ["service"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class InstanceInline(admin.TabularInline):
    model = Instance
    fields = ["version", "settings_key", "port", "state", "error", "created"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ["name", "service", "roles", "state", "address", "agent_port", "http_port", "cloud", "created"]
    list_filter = ["state", "cloud", "is_proxy", "is_backend"]
    search_fields = ["name", "service__name", "address", "provider_id"]
    readonly_fields = ["name", "service", "cloud", "provider_id", "address", "agent_port", "http_port", "created"]
    exclude = ["secret"]
    inlines = [InstanceInline]


@admin.register(Bucket)
class BucketAdmin(admin.ModelAdmin):
    """Storage services' buckets: made by links (services/object_storage.py), never here; the
    secret key is not shown (its holder's instances have it)."""

    list_display = ["name", "storage", "holder", "object_count", "size", "counted", "granted"]
    search_fields = ["name", "storage__name", "holder__name", "access_key"]
    readonly_fields = [
        "name",
        "storage",
        "holder",
        "access_key",
        "object_count",
        "size",
        "counted",
        "granted",
        "created",
    ]
    exclude = ["secret_key"]

    def has_add_permission(self, request):
        return False


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "service_name", "state", "progress", "owner", "created", "finished"]
    list_filter = ["kind", "state"]
    search_fields = ["service_name", "error", "owner__username"]
    readonly_fields = ["service", "service_name", "owner", "kind", "params", "created", "started", "finished"]


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["created", "service_name", "action", "outcome", "message", "actor"]
    list_filter = ["outcome", "action"]
    search_fields = ["service_name", "message", "actor__username"]
    date_hierarchy = "created"
    readonly_fields = ["service", "service_name", "operation", "actor", "action", "message", "outcome", "created"]

    def has_add_permission(self, request):
        return False


@admin.register(CodeVersion)
class CodeVersionAdmin(admin.ModelAdmin):
    list_display = ["label", "service", "kind", "size", "short_sha256", "uploaded_by", "created"]
    list_filter = ["kind", "service__runtime"]
    search_fields = ["label", "sha256", "service__name"]
    readonly_fields = ["service", "sha256", "size", "kind", "entry_point", "uploaded_by", "created"]

    @admin.display(description="sha256")
    def short_sha256(self, version):
        return version.sha256[:12]


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = ["name", "service", "version", "preview_key", "updated"]
    list_filter = ["name"]
    search_fields = ["name", "service__name", "version__label"]
    readonly_fields = ["version", "updated", "created"]


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = ["name", "node", "version", "port", "state", "created"]
    list_filter = ["state"]
    search_fields = ["node__name", "version__label", "node__service__name"]
    readonly_fields = ["node", "version", "port", "created"]
    exclude = ["spec"]  # holds a signed download link


@admin.register(FailedInstanceLog)
class FailedInstanceLogAdmin(admin.ModelAdmin):
    """What a failed deploy's instances had logged, kept when they were retired: read-only."""

    list_display = ["instance", "service", "environment", "version_label", "created"]
    search_fields = ["service__name", "instance", "version_label"]
    fields = ["service", "environment", "version_label", "operation", "node_name", "instance", "files", "created"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Operators see and revoke (delete) API tokens; the database has no token to show, only a
    digest, which stays off the page too. Tokens are issued to their users only (the API)."""

    list_display = ["prefix", "user", "created", "expiry", "last_used"]
    search_fields = ["user__username"]
    fields = ["user", "prefix", "created", "expiry", "last_used"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class QuotaInline(admin.StackedInline):
    """A user's quotas, on the user's own page: an empty field is the installation's default."""

    model = Quota
    can_delete = False
    verbose_name_plural = "quotas (empty: the default from CONPAAS_QUOTA_*)"


class QuotaUserAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, QuotaInline]


# Django's own user admin, with the quotas on the same page.
User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, QuotaUserAdmin)


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    list_display = ["user", "services", "nodes", "environments", "storage_mb"]
    search_fields = ["user__username"]
    autocomplete_fields = ["user"]
