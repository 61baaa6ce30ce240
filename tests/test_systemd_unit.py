"""The shipped systemd unit: valid for systemd itself (`systemd-analyze verify`), and sandboxed
well enough that `systemd-analyze security` rates it OK."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import require

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "mailhelpdesk.service"
MAX_EXPOSURE = 2.0  # systemd's scale: 0 (locked down) to 10 (unprotected); "OK" is below 3


def _installed_unit(tmp_path: Path) -> Path:
    """The unit as an operator installs it, pointing at this environment's console script
    (verify checks that the command exists)."""
    command = Path(sys.executable).parent / "mailhelpdesk"
    require(command.exists(), "the mailhelpdesk console script")
    unit = tmp_path / "mailhelpdesk.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/mailhelpdesk", str(command)))
    return unit


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    require(tool is not None, "systemd-analyze (Debian package systemd)")
    assert tool is not None
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, check=False)


def test_unit_verifies_clean(tmp_path: Path) -> None:
    done = _analyze("verify", str(_installed_unit(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert "mailhelpdesk.service" not in done.stderr, done.stderr  # no warning about the unit


def test_unit_is_sandboxed(tmp_path: Path) -> None:
    done = _analyze("security", "--offline=true", "--no-pager", str(_installed_unit(tmp_path)))
    found = re.search(r"Overall exposure level for mailhelpdesk\.service: ([0-9.]+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout
    text = UNIT.read_text()
    for line in (
        "UMask=0077",
        "StateDirectoryMode=0700",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line
