"""Services: create, show, change and delete them, and their actions (scale, swap, nodes, events,
credentials, load, metrics, autoscaling, logs, backups and restore)."""

from django.db.models import Prefetch
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from api import openapi
from api.serializers import (
    AutoscalingSerializer,
    BackupPolicySerializer,
    BackupSerializer,
    DeleteServiceSerializer,
    DumpSerializer,
    EventSerializer,
    MetricPointSerializer,
    NodeSerializer,
    OperationSerializer,
    RestoreSerializer,
    ScaleSerializer,
    ServiceSerializer,
    ServiceUpdateSerializer,
    SwapSerializer,
    service_list,
)
from api.views.operations import accepted
from routing.metrics import LIVE_KEEP, MINUTE_KEEP, series, service_metrics
from services import object_storage
from services.choices import Runtime
from services.data_servers import credentials
from services.models import Service
from versions.logs import DEFAULT_LINES, MAX_LINES, environment_logs, failed_logs
from versions.models import Environment
from workflows import autoscale, backups, lifecycle
from workflows.data_services import request_load
from workflows.models import Autoscaling
from workflows.scaling import request_scale
from workflows.swap import preview_swap, swap


@openapi.services
class ServiceViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = ServiceSerializer

    def get_queryset(self):
        services = Service.objects.visible_to(self.request.user)
        if self.action in ("retrieve", "create"):
            # `url`, `nodes` and each environment's `preview_url` read these prefetched nodes
            # (Service.live_node_list). The versions come joined: prefetching them
            # ("environments__version") fails on SQLite past about a thousand environments.
            environments = Environment.objects.select_related("version").order_by("created", "id")
            services = services.prefetch_related(Prefetch("environments", queryset=environments), "nodes")
        return services

    def list(self, request, *args, **kwargs):
        # Every service, unpaginated (the contract: a JSON list), in a few flat queries.
        return Response(service_list(self.get_queryset()))

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        service, operation = lifecycle.create(request.user, **serializer.validated_data)
        # The service, plus the operation that boots its first node, for clients to follow.
        body = {**self.get_serializer(service).data, "operation": OperationSerializer(operation).data}
        return Response(body, status=status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        service = self.get_object()
        serializer = ServiceUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        lifecycle.update(service, request.user, **serializer.validated_data)
        return Response(self.get_serializer(self.get_queryset().get(pk=service.pk)).data)

    def destroy(self, request, pk=None):
        service = self.get_object()
        options = DeleteServiceSerializer(data=request.query_params)
        options.is_valid(raise_exception=True)
        return accepted(lifecycle.request_delete(service, request.user, **options.validated_data))

    @action(detail=True, methods=["post"])
    def scale(self, request, pk=None):
        service = self.get_object()
        serializer = ScaleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return accepted(request_scale(service, **serializer.validated_data, user=request.user))

    @action(detail=True, methods=["post"])
    def swap(self, request, pk=None):
        service = self.get_object()
        serializer = SwapSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        environment = serializer.validated_data["environment"]
        if serializer.validated_data["dry_run"]:
            return Response(preview_swap(service, environment))
        return Response(swap(service, environment, request.user))

    @action(detail=True, methods=["get"])
    def nodes(self, request, pk=None):
        return Response(NodeSerializer(self.get_object().live_nodes(), many=True).data)

    @action(detail=True, methods=["get"])
    def events(self, request, pk=None):
        events = self.get_object().events.select_related("actor")
        if (since := request.query_params.get("since")) is not None:  # `since=` too is a bad id
            try:
                since = int(since)
            except ValueError:
                raise ValidationError({"since": "an event id: a whole number"}) from None
            events = events.filter(pk__gt=since)
        return Response(EventSerializer(events[:500], many=True).data)

    @action(detail=True, methods=["get"])
    def credentials(self, request, pk=None):
        """A data service's address and password (a storage service's admin keys): its owner's
        explicit request, the only answer that holds them."""
        service = self.get_object()
        if service.runtime == Runtime.STORAGE:
            return Response(object_storage.credentials(service, request.user))
        return Response(credentials(service, request.user))

    @action(detail=True, methods=["post"], parser_classes=[MultiPartParser])
    def load(self, request, pk=None):
        """Load a dump into a data service (multipart field `dump`): 202 and the load operation,
        whose `progress` and `counters` (bytes_read, bytes_total, items, unit) grow while it runs."""
        service = self.get_object()
        upload = DumpSerializer(data=request.data)
        if not upload.is_valid():
            raise ValidationError({"dump": "send the dump as a multipart file field named 'dump'"})
        dump = upload.validated_data["dump"]
        return accepted(request_load(service, request.user, dump, dump.name))

    @action(detail=True, methods=["get"])
    def metrics(self, request, pk=None):
        service = self.get_object()
        try:
            window = min(MINUTE_KEEP, max(1, int(request.query_params.get("window", 60))))
        except ValueError:
            raise ValidationError({"window": "a whole number of seconds"}) from None
        # The routers keep an hour of figures; the kept history, a day.
        answer = service_metrics(service, min(window, LIVE_KEEP))
        kept = series(service, window)
        answer["series_seconds"] = window
        answer["series"] = {name: MetricPointSerializer(points, many=True).data for name, points in kept.items()}
        return Response(answer)

    @action(detail=True, methods=["get", "put"])
    def autoscaling(self, request, pk=None):
        service = self.get_object()
        policy = Autoscaling.objects.filter(service=service).first() or Autoscaling(service=service)
        if request.method == "PUT":
            serializer = AutoscalingSerializer(data=request.data, partial=True)
            serializer.is_valid(raise_exception=True)
            policy = autoscale.configure(service, request.user, **serializer.validated_data)
        context = {"nodes": autoscale.backend_count(service)}
        return Response(AutoscalingSerializer(policy, context=context).data)

    @action(detail=True, methods=["get"])
    def logs(self, request, pk=None):
        service = self.get_object()
        environment = request.query_params.get("environment", "production")
        if not environment:
            raise ValidationError({"environment": "an environment's name, e.g. production"})
        lines = request.query_params.get("lines", str(DEFAULT_LINES))
        if not (lines.isascii() and lines.isdigit() and 1 <= int(lines) <= MAX_LINES):
            raise ValidationError({"lines": f"a whole number from 1 to {MAX_LINES}"})
        failed = request.query_params.get("failed", "false")
        if failed not in ("true", "false"):
            raise ValidationError({"failed": "true or false"})
        read = failed_logs if failed == "true" else environment_logs
        return Response(read(service, environment, int(lines)))

    @action(detail=True, methods=["get", "post"])
    def backups(self, request, pk=None):
        """A data service's backups, newest first; POST takes one now (202 + operation)."""
        service = self.get_object()
        if request.method == "POST":
            return accepted(backups.request_backup(service, request.user))
        backups.require_data(service)
        context = {"window": lambda backup: backups.recovery_window(service, backup)}
        return Response(BackupSerializer(service.backups.all(), many=True, context=context).data)

    @action(detail=True, methods=["get", "put"], url_path="backups/policy")
    def backup_policy(self, request, pk=None):
        service = self.get_object()
        backups.require_data(service)
        if request.method == "PUT":
            serializer = BackupPolicySerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            return Response(backups.configure(service, request.user, **serializer.validated_data))
        return Response(backups.policy(service))

    @action(detail=True, methods=["post"])
    def restore(self, request, pk=None):
        """Restore from `backup` or to `time`, in place or `into` a new service (202 + operation)."""
        service = self.get_object()
        serializer = RestoreSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        given = serializer.validated_data
        operation = backups.request_restore(
            service, request.user, backup_pk=given.get("backup"), time=given.get("time"), into=given.get("into", "")
        )
        return accepted(operation)
