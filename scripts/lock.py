"""Pin every Python package the project installs, so CI and `make install` are reproducible.

`make lock` (= `python -m scripts.lock`) resolves, with `uv pip compile --universal` (every
platform, Python 3.11+), three pip constraints files under requirements/:

- `constraints.txt`: the tap with its `test` extra (which pulls in `demo` and `emulator`),
  plus the tools that install and lock (`pip`, `uv`); used by `make install`, and by
  `meltano install` for the tap's own plugin virtualenv (meltano.yml's pip_url);
- `meltano.txt`: Meltano, as scripts/pipeline.py installs it into `.venv-meltano`;
- `target-postgres.txt`: the loader, as meltano.yml's pip_url installs it.

A constraints file only pins versions; it never adds a package. Refresh after changing a
dependency in pyproject.toml, `MELTANO_REQUIREMENT` or the loader's pip_url, then run
`make test`; tests/test_lock.py fails while a requirement has no pin that satisfies it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
CONSTRAINTS = REQUIREMENTS / "constraints.txt"
MELTANO_LOCK = REQUIREMENTS / "meltano.txt"
TARGET_LOCK = REQUIREMENTS / "target-postgres.txt"
#: Installed by `make install` and `make lock` themselves.
TOOLS = ("pip", "uv")
#: The oldest Python the project supports (pyproject's requires-python).
PYTHON = "3.11"


def target_requirement() -> str:
    """The loader's requirement: the first word of its pip_url in meltano.yml."""
    import yaml

    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    loader = next(p for p in project["plugins"]["loaders"] if p["name"] == "target-postgres")
    return loader["pip_url"].split()[0]


def local_projects() -> dict[str, Path]:
    """The distributions this repository builds, by name: the tap, and each folder beside it
    with a pyproject.toml (the emulator, `emulator/`). Installed from here, never pinned."""
    paths = [ROOT / "pyproject.toml", *sorted(ROOT.glob("*/pyproject.toml"))]
    return {tomllib.loads(path.read_text())["project"]["name"]: path.parent for path in paths}


def compile_lock(requirements: list[str], output: Path, *, project: bool = False) -> None:
    """Resolve `requirements` (and, with `project`, pyproject.toml with its `test` extra and
    every local project) into the pinned constraints file `output`."""
    sources = ["pyproject.toml", "--extra=test"] if project else []
    if project:
        requirements = [f"-e {path.relative_to(ROOT).as_posix()}"
                        for path in local_projects().values()] + requirements
    command = [
        sys.executable, "-m", "uv", "pip", "compile", "--quiet", "--universal",
        "--python-version", PYTHON, "--custom-compile-command", "make lock",
        *(f"--no-emit-package={name}" for name in local_projects()),
        "--output-file", str(output.relative_to(ROOT)), *sources, "-",
    ]
    # The requirements come on stdin, so the file names no temporary path.
    subprocess.run(command, cwd=ROOT, check=True, text=True,
                   input="".join(f"{line}\n" for line in requirements))


def main(argv: list[str] | None = None) -> int:
    from scripts.pipeline import MELTANO_REQUIREMENT

    parser = argparse.ArgumentParser(prog="python -m scripts.lock",
                                     description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    REQUIREMENTS.mkdir(exist_ok=True)
    compile_lock(list(TOOLS), CONSTRAINTS, project=True)
    compile_lock([MELTANO_REQUIREMENT], MELTANO_LOCK)
    compile_lock([target_requirement()], TARGET_LOCK)
    for path in (CONSTRAINTS, MELTANO_LOCK, TARGET_LOCK):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
