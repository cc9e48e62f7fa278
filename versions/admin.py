from django.contrib import admin

from versions.models import CodeVersion, Environment, Instance


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
