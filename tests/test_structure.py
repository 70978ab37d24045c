"""The package's shape: no import cycles, no emulator in the tap, one road for HTTP, one
module for private SDK members."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tap_events"
#: The emulator is test tooling, a distribution of its own (emulator/): it imports the tap
#: freely, the tap never imports it.
EMULATOR = "tap_events_emulator"


def modules() -> dict[str, Path]:
    """Every module of the tap, by dotted name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The tap modules `name` imports, at run time or for type checking alone."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target.startswith(EMULATOR) or (target in known and target != name):
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def test_the_tap_never_imports_the_emulator():
    offenders = {name: sorted(t for t in targets if t.startswith(EMULATOR))
                 for name, targets in import_graph().items()}
    assert not {name: targets for name, targets in offenders.items() if targets}


def test_no_import_cycle_inside_the_tap():
    """Not at run time and not for type checking alone (`if TYPE_CHECKING:` counts too)."""
    graph = import_graph()
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles


def test_the_import_walker_sees_runtime_and_type_only_imports():
    """So the cycle check above cannot pass by seeing nothing."""
    graph = import_graph()
    assert "tap_events.client" in graph["tap_events.sources.box"]
    assert "tap_events.source" in graph["tap_events.run"]  # under `if TYPE_CHECKING:`


#: Sending a request: only tap_events/http.py may.
SENDING = re.compile(r"requests\.(get|post|put|patch|delete|head|options|request|Session)"
                     r"|Session\(|\.send\(")


def lines_matching(pattern: re.Pattern, *, allowed_in: str) -> list[str]:
    """`module:line: text` of each line matching `pattern` outside the one allowed module."""
    return [
        f"{name}:{number}: {line.strip()}"
        for name, path in modules().items() if name != allowed_in
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]


def test_only_the_http_layer_sends_requests():
    assert not lines_matching(SENDING, allowed_in="tap_events.http")


#: A private member of singer-sdk: `._name(` / `._name` on an SDK object, or `helpers._x`.
PRIVATE_SDK = re.compile(
    r"\._(write_state_message|write_record_message|generate_record_messages|process_record|"
    r"handle_termination|request|prepare_request|write_request_duration_log|stream_version|"
    r"config|tap|sync_records|log_metric|default_expiration|session|oauth_headers)\b"
    r"|singer_sdk\.helpers\._|def _(write_record_message|process_record|handle_termination)\b"
)


def test_private_sdk_members_are_named_in_one_module():
    assert not lines_matching(PRIVATE_SDK, allowed_in="tap_events.sdk_internals")
