"""Every record of every stream validates against the schema the tap declares.

The tap skips the SDK's type conformance (tap_events/client.py), so the schemas must be
complete and right: this test is what makes that safe.
"""

from __future__ import annotations

import jsonschema

from tests.support import discover, run_tap


def test_date_time_formats_are_really_checked():
    assert not jsonschema.FormatChecker().conforms("yesterday", "date-time")


def test_every_record_matches_its_stream_schema(emulator, config):
    catalog = discover(config)
    schemas = {entry["tap_stream_id"]: entry["schema"] for entry in catalog["streams"]}
    run = run_tap(config)
    assert run.returncode == 0, run.stderr
    emitted = {m["stream"] for m in run.messages if m["type"] == "RECORD"}
    assert emitted == set(schemas), "every stream must emit records against the emulator"
    validators = {
        name: jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
        for name, schema in schemas.items()
    }
    for message in run.messages:
        if message["type"] == "RECORD":
            errors = list(validators[message["stream"]].iter_errors(message["record"]))
            assert not errors, f"{message['stream']}: {errors[0].message}"
