"""The import-linter contracts of pyproject.toml hold on the real tree and catch a forbidden
import: a copy of the package gets one module that breaks a rule, and `lint-imports` must fail
naming the contract that rule belongs to."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _lint_imports() -> str:
    """The `lint-imports` of this interpreter's environment (the test extra installs it)."""
    script = Path(sys.executable).with_name("lint-imports")
    found = str(script) if script.exists() else shutil.which("lint-imports")
    assert found, "lint-imports is not installed (pip install -e '.[test]')"
    return found


def _contract_name(contract_id: str) -> str:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (name,) = (c["name"] for c in contracts if c["id"] == contract_id)
    return str(name)


def _run(cwd: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the pyproject.toml in `cwd`, finding `mailhelpdesk` there first."""
    env = {**os.environ, "PYTHONPATH": str(cwd), "NO_COLOR": "1"}
    return subprocess.run(
        [_lint_imports(), "--no-logo", "--no-cache", str(cwd / "pyproject.toml")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,  # the exit status is the result under test
    )


def _status(output: str, contract_id: str) -> str:
    """'KEPT' or 'BROKEN' for the contract, from the summary lines of the report."""
    name = _contract_name(contract_id)
    for line in output.splitlines():
        found = re.match(re.escape(name) + r" (KEPT|BROKEN)\b", line)
        if found:
            return found.group(1)
    raise AssertionError(f"contract {name!r} is not in the report:\n{output}")


@pytest.fixture(scope="module")
def copy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine copy of the package and its pyproject.toml, made once for this module."""
    root = tmp_path_factory.mktemp("contract")
    shutil.copytree(
        ROOT / "mailhelpdesk",
        root / "mailhelpdesk",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_real_tree_keeps_every_contract() -> None:
    result = _run(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


def test_the_pristine_copy_keeps_every_contract(copy_root: Path) -> None:
    """The copy is a faithful stand-in: without the planted import nothing is broken."""
    result = _run(copy_root)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "source", "contract_id"),
    [
        ("mail/leak.py", "from mailhelpdesk.store import tickets\n", "mail-pure"),
        ("mail/leak.py", "import mailhelpdesk.config\n", "mail-pure"),
        ("store/leak.py", "from mailhelpdesk.services import tickets\n", "layers"),
        ("services/leak.py", "from mailhelpdesk.http import errors\n", "layers"),
        ("domain/leak.py", "from mailhelpdesk.store import db\n", "layers"),
        ("transports/leak.py", "from mailhelpdesk.services import tickets\n", "transports-dumb"),
        ("http/leak.py", "from mailhelpdesk.store import tickets\n", "http-no-store"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    copy_root: Path, tmp_path: Path, module: str, source: str, contract_id: str
) -> None:
    root = tmp_path / "tree"
    shutil.copytree(copy_root, root)
    planted = root / "mailhelpdesk" / module
    planted.write_text(f'"""Planted by the test: a forbidden import."""\n\n{source}')
    result = _run(root)
    importer = "mailhelpdesk." + module.removesuffix(".py").replace("/", ".")
    assert result.returncode != 0, result.stdout
    assert _status(result.stdout, contract_id) == "BROKEN", result.stdout
    assert importer in result.stdout, result.stdout
