"""Understanding functions for the pool tests (tests/ingest/test_understanding.py): the real
one, except for a message that asks to hang or to kill its process. Top-level, so a worker
process started by the fork server can import them by name."""

from __future__ import annotations

import os
import signal
import time

from mailhelpdesk.ingest.understanding import Job, Result, understand_job
from mailhelpdesk.mail.understood import UnderstandSettings


def hang_or_crash(job: Job, settings: UnderstandSettings) -> Result:
    if b"X-Test-Understand: hang" in job.raw:
        time.sleep(3600)
    if b"X-Test-Understand: crash" in job.raw:
        os.kill(os.getpid(), signal.SIGKILL)
    return understand_job(job, settings)


def pid_or_fail(how: str, parent_pid: int) -> int:
    """For `Understander.offload`: this process's id, except that in a worker (not the test's
    own process, where the fallback runs) it hangs or kills itself when asked to."""
    if os.getpid() != parent_pid:
        if how == "hang":
            time.sleep(3600)
        if how == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()
