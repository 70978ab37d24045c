"""Every package the project installs is pinned, and the pins are what got installed.

The pins are pip constraints files under requirements/, written by `make lock`
(scripts/lock.py); a dependency added to pyproject.toml, a new Meltano requirement or a new
loader version fails here until `make lock` is rerun.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from scripts.lock import CONSTRAINTS, MELTANO_LOCK, ROOT, TARGET_LOCK, TOOLS, local_projects
from scripts.pipeline import MELTANO_REQUIREMENT


def pins(path) -> dict[str, str]:
    """`{name: version}` for the pins of `path` that apply to this interpreter."""
    found = {}
    for line in path.read_text().splitlines():
        if not line or line[0] in "# ":
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            found[canonicalize_name(requirement.name)] = spec.version
    return found


def project_requirements() -> list[Requirement]:
    """What installing the tap with its `test` extra asks of PyPI: every requirement, followed
    through the extras and the local projects (the emulator) it names, which are installed
    from this checkout instead."""
    projects = {canonicalize_name(name): tomllib.loads((path / "pyproject.toml").read_text())
                ["project"] for name, path in local_projects().items()}
    wanted, seen, found = [Requirement("tap-events[test]")], set(), []
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        if name not in projects:
            found.append(requirement)
            continue
        for extra in {"", *requirement.extras}:
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            lines = (projects[name]["dependencies"] if extra == ""
                     else projects[name]["optional-dependencies"][extra])
            wanted += [Requirement(line) for line in lines]
    return found


def meltano_plugin(kind: str, name: str) -> dict:
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    return next(p for p in project["plugins"][kind] if p["name"] == name)


def test_every_requirement_of_the_tap_and_its_test_extra_has_a_pin_that_satisfies_it():
    pinned = pins(CONSTRAINTS)
    requirements = project_requirements() + [Requirement(tool) for tool in TOOLS]
    assert len(requirements) > 10
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not pinned: run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{requirement} but {name}=={pinned[name]} is pinned: run `make lock`")


def test_meltano_and_the_loader_are_pinned_with_their_dependencies():
    requirement = Requirement(MELTANO_REQUIREMENT)
    meltano = pins(MELTANO_LOCK)
    assert requirement.specifier.contains(meltano["meltano"])
    assert {"sqlalchemy", "click"} <= set(meltano)

    pip_url = meltano_plugin("loaders", "target-postgres")["pip_url"].split()
    loader = Requirement(pip_url[0])
    target = pins(TARGET_LOCK)
    assert loader.specifier.contains(target[canonicalize_name(loader.name)])
    assert {"singer-sdk", "sqlalchemy", "psycopg"} <= set(target)
    # meltano install applies the pins (Meltano expands ${MELTANO_PROJECT_ROOT} in pip_url).
    assert pip_url[1:] == ["--constraint",
                           "${MELTANO_PROJECT_ROOT}/" + str(TARGET_LOCK.relative_to(ROOT))]
    tap_url = meltano_plugin("extractors", "tap-events")["pip_url"].split()
    assert tap_url == ["-e", ".", "--constraint",
                       "${MELTANO_PROJECT_ROOT}/" + str(CONSTRAINTS.relative_to(ROOT))]


def test_this_environment_holds_the_pinned_versions():
    """`make install` installs from the lock: every pinned package present here has exactly
    its pinned version (a stale .venv is reinstalled when the lock changes)."""
    checked = 0
    for name, version in pins(CONSTRAINTS).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        assert installed == version, f"{name} {installed} installed, {version} pinned"
        checked += 1
    assert checked > 30


@pytest.mark.parametrize("path", [CONSTRAINTS, MELTANO_LOCK, TARGET_LOCK], ids=lambda p: p.name)
def test_lock_files_say_how_to_refresh_them_and_name_no_machine_path(path):
    text = path.read_text()
    assert "#    make lock" in text
    assert not re.search(r"(/tmp/|/home/|/work/|/Users/)", text)
