"""An environment's settings: their rules and stored form, how a swap moves them, their fingerprint
and the routers' name of a release (a code version with its setting values)."""

import hashlib
import json
import re

from django.core.exceptions import ValidationError

# An environment's settings: {NAME: {"value": str, "sticky": bool}}. A sticky setting stays with
# its environment on a swap (a staging database URL); a travelling one follows the code version.
SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
SETTING_VALUE_MAX = 4096
MAX_SETTINGS = 100
# What the platform and the runtimes set themselves: a setting may not replace them.
RESERVED_SETTINGS = frozenset({"PATH", "HOME", "PORT", "LANG", "LC_ALL", "PYTHONPATH", "JAVA_HOME", "CATALINA_BASE"})


def clean_settings(raw) -> dict[str, dict]:
    """Settings as a client writes them (`NAME: value` or `NAME: {value, sticky}`), checked and in
    their stored form; ValidationError keyed by each wrong setting's name."""
    if not isinstance(raw, dict):
        raise ValidationError({"settings": "an object of NAME: value (or NAME: {value, sticky})"})
    if len(raw) > MAX_SETTINGS:
        raise ValidationError({"settings": f"at most {MAX_SETTINGS} settings"})
    clean, errors = {}, {}
    for name, given in raw.items():
        if not isinstance(name, str) or not SETTING_NAME_RE.match(name):
            errors[str(name)] = "a setting's name is letters, digits and underscores, not starting with a digit"
            continue
        if name.upper().startswith("CONPAAS_") or name in RESERVED_SETTINGS:
            errors[name] = (
                "names starting with CONPAAS_ are the platform's"
                if name.upper().startswith("CONPAAS_")
                else f"{name} is set by the platform itself"
            )
            continue
        sticky = False
        if isinstance(given, dict):
            unknown = set(given) - {"value", "sticky"}
            if unknown:
                errors[name] = f"unknown key '{sorted(unknown)[0]}' (a setting has value and sticky)"
                continue
            sticky, given = given.get("sticky", False), given.get("value")
            if not isinstance(sticky, bool):
                errors[name] = "sticky is true or false"
                continue
        if isinstance(given, bool) or not isinstance(given, str | int | float):
            errors[name] = "the value is a string (or a number)"
            continue
        value = str(given)
        if len(value) > SETTING_VALUE_MAX or "\0" in value:
            errors[name] = f"the value is at most {SETTING_VALUE_MAX} characters, with no NUL"
            continue
        clean[name] = {"value": value, "sticky": sticky}
    if errors:
        raise ValidationError({f"settings.{name}": message for name, message in errors.items()})
    return dict(sorted(clean.items()))


def setting_problems(error: ValidationError) -> list[str]:
    """clean_settings' refusal as sentences, each naming its setting (`9X: a setting's name ...`)."""
    if not hasattr(error, "error_dict"):
        return list(error.messages)
    return [
        f"{key.removeprefix('settings.')}: {message}" if key != "settings" else message
        for key, messages in error.message_dict.items()
        for message in messages
    ]


def setting_values(settings_: dict[str, dict]) -> dict[str, str]:
    return {name: setting["value"] for name, setting in settings_.items()}


def swapped_settings(production: dict, other: dict) -> tuple[dict, dict]:
    """The settings of production and of the other environment after they swap: each keeps its
    sticky settings and takes the other's travelling ones. A name sticky in either environment
    stays put in both (as a slot setting does), so no value is lost and swapping back restores
    both environments exactly."""
    sticky = {name for settings_ in (production, other) for name, s in settings_.items() if s["sticky"]}

    def after(own: dict, incoming: dict) -> dict:
        kept = {name: s for name, s in own.items() if name in sticky}
        travelling = {name: s for name, s in incoming.items() if name not in sticky}
        return dict(sorted({**travelling, **kept}.items()))

    return after(production, other), after(other, production)


def changed_settings(before: dict, after: dict) -> list[str]:
    """The names of the settings added, removed, or changed in value or stickiness, sorted.
    What deploy, applying and swap report: names only, since values may be secrets."""
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))


def settings_key(values: dict[str, str], copies: dict[str, str]) -> str:
    """A short fingerprint of what an instance gets besides its code (its environment's setting
    values and database copies); empty when it gets nothing, so plain versions keep their names."""
    if not values and not copies:
        return ""
    text = json.dumps({"settings": values, "copies": copies}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def backend_key(version_id: int, key: str) -> str:
    """The routers' name of a release's backend: the version's id, and the settings' fingerprint."""
    return f"{version_id}-{key}" if key else str(version_id)
