from rest_framework import serializers

from services.models import active_operations
from versions.models import PRODUCTION, CodeVersion, Environment, not_production_key, preview_key_validator


class CodeVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = CodeVersion
        fields = ["id", "label", "sha256", "size", "kind", "entry_point", "created"]


class UploadSerializer(serializers.Serializer):
    archive = serializers.FileField(allow_empty_file=True)
    label = serializers.CharField(required=False, allow_blank=True, max_length=40)


class EnvironmentSerializer(serializers.ModelSerializer):
    version = serializers.PrimaryKeyRelatedField(read_only=True)
    version_label = serializers.CharField(source="version.label", default=None, read_only=True)
    preview_url = serializers.CharField(read_only=True)
    state = serializers.SerializerMethodField()
    preview_key = serializers.CharField(
        required=False, max_length=128, validators=[preview_key_validator, not_production_key]
    )

    class Meta:
        model = Environment
        fields = ["name", "version", "version_label", "preview_key", "preview_url", "state", "updated"]
        read_only_fields = ["updated"]

    def get_state(self, environment) -> str:
        deploying = active_operations().filter(
            service=environment.service_id, kind="deploy", params__environment=environment.name
        )
        if deploying.exists():
            return "deploying"
        return "live" if environment.version_id else "empty"

    def validate_name(self, name):
        service = self.context["service"]
        if service.environments.filter(name=name).exists():
            raise serializers.ValidationError(f"{service.name} already has an environment named {name}")
        return name

    def validate_preview_key(self, key):
        service = self.context["service"]
        taken = service.environments.filter(preview_key=key)
        if self.instance is not None:
            if self.instance.name == PRODUCTION:
                raise serializers.ValidationError("production is served without a key; it has no preview key")
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise serializers.ValidationError("another environment of this service uses that preview key")
        return key


class DeploySerializer(serializers.Serializer):
    version = serializers.IntegerField(required=False)
    preview_key = serializers.CharField(
        required=False, max_length=128, validators=[preview_key_validator, not_production_key]
    )

    def validate_version(self, version_id):
        service = self.context["service"]
        if not service.versions.filter(pk=version_id).exists():
            raise serializers.ValidationError(f"{service.name} has no version with id {version_id}")
        return version_id


class SwapSerializer(serializers.Serializer):
    environment = serializers.CharField(default="development")

    def validate_environment(self, name):
        service = self.context["service"]
        if not service.environments.filter(name=name).exists():
            from rest_framework.exceptions import NotFound

            raise NotFound(f"{service.name} has no environment named {name}")
        return name
