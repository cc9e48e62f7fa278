"""The REST API: one viewset per resource; each action validates, then calls one workflow."""

from django.contrib.auth import authenticate
from django.contrib.auth.signals import user_logged_in
from django.db.models import Prefetch
from django.http import FileResponse, Http404
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from api import openapi
from api.serializers import (
    ApiTokenSerializer,
    ApplicationSerializer,
    ApplySerializer,
    AutoscalingSerializer,
    CodeVersionSerializer,
    DeleteServiceSerializer,
    DeploySerializer,
    DumpSerializer,
    EnvironmentSerializer,
    EventSerializer,
    MetricPointSerializer,
    NodeSerializer,
    OperationSerializer,
    ScaleSerializer,
    ServiceSerializer,
    ServiceUpdateSerializer,
    SignInSerializer,
    SwapSerializer,
    UploadSerializer,
    service_list,
)
from routing.metrics import LIVE_KEEP, MINUTE_KEEP, series, service_metrics
from services import tokens
from services.databases import credentials
from services.errors import no_such
from services.models import ApiToken, Application, Operation, Service
from versions.builds import build_from_token
from versions.instances import version_from_token
from versions.logs import DEFAULT_LINES, MAX_LINES, environment_logs, failed_logs
from versions.models import Environment, no_such_environment
from versions.storage import delete_version, store_version
from workflows import autoscale, lifecycle
from workflows.applying import apply, delete_application, plan_lines
from workflows.databases import request_load
from workflows.environments import add_environment, change_environment, change_preview_key, delete_environment
from workflows.manifest import ManifestInvalid, parse
from workflows.models import Autoscaling
from workflows.scaling import request_scale
from workflows.swap import preview_swap, swap


def accepted(operation: Operation) -> Response:
    return Response(OperationSerializer(operation).data, status=status.HTTP_202_ACCEPTED)


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
        """A data service's address and password: its owner's explicit request, the only answer that holds them."""
        return Response(credentials(self.get_object(), request.user))

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


@openapi.operations
class OperationViewSet(mixins.RetrieveModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = OperationSerializer

    def get_queryset(self):
        return Operation.objects.visible_to(self.request.user)


@openapi.applications
class ApplicationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    serializer_class = ApplicationSerializer

    def perform_create(self, serializer):
        # The name's rules are the model's (Application.clean); api/errors.py answers them by field.
        Application(owner=self.request.user, **serializer.validated_data).validate()
        serializer.save(owner=self.request.user)

    def get_queryset(self):
        return Application.objects.visible_to(self.request.user).prefetch_related("services").order_by("name", "id")

    def destroy(self, request, pk=None):
        operations = delete_application(self.get_object(), request.user)
        return Response(OperationSerializer(operations, many=True).data, status=status.HTTP_202_ACCEPTED)

    @action(detail=False, methods=["post"], parser_classes=[MultiPartParser, FormParser])
    def apply(self, request):
        """Converge an application to a manifest (docs/design.md, Manifest contract): 200 with the plan
        when nothing was started (a dry run, or nothing to do), 202 with the operations started."""
        serializer = ApplySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            manifest = parse(serializer.validated_data["manifest"])
        except ManifestInvalid as exc:
            raise ValidationError({"manifest": exc.errors}) from None
        try:
            applied = apply(request.user, manifest, dict(request.FILES.items()), serializer.validated_data["dry_run"])
        except ManifestInvalid as exc:
            raise ValidationError({"manifest": exc.errors}) from None
        body = {
            "application": manifest.application,
            "dry_run": applied.dry_run,
            **plan_lines(applied.plan),
            "operations": OperationSerializer(applied.operations, many=True).data,
        }
        return Response(body, status=status.HTTP_202_ACCEPTED if applied.operations else status.HTTP_200_OK)


@openapi.code_versions
class CodeVersionViewSet(viewsets.ViewSet):
    parser_classes = [MultiPartParser, FormParser]

    def list(self, request, service_pk=None):
        service = Service.objects.get_visible(request.user, service_pk)
        return Response(CodeVersionSerializer(service.versions.select_related("build"), many=True).data)

    def retrieve(self, request, service_pk=None, pk=None):
        return Response(CodeVersionSerializer(self._version(request, service_pk, pk)).data)

    def create(self, request, service_pk=None):
        service = Service.objects.get_visible(request.user, service_pk)
        upload = UploadSerializer(data=request.data)
        if not upload.is_valid():
            if "archive" in upload.errors:
                raise ValidationError({"detail": "send the code version as a multipart file field named 'archive'"})
            raise ValidationError(upload.errors)
        archive = upload.validated_data["archive"]
        version = store_version(service, archive, upload.validated_data.get("label", ""), request.user, archive.name)
        return Response(CodeVersionSerializer(version).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, service_pk=None, pk=None):
        version = self._version(request, service_pk, pk)
        delete_version(version, request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @staticmethod
    def _version(request, service_pk, pk):
        service = Service.objects.get_visible(request.user, service_pk)
        version = service.versions.filter(pk=pk).first() if str(pk).isdigit() else None
        if version is None:
            raise NotFound(no_such("version with id", pk, service.versions.values_list("pk", flat=True), service.name))
        return version


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


@openapi.sign_in
class TokenView(APIView):
    """POST: a username and password for a new API token. DELETE: revoke the token the request is
    sent with (`conpaas logout`).

    Sign-ins go through django.contrib.auth.authenticate with the underlying HttpRequest, where
    django-axes counts failures and AxesMiddleware answers a lockout (429, Retry-After), as it does
    for the console's and the admin's sign-in forms."""

    # A sign-in form as well as JSON, as most clients send one; never multipart: an anonymous
    # request may not make the server store a file.
    parser_classes = [JSONParser, FormParser]

    def get_permissions(self):
        return [AllowAny()] if self.request.method == "POST" else [IsAuthenticated()]

    def post(self, request):
        credentials = SignInSerializer(data=request.data)
        credentials.is_valid(raise_exception=True)
        user = authenticate(request._request, **credentials.validated_data)
        if user is None:
            raise ValidationError({"detail": "unable to sign in with that username and password"})
        # What a console sign-in sends too: last_login, and axes forgives this account's failures.
        user_logged_in.send(sender=type(user), request=request._request, user=user)
        token, key = tokens.issue(user)
        return Response({"token": key, "expiry": token.expiry})

    def delete(self, request):
        if not isinstance(request.auth, ApiToken):
            raise ValidationError({"detail": "this request was not sent with a token: there is none to revoke"})
        tokens.revoke(request.user, request.auth.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


@openapi.api_tokens
class ApiTokenViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The user's own API tokens that have not expired (never the secret); revoke one by its id."""

    serializer_class = ApiTokenSerializer

    def get_queryset(self):
        return tokens.live_tokens(self.request.user)

    def destroy(self, request, pk=None):
        tokens.revoke(request.user, pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


def archive_download(request, token):
    """Nodes fetch code versions here with a signed, expiring link (no user session)."""
    version = version_from_token(token)
    if version is None or not version.archive_path.exists():
        raise Http404("unknown or expired archive link")
    return FileResponse(open(version.archive_path, "rb"), content_type="application/octet-stream")


def build_download(request, token):
    """Nodes fetch a version's build here with a signed, expiring link (no user session)."""
    build = build_from_token(token)
    if build is None or not build.path.exists():
        raise Http404("unknown or expired build link")
    return FileResponse(open(build.path, "rb"), content_type="application/octet-stream")
