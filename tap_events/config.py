"""Policy on the tap's settings that the JSON schema cannot say: dates, URLs, secrets.

Kept apart from the tap so API modules can ask it (is this URL safe for credentials?)
without importing the tap, which imports them.
"""

from __future__ import annotations

import datetime
import json
import re
import typing as t
from pathlib import Path
from urllib.parse import urlsplit

from singer_sdk import typing as th

from tap_events.errors import shape
from tap_events.redact import secret_text

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from tap_events.source import Source


def number(*, minimum: float, maximum: float | None = None) -> th.NumberType:
    """A number setting whose bounds may be fractions (`minimum=0.1` seconds).

    singer-sdk 0.54 annotates numeric bounds as `int`, though it writes any number into the
    schema; this is the one place that passes it a fraction.
    """
    return th.NumberType(minimum=minimum, maximum=maximum)  # type: ignore[arg-type]


def is_safe_url(url: str) -> bool:
    """Whether credentials may travel to `url`: https, or plain http to this machine only."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def secret_values(config: Mapping[str, t.Any], sources: Iterable[Source]) -> list[str]:
    """Every secret in the config, as text: settings marked secret (whatever their type, as
    a wrongly typed one is still a secret; as given and as used, surrounding whitespace
    stripped), and what each API derives from them."""
    values: list[str] = []
    for source in sources:
        settings = config.get(source.name)
        if not isinstance(settings, dict):
            continue
        for key in source.secret_settings:
            values += secret_text(settings.get(key))
        if source.derived_secrets:
            used = source.settings(config)
            values += source.derived_secrets(used)
            if any(used.get(key) != settings.get(key) for key in source.secret_settings):
                values += source.derived_secrets(settings)
    return values


def padded_secrets(config: Mapping[str, t.Any], sources: Iterable[Source]) -> list[str]:
    """`box.client_secret`: the secret settings given with surrounding whitespace (a secret
    file mounted into a variable keeps its newline), which the tap strips."""
    return [f"{source.name}.{key}" for source in sources
            if isinstance(settings := config.get(source.name), dict)
            for key in source.secret_settings
            if isinstance(value := settings.get(key), str) and value != value.strip()]


def settings_errors(config: Mapping[str, t.Any], sources: Iterable[Source]) -> list[str]:
    """What the JSON schema cannot say: date formats, whole credential sets, secrets only
    over TLS, and each API's own checks (`Source.settings_errors`)."""
    errors = []
    start_date = config.get("start_date")
    if start_date:
        try:
            parsed = datetime.datetime.fromisoformat(start_date)
        except (TypeError, ValueError):
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            errors.append(
                f"start_date {start_date!r} is not an ISO 8601 date-time with a UTC offset "
                "(e.g. 2026-01-01T00:00:00Z)"
            )
    for source in sources:
        errors += credential_errors(config, source)
        if not source.is_configured(config):
            continue
        if source.settings_errors:
            errors += source.settings_errors(source.settings(config))
        for key, value in source.settings(config).items():
            if key.endswith("_url") and isinstance(value, str) and not is_safe_url(value):
                errors.append(
                    f"{source.name}.{key} {value!r}: credentials are only sent over https "
                    "(plain http is allowed to 127.0.0.1/localhost only)"
                )
    return errors


def credential_errors(config: Mapping[str, t.Any], source: Source) -> list[str]:
    """An API given part of a credential set and no whole one: refused, naming what is
    missing. (An API given none of its credentials is skipped: the user did not ask for it.)"""
    given = config.get(source.name)
    if not isinstance(given, dict) or source.is_configured(config):
        return []
    errors = []
    for keys in source.credential_sets:
        present = [key for key in keys if given.get(key)]
        if present and len(present) < len(keys):
            missing = [f"{source.name}.{key}" for key in keys if key not in present]
            errors.append(
                f"{' and '.join(missing)} not set, but "
                f"{' and '.join(f'{source.name}.{key}' for key in present)} is: "
                f"{source.label} needs {source.credentials_hint()}"
            )
    return errors


class InputFileError(Exception):
    """A config, state or catalog file the tap cannot use; `str()` is the one line to print."""


def read_json_object(path: str, what: str) -> dict[str, t.Any]:
    """The JSON object in the `what` file (config, state, catalog) at `path`, or an
    `InputFileError` naming the file and the problem."""
    where = f"{what} file '{path}'"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{where}: is a directory, not a file") from None
    except PermissionError:
        raise InputFileError(f"{where}: not readable (permission denied)") from None
    except UnicodeDecodeError as error:
        raise InputFileError(f"{where}: not UTF-8 text ({error.reason})") from None
    except OSError as error:
        raise InputFileError(f"{where}: cannot be read ({error.strerror})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputFileError(
            f"{where}: not valid JSON ({error.msg} at line {error.lineno} column "
            f"{error.colno})") from None
    if not isinstance(value, dict):
        raise InputFileError(
            f"{where}: holds {shape(value)}, not an object") from None
    return value


#: What the SDK reads as true in an environment variable (and false: anything else).
TRUTHY = ("true", "1", "yes", "on")
FALSY = ("false", "0", "no", "off", "")


def env_var_name(prefix: str, *path: str) -> str:
    """`TAP_EVENTS_BOX_CLIENT_ID` for `box.client_id`: Meltano's name for a (nested)
    setting, uppercase with every run of other characters made `_`."""
    return prefix + re.sub(r"[^A-Z0-9]+", "_", "_".join(path).upper())


def settings_from_env(schema: Mapping[str, t.Any], environ: Mapping[str, str],
                      prefix: str) -> dict[str, t.Any]:
    """Every setting of `schema` given as an environment variable, typed as the schema says;
    an API's settings (`box.client_id`) from `TAP_EVENTS_BOX_CLIENT_ID`, as Meltano names
    them. A value the schema cannot take is a `ValueError` naming the variable."""
    config: dict[str, t.Any] = {}
    for key, prop in schema.get("properties", {}).items():
        if not isinstance(prop, dict):
            continue
        name = env_var_name(prefix, key)
        if name in environ:
            config[key] = typed_env_value(name, environ[name], prop)
        if "object" in schema_types(prop) and prop.get("properties"):
            nested = settings_from_env(prop, environ, name + "_")
            if nested:
                given = config.get(key)
                config[key] = {**(given if isinstance(given, dict) else {}), **nested}
    return config


def schema_types(prop: Mapping[str, t.Any]) -> set[str]:
    types = prop.get("type", [])
    found = {types} if isinstance(types, str) else set(types)
    for option in [*prop.get("anyOf", []), *prop.get("oneOf", [])]:
        if isinstance(option, dict):
            found |= schema_types(option)
    return found


def typed_env_value(name: str, value: str, prop: Mapping[str, t.Any]) -> t.Any:
    types = schema_types(prop)
    shown = "" if prop.get("secret") else f"={value!r}"
    try:
        if "integer" in types:
            return int(value)
        if "number" in types:
            return float(value)
    except ValueError:
        raise ValueError(f"environment variable {name}{shown} is not a number") from None
    if "boolean" in types:
        if value.strip().lower() in TRUTHY:
            return True
        if value.strip().lower() in FALSY:
            return False
        raise ValueError(f"environment variable {name}{shown} is not a boolean "
                         "(true or false)")
    if "array" in types:
        if value.strip().startswith("["):
            try:
                items = json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f"environment variable {name} is not a JSON array "
                                 f"({error.msg})") from None
            if not isinstance(items, list):
                raise ValueError(f"environment variable {name} is not a JSON array")
            return items
        return [item.strip() for item in value.split(",") if item.strip()]
    if "object" in types:
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"environment variable {name} is not a JSON object "
                             f"({error.msg})") from None
    return value
