"""What a failed deploy quotes comes from the instance's own logs: PHP's fatal error, through
nginx and php-fpm, read by a real agent."""

import uuid

import pytest

from tests.agent.agent_helpers import http_request, instance_body, make_zip
from versions.logs import why

THROWING_SITE = {"index.php": "<?php throw new RuntimeException('no DATABASE_URL in the environment');"}


@pytest.mark.integration
def test_a_php_fatal_error_is_in_what_a_failed_deploy_quotes(start_agent, archives):
    agent = start_agent(roles=["backend"])
    url, sha = archives.add(f"{uuid.uuid4().hex}.zip", make_zip(THROWING_SITE))
    response = agent.call("PUT", "/v1/instances/p9", instance_body(url, sha, "v1", runtime="php", max_upload_mb=1))
    assert response.status == 200, response.body
    port = response.json()["port"]
    assert http_request(port, "GET", "/").status == 500

    files = agent.call("GET", "/v1/instances/p9/logs?lines=200").json()["files"]
    excerpt = why(files)
    assert "PHP Fatal error:  Uncaught RuntimeException: no DATABASE_URL in the environment" in excerpt, files
    assert "access.log" not in excerpt
