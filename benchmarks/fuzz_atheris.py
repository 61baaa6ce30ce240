"""Coverage-guided fuzzing of the mail parser with atheris (issue 17), a separate command:

    PYTHONPATH=. python benchmarks/fuzz_atheris.py -atheris_runs=200000 [-max_total_time=600]

It seeds libFuzzer with the shared corpus (../shared/corpus, or $MAILHELPDESK_CORPUS; read at
run time, never copied into the repository) mutated the way tests/hostile/test_fuzz.py does,
then lets libFuzzer grow inputs that reach new code in `mailhelpdesk.mail`. A finding is any
exception out of `parse_message` (whose contract is never to raise), a parse slower than
PARSE_SECONDS, or a result that the database could not store (a NUL or a lone surrogate).
libFuzzer writes a crashing input to ./crash-* for a regression test.

atheris comes from PyPI (`pip install atheris`, the `fuzz` extra); it needs a CPython it ships
wheels for, or clang to build."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from mailhelpdesk.mail.parse import parse_message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.hostile.fuzz_inputs import corpus_messages, generated_message, mutate  # noqa: E402

PARSE_SECONDS = 5.0


def check(data: bytes) -> None:
    started = time.perf_counter()
    mail = parse_message(data)
    took = time.perf_counter() - started
    if took > PARSE_SECONDS:
        raise AssertionError(f"parse took {took:.1f} s for {len(data)} bytes")
    for text in (mail.text, mail.subject, mail.html or "", *(v for _, v in mail.headers)):
        if "\x00" in text:
            raise AssertionError("a NUL reached the parse result")
        text.encode("utf-8")


def seeds() -> str:
    """A folder of seed inputs: corpus messages, some mutated, and generated MIME trees."""
    root = Path(os.environ.get("MAILHELPDESK_CORPUS", ROOT.parent / "shared" / "corpus"))
    folder = Path(tempfile.mkdtemp(prefix="mhd-fuzz-seeds-"))
    messages = corpus_messages(root) if root.is_dir() else ()
    for index, raw in enumerate(messages):
        (folder / f"c{index}").write_bytes(raw)
        (folder / f"m{index}").write_bytes(mutate(raw, index, 2))
    for seed in range(200):
        (folder / f"g{seed}").write_bytes(generated_message(seed))
    print(f"seeded {len(messages)} corpus messages and 200 generated trees in {folder}")
    return str(folder)


def main() -> None:
    args = [arg for arg in sys.argv if not arg.startswith("-")] + [
        arg for arg in sys.argv if arg.startswith("-")
    ]
    if len(args) == 1 or all(a.startswith("-") for a in args[1:]):
        args.insert(1, seeds())
    atheris.Setup(args, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
