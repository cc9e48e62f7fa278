"""A service's environments: add, list, show, deploy to (or change the preview key of) and delete them."""

from rest_framework import status, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from api import openapi
from api.serializers import DeploySerializer, EnvironmentSerializer
from api.views.operations import accepted
from services.models import Service
from versions.models import no_such_environment
from workflows.environments import add_environment, change_environment, change_preview_key, delete_environment


@openapi.environments
class EnvironmentViewSet(viewsets.ViewSet):
    lookup_field = "name"
    lookup_value_regex = "[^/]+"

    def list(self, request, service_pk=None):
        service = Service.objects.get_visible(request.user, service_pk)
        environments = service.environments.select_related("version", "service")
        return Response(
            EnvironmentSerializer(environments, many=True, context={"service": service, "request": request}).data
        )

    def retrieve(self, request, service_pk=None, name=None):
        environment = self._environment(request, service_pk, name)
        return Response(
            EnvironmentSerializer(environment, context={"service": environment.service, "request": request}).data
        )

    def create(self, request, service_pk=None):
        service = Service.objects.get_visible(request.user, service_pk)
        serializer = EnvironmentSerializer(data=request.data, context={"service": service})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        environment = add_environment(
            service,
            data["name"],
            request.user,
            data.get("preview_key", ""),
            settings=data.get("settings"),
            database_copy=data.get("database_copy", False),
        )
        return Response(
            EnvironmentSerializer(environment, context={"service": service, "request": request}).data,
            status=status.HTTP_201_CREATED,
        )

    def partial_update(self, request, service_pk=None, name=None):
        environment = self._environment(request, service_pk, name)
        service = environment.service
        serializer = DeploySerializer(data=request.data, context={"service": service})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if "preview_key" in data:
            change_preview_key(environment, data["preview_key"], request.user)
        changes = {key: data[key] for key in ("version", "settings", "database_copy") if key in data}
        operation = change_environment(environment, request.user, **changes) if changes else None
        if operation is None:
            return Response(EnvironmentSerializer(environment, context={"service": service, "request": request}).data)
        return accepted(operation)

    def destroy(self, request, service_pk=None, name=None):
        """Delete the environment: out of the routers, its instances stopped, its database copies dropped."""
        environment = self._environment(request, service_pk, name)
        delete_environment(environment, request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @staticmethod
    def _environment(request, service_pk, name):
        service = Service.objects.get_visible(request.user, service_pk)
        environment = service.environments.select_related("version", "service").filter(name=name).first()
        if environment is None:
            raise NotFound(no_such_environment(service, name))
        return environment
