from rest_framework import serializers

from services.choices import AVAILABLE_RUNTIMES, Role, Runtime
from services.models import Event, Node, Operation, Service
from versions.models import Environment


class NodeSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Node
        fields = ["id", "name", "role", "roles", "state", "address", "cloud", "created"]

    def get_role(self, node) -> str:
        return "+".join(node.roles)


class EnvironmentSummarySerializer(serializers.ModelSerializer):
    version = serializers.PrimaryKeyRelatedField(read_only=True)
    version_label = serializers.CharField(source="version.label", default=None, read_only=True)

    class Meta:
        model = Environment
        fields = ["name", "version", "version_label", "preview_key", "preview_url"]


class ServiceSerializer(serializers.ModelSerializer):
    url = serializers.CharField(read_only=True)
    environments = EnvironmentSummarySerializer(many=True, read_only=True)
    nodes = serializers.SerializerMethodField()
    runtime = serializers.ChoiceField(choices=Runtime.choices)

    class Meta:
        model = Service
        fields = ["id", "name", "runtime", "state", "url", "environments", "nodes", "created"]
        read_only_fields = ["id", "state", "url", "environments", "nodes", "created"]

    def get_nodes(self, service) -> list[dict]:
        return NodeSerializer(service.live_nodes(), many=True).data

    def validate_runtime(self, runtime):
        if runtime not in AVAILABLE_RUNTIMES:
            available = ", ".join(sorted(AVAILABLE_RUNTIMES))
            raise serializers.ValidationError(f"the {runtime} runtime is not available yet; available: {available}")
        return runtime

    def validate_name(self, name):
        owner = self.context["request"].user
        if Service.objects.filter(owner=owner, name=name).exists():
            raise serializers.ValidationError(f"you already have a service named {name}")
        return name


class OperationSerializer(serializers.ModelSerializer):
    service = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = Operation
        fields = [
            "id",
            "kind",
            "state",
            "progress",
            "error",
            "service",
            "service_name",
            "params",
            "created",
            "started",
            "finished",
        ]


class EventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", default=None, read_only=True)
    operation = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = Event
        fields = ["id", "action", "message", "outcome", "actor", "operation", "created"]


class ScaleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)
    nodes = serializers.IntegerField(min_value=1, max_value=20)

    def validate(self, data):
        if data["role"] == Role.PROXY and data["nodes"] != 1:
            raise serializers.ValidationError({"nodes": "a service runs exactly one proxy node in this release"})
        return data
