"""The models and their migrations agree: a model change without its migration fails here."""

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_every_model_change_has_its_migration():
    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exit_:  # makemigrations --check exits 1 when a migration is missing
        pytest.fail(f"a migration is missing (exit {exit_.code}):\n{out.getvalue()}")


@pytest.mark.django_db(transaction=True)
def test_drf_tokens_move_into_knox_and_keep_working_until_they_expire(django_user_model, settings):
    """services 0006 on a database that had rest_framework.authtoken: its clear-text keys become
    digests, each old key still signs in, and DRF's table is gone with its migration records."""
    from datetime import timedelta

    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor
    from django.db.migrations.recorder import MigrationRecorder
    from django.utils import timezone
    from rest_framework.test import APIClient

    from services.models import ApiToken

    target = ("services", "0006_drf_tokens_to_api_tokens")
    executor = MigrationExecutor(connection)
    executor.migrate([("services", "0005_api_tokens")])
    user = django_user_model.objects.create_user("old-timer", password="pw")
    key, created = "0123456789abcdef0123456789abcdef01234567", timezone.now() - timedelta(days=400)
    timestamp = "timestamp with time zone" if connection.vendor == "postgresql" else "datetime"
    with connection.cursor() as cursor:
        cursor.execute(
            f'CREATE TABLE authtoken_token ("key" varchar(40) NOT NULL PRIMARY KEY, "created" {timestamp} NOT NULL,'
            ' "user_id" integer NOT NULL UNIQUE)'
        )
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, %s)", [key, created, user.pk])
    MigrationRecorder(connection).record_applied("authtoken", "0001_initial")

    try:
        MigrationExecutor(connection).migrate([target])

        assert "authtoken_token" not in connection.introspection.table_names()
        assert not MigrationRecorder(connection).migration_qs.filter(app="authtoken").exists()
        token = ApiToken.objects.get(user=user)
        assert token.digest != key and key not in (token.digest, token.token_key)
        assert abs((token.created - created).total_seconds()) < 1
        expected = timezone.now() + timedelta(days=settings.CONPAAS_TOKEN_TTL_DAYS)
        assert abs((token.expiry - expected).total_seconds()) < 60
        # The API runs on today's models: the migrations after 0006 first.
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        assert client.get("/api/v1/services/").status_code == 200
        client.credentials(HTTP_AUTHORIZATION=f"Token {key[:-1]}8")
        assert client.get("/api/v1/services/").status_code == 401
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS authtoken_token")
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
