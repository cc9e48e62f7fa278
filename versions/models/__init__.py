"""The versions app's models and the rules that go with them, one module a concept:
code_versions (CodeVersion, Build), environments (Environment, preview keys, DatabaseCopy),
environment_settings (settings' rules, fingerprints, backend names), instance_records (Instance,
FailedInstanceLog). The rest of the code imports them from here, `versions.models`, where Django
finds the models and the migrations find their validators."""

from versions.models.code_versions import Build, CodeVersion, archive_path, build_path, label_validator
from versions.models.environment_settings import (
    MAX_SETTINGS,
    RESERVED_SETTINGS,
    SETTING_NAME_RE,
    SETTING_VALUE_MAX,
    backend_key,
    changed_settings,
    clean_settings,
    setting_problems,
    setting_values,
    settings_key,
    swapped_settings,
)
from versions.models.environments import (
    DEVELOPMENT,
    PREVIEW_KEY_RE,
    PRODUCTION,
    DatabaseCopy,
    Environment,
    new_preview_key,
    no_such_environment,
    not_production_key,
    preview_key_validator,
    preview_url,
)
from versions.models.instance_records import FailedInstanceLog, Instance, InstanceState

__all__ = [
    "label_validator",
    "Build",
    "build_path",
    "CodeVersion",
    "archive_path",
    "SETTING_NAME_RE",
    "SETTING_VALUE_MAX",
    "MAX_SETTINGS",
    "RESERVED_SETTINGS",
    "clean_settings",
    "setting_problems",
    "setting_values",
    "swapped_settings",
    "changed_settings",
    "settings_key",
    "backend_key",
    "PREVIEW_KEY_RE",
    "preview_key_validator",
    "not_production_key",
    "PRODUCTION",
    "DEVELOPMENT",
    "new_preview_key",
    "no_such_environment",
    "Environment",
    "preview_url",
    "DatabaseCopy",
    "InstanceState",
    "Instance",
    "FailedInstanceLog",
]
