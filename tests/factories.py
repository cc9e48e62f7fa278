import factory
from django.contrib.auth import get_user_model

from services.choices import NodeState, OperationKind, ServiceState
from services.models import Node, Operation, Service
from versions.models import DEVELOPMENT, PRODUCTION, CodeVersion, Environment, new_preview_key


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw")


class ServiceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Service
        skip_postgeneration_save = True

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"svc{n}")
    runtime = "python"
    state = ServiceState.RUNNING

    @factory.post_generation
    def environments(service, create, extracted, **kwargs):
        if create:
            Environment.objects.create(service=service, name=PRODUCTION)
            Environment.objects.create(service=service, name=DEVELOPMENT, preview_key=new_preview_key())


class CodeVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CodeVersion

    service = factory.SubFactory(ServiceFactory)
    label = factory.Sequence(lambda n: f"v{n}")
    sha256 = factory.Sequence(lambda n: f"{n:064x}")
    size = 100
    kind = "zip"
    entry_point = "wsgi:application"
    needs_build = False  # no archive is stored for it: nothing to build (tests/workflows/test_builds.py builds)


class NodeFactory(factory.django.DjangoModelFactory):
    """A running backend node; `is_proxy=True` for the node that also routes."""

    class Meta:
        model = Node

    service = factory.SubFactory(ServiceFactory)
    name = factory.Sequence(lambda n: f"node{n}")
    cloud = "memory"
    is_proxy = False
    is_backend = True
    state = NodeState.RUNNING
    address = factory.Sequence(lambda n: f"10.1.{n // 250}.{n % 250 + 1}")
    agent_port = 8470
    http_port = 80


class OperationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Operation

    service = factory.SubFactory(ServiceFactory)
    service_name = factory.LazyAttribute(lambda o: o.service.name)
    owner = factory.LazyAttribute(lambda o: o.service.owner)
    kind = OperationKind.SCALE
    params = factory.LazyAttribute(lambda o: {"role": "backend", "nodes": o.service.backend_nodes})
