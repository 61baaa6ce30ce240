"""Profile filing a corpus: where the writer's interpreter time goes (issue 16).

    PYTHONPATH=. python benchmarks/profile_ingest.py CORPUS_DIR [--workers N] [--top 20]
        [--out FILE]   # also save the raw profile (pstats) for a closer look

Builds a helpdesk on a temporary SQLite file (the tests' config), keeps every *.eml of
CORPUS_DIR (in name order) in the spool as SMTP would, then files them with the ingest worker
(`process_batch` until nothing is pending) under cProfile, and prints the rate, the interpreter
time per message of THIS process (the writer's; a pool's processes are not in it) and the
top functions by own time and by cumulative time. Runs against any checkout: with an older one
(no understanding pool) `--workers` is ignored and everything is in the profile.

CORPUS_DIR comes from `python ../shared/bench/gen_corpus.py DIR -n 1000 --seed 1
--ref-format '[#{mhd}]'`.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

# with PYTHONPATH set, that checkout is profiled (e.g. the integrator's, for a "before")
if "PYTHONPATH" not in os.environ:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailhelpdesk.app import build_app
from mailhelpdesk.config import load_config
from mailhelpdesk.ingest import worker
from mailhelpdesk.store import spool
from mailhelpdesk.store.db import session_scope
from tests.helpers import crlf, free_port, write_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, help="also save the raw profile here (pstats)")
    args = parser.parse_args()
    files = sorted(args.corpus.glob("*.eml"))
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(
            str(write_config(Path(tmp), smtp_port=free_port(), http_port=free_port()))
        )
        app = build_app(config)
        with session_scope(app.engine) as session:
            for path in files:
                spool.add_inbound(
                    session,
                    raw=crlf(path.read_bytes()),
                    envelope=spool.Envelope(
                        source="smtp",
                        mail_from="customer@example.test",
                        rcpt_tos=("support@helpdesk.test",),
                    ),
                    now=app.clock.now(),
                )
        kwargs: dict[str, object] = {}
        understander = None
        if "understander" in inspect.signature(worker.process_batch).parameters:
            from mailhelpdesk.ingest.understanding import Understander

            understander = Understander(args.workers)
            understander.start()
            kwargs["understander"] = understander
        profile = cProfile.Profile()
        wall, cpu = time.perf_counter(), time.process_time()
        profile.enable()
        done = 0
        while True:
            result = worker.process_batch(
                app.engine, app.settings, app.clock, limit=args.batch, **kwargs
            )
            if not result.processed:
                break
            done += result.processed
        profile.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if understander is not None:
            understander.close()
        app.close()
    print(
        f"{done} messages of {len(files)} filed in {wall:.1f} s: {done / wall:.0f} msg/s, "
        f"{cpu / done * 1000:.2f} ms of this process's CPU per message "
        f"(understanding workers: {args.workers if understander else 'none, older code'})"
    )
    if args.out is not None:
        profile.dump_stats(str(args.out))
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).strip_dirs().sort_stats(order).print_stats(args.top)
        print(f"\n--- top {args.top} by {order} ---")
        print(out.getvalue().strip())


if __name__ == "__main__":
    main()
