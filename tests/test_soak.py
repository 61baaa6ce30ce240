"""The soak of issue 17 at CI size: benchmarks/soak.py for about 75 s of mixed SMTP, IMAP and
API load on a real daemon, SIGKILLed and restarted 3 times, then drained and checked: nothing
acknowledged lost, nothing doubled, RSS under its peak bound and flat after warm-up. The full
30-minute run is `benchmarks/soak` (docs/reliability.md, "Soak")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dovecot import dovecot_binary
from tests.helpers import ROOT, require

SOAK = ROOT / "benchmarks" / "soak.py"


@pytest.mark.slow
def test_soak_with_sigkills_loses_and_doubles_nothing_and_rss_stays_flat(tmp_path: Path) -> None:
    require(dovecot_binary() is not None, "dovecot (apt-get install dovecot-imapd)")
    summary_file = tmp_path / "soak.json"
    done = subprocess.run(
        [
            *(sys.executable, str(SOAK), "--minutes", "1.25", "--kills", "3"),
            # kills in the first 60 %, then one lifetime of at least 30 s and 120 operations:
            # warm-up 10 s and 40 operations, growth judged on the rest
            *("--kill-window", "0.6", "--warmup-s", "10", "--warmup-ops", "40"),
            *("--json", str(summary_file)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    print(done.stdout)
    assert summary_file.exists(), done.stdout[-2000:] + done.stderr[-3000:]
    summary = json.loads(summary_file.read_text())
    assert summary["kills"] == 3
    # every kind of load ran, and the kills were felt (clients had to resend)
    assert summary["smtp_accepted"] > 50 and summary["smtp_replies"] > 10
    assert summary["imap_appended"] > 10
    assert summary["api_creates"] > 10 and summary["api_responds"] > 5
    assert summary["smtp_resends"] + summary["api_retries"] > 0
    assert summary["lost"] == 0, summary["lost_examples"]
    assert summary["doubled"] == 0, summary["doubled_examples"]
    assert summary["inbound_not_done"] == 0
    rss = summary["rss"]
    assert rss["peak_mb"] < 250
    assert rss["growth"] is not None and rss["growth"] < 0.10, rss
    assert summary["ok"] and done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
