"""What the control plane tells nodes about a service's runtime: the packages a VM installs, and
the instance spec each runtime's recipe on the agent takes."""

import json

import pytest

from conpaas_agent import instances as agent_instances
from services.choices import OperationState
from tests.factories import CodeVersionFactory, NodeFactory, ServiceFactory
from versions.models import Environment, Instance
from workflows import lifecycle
from workflows.deploy import request_deploy


def test_a_new_node_is_told_its_runtime(alice, queue, cloud):
    operation = queue.start(lambda: lifecycle.create(alice, "shop", "java")[1])
    assert operation.state == OperationState.SUCCEEDED, operation.error
    (node,) = cloud.list_nodes()
    assert json.loads(node.extra["userdata"])["runtime"] == "java"


@pytest.mark.parametrize(
    ("runtime", "fields"),
    [
        ("python", {"entry_point": "wsgi:application"}),
        ("php", {"max_upload_mb": 40}),
        ("java", {"heap_mb": 384}),
        ("static", {}),
    ],
)
def test_each_runtime_is_sent_the_fields_its_recipe_takes(settings, queue, runtime, fields):
    settings.CONPAAS_MAX_UPLOAD_MB = 40
    service = ServiceFactory(runtime=runtime, java_heap_mb=384 if runtime == "java" else 256)
    NodeFactory(service=service, is_proxy=True)
    entry_point = "wsgi:application" if runtime == "python" else ""
    version = CodeVersionFactory(service=service, label="v1", entry_point=entry_point)
    environment = Environment.objects.get(service=service, name="production")

    operation = queue.start(lambda: request_deploy(environment, version, service.owner))

    assert operation.state == OperationState.SUCCEEDED, operation.error
    spec = Instance.objects.get(version=version).spec
    assert {k: v for k, v in spec.items() if k not in agent_instances.COMMON_FIELDS} == fields
    # The agent's own rulebook takes it as it is.
    assert agent_instances.validate_instance(spec)["runtime"] == runtime
