"""Kernels for a class's grading, generated once from the library's own answers.

    python -m tinyar.assignments.warm FOLDER SEED TASK...

Runs each task's check on the reference solutions in this process (trusted code only: no
submission is loaded here) and leaves FOLDER/kernels.pkl (tinygrad's schedules and generated
code, tinyar.kernel_cache's format) and FOLDER/cache.db (its compiled programs). The grading
process hands both, read-only, to every submission's child: a submission that computes what
the reference computes gets those kernels without generating them again (about two thirds of
a child's time), and everything else is generated as before. Entries are keyed by tinygrad's
content hashes, so a cached kernel is only ever used for the same computation.
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(folder: str, seed: str, tasks: list[str]) -> None:
    from tinyar import kernel_cache
    from tinyar.assignments.grade import run_task
    for task in tasks:
        run_task(task, None, int(seed))     # (a failure here only means fewer cached kernels)
    kernel_cache.save(Path(folder) / "kernels.pkl")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
