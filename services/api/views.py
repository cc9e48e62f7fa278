from django.db.models import Q
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from routing.metrics import service_metrics
from routing.swap import swap
from services import lifecycle
from services.api.serializers import (
    EventSerializer,
    NodeSerializer,
    OperationSerializer,
    ScaleSerializer,
    ServiceSerializer,
)
from services.models import Operation, Service
from services.operations import OperationFailed
from versions.api.serializers import SwapSerializer
from versions.models import DEVELOPMENT


def visible_service(request, pk) -> Service:
    """The service, if the user may see it; another user's service is a 404, like a missing one."""
    return get_object_or_404(Service.objects.visible_to(request.user), pk=pk)


def accepted(operation: Operation) -> Response:
    return Response(OperationSerializer(operation).data, status=status.HTTP_202_ACCEPTED)


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
        if self.action in ("list", "retrieve", "create"):
            services = services.prefetch_related("environments__version", "nodes")
        return services

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        service, operation = lifecycle.create(
            request.user, serializer.validated_data["name"], serializer.validated_data["runtime"]
        )
        # The service, plus the operation that boots its first node, for clients to follow.
        body = {**self.get_serializer(service).data, "operation": OperationSerializer(operation).data}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(responses={202: OperationSerializer})
    def destroy(self, request, pk=None):
        return accepted(lifecycle.request_delete(self.get_object(), request.user))

    @extend_schema(request=ScaleSerializer, responses={202: OperationSerializer})
    @action(detail=True, methods=["post"])
    def scale(self, request, pk=None):
        service = self.get_object()
        serializer = ScaleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return accepted(lifecycle.request_scale(service, **serializer.validated_data, user=request.user))

    @extend_schema(request=SwapSerializer)
    @action(detail=True, methods=["post"])
    def swap(self, request, pk=None):
        service = self.get_object()
        serializer = SwapSerializer(data=request.data or {"environment": DEVELOPMENT}, context={"service": service})
        serializer.is_valid(raise_exception=True)
        return Response(swap(service, serializer.validated_data["environment"], request.user))

    @extend_schema(responses=NodeSerializer(many=True))
    @action(detail=True, methods=["get"])
    def nodes(self, request, pk=None):
        return Response(NodeSerializer(self.get_object().live_nodes(), many=True).data)

    @extend_schema(responses=EventSerializer(many=True))
    @action(detail=True, methods=["get"])
    def events(self, request, pk=None):
        events = self.get_object().events.select_related("actor")
        if since := request.query_params.get("since"):
            events = events.filter(pk__gt=since)
        return Response(EventSerializer(events[:500], many=True).data)

    @extend_schema(parameters=[OpenApiParameter("window", int, description="seconds, 1 to 3600 (default 60)")])
    @action(detail=True, methods=["get"])
    def metrics(self, request, pk=None):
        service = self.get_object()
        try:
            window = min(3600, max(1, int(request.query_params.get("window", 60))))
        except ValueError:
            raise ValidationError({"window": "a whole number of seconds"}) from None
        try:
            return Response(service_metrics(service, window))
        except OperationFailed as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)


class OperationViewSet(mixins.RetrieveModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = OperationSerializer

    def get_queryset(self):
        user = self.request.user
        operations = Operation.objects.all()
        return operations if user.is_staff else operations.filter(Q(owner=user) | Q(service__owner=user))
