"""The release build: `python -m build` makes an sdist and a wheel that `twine check` passes,
the wheel holds only the tap (no tests, no emulator) with its license, and the version comes
from git tags, also in a shallow clone without any.

Builds without isolation, with the setuptools and setuptools-scm pinned in
requirements/constraints.txt (a release build, `python -m build`, isolates and fetches them).
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
#: Top-level entries a wheel of the tap may hold besides its dist-info.
WHEEL_PACKAGES = {"tap_events"}


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    process = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                             check=False)
    assert process.returncode == 0, f"{command} failed:\n{process.stdout}\n{process.stderr}"
    return process


def working_tree_copy(folder: Path) -> Path:
    """The files of this checkout that git would commit (tracked, or new and not ignored), as
    they are now, in a repository of their own: a build there sees uncommitted changes but
    writes nothing here (setuptools writes egg-info into the tree it builds, which would race
    with the editable installs of tests running in parallel)."""
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    run("git", "init", "--quiet", cwd=folder)
    run("git", "add", "--all", cwd=folder)
    run("git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet",
        "-m", "working tree", cwd=folder)
    return folder


def test_release_build_passes_twine_and_ships_only_the_tap_with_its_license(tmp_path):
    source = working_tree_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), ".", cwd=source)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")

    checked = run(sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist))
    assert checked.stdout.count("PASSED") == 2, checked.stdout

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (dist_info,) = {name.split("/")[0] for name in names if ".dist-info/" in name}
        metadata = email.message_from_bytes(archive.read(f"{dist_info}/METADATA"))
        license_text = archive.read(f"{dist_info}/licenses/LICENSE").decode()
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    top_level = {name.split("/")[0] for name in names} - {dist_info}
    assert top_level == WHEEL_PACKAGES, top_level
    assert not [name for name in names if "/tests/" in name or name.startswith("tests/")]
    assert not [name for name in names if "emulator" in name], "the emulator is in the wheel"
    assert "tap-events = tap_events.tap:TapEvents.cli" in entry_points
    assert "emulator" not in entry_points

    # The license: Apache-2.0 as declared, its full text shipped.
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["License-File"] == "LICENSE"
    assert license_text == (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    # The README is the long description, rendered as Markdown on PyPI.
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata["Name"] == "tap-events"
    version = Version(metadata["Version"])
    assert wheel.name.startswith(f"tap_events-{version}-py3-none-any")

    # The sdist carries what a build from it needs, and the same version.
    with tarfile.open(sdist) as archive:
        members = {Path(name).relative_to(f"tap_events-{version}").as_posix()
                   for name in archive.getnames() if "/" in name}
    assert {"LICENSE", "pyproject.toml", "README.md", "PKG-INFO",
            "tap_events/tap.py"} <= members


def test_version_comes_from_the_tag_and_works_in_a_shallow_clone_without_tags(tmp_path):
    clone = tmp_path / "clone"
    run("git", "init", "--quiet", str(clone))
    run("git", "fetch", "--quiet", "--depth", "1", f"file://{ROOT}", "HEAD", cwd=clone)
    run("git", "checkout", "--quiet", "FETCH_HEAD", cwd=clone)
    assert run("git", "tag", cwd=clone).stdout == ""

    untagged = Version(run(sys.executable, "-m", "setuptools_scm", cwd=clone).stdout.strip())
    assert untagged.is_devrelease and untagged.local, untagged

    run("git", "-c", "user.name=t", "-c", "user.email=t@example.com", "tag", "-a", "v1.4.0",
        "-m", "release 1.4.0", cwd=clone)
    tagged = run(sys.executable, "-m", "setuptools_scm", cwd=clone).stdout.strip()
    assert tagged == "1.4.0"
