"""The assignment's graded checks as pytest tests, one per task, tagged with the task id.

    python -m pytest tests/test_assign_tasks.py                    # the library's reference solutions
    TINYAR_SUBMISSION=hw1/tasks.py python -m pytest tests/test_assign_tasks.py -m zloss
    TINYAR_GRADE_SEED=3 ...                                        # other random shapes and values

These run in this process (quick, but a looping submission hangs pytest); `python cli.py
grade` runs the same checks with one process and a time limit per task.
"""
import os
from pathlib import Path

import pytest

from tinyar.assignments.tasks import ASSIGNMENTS, BY_ID, assignment_of
from tinyar.assignments.calls import local
from tinyar.assignments.checks import run_check
from tinyar.assignments.grade import load_functions

SUBMISSION = os.environ.get("TINYAR_SUBMISSION")   # a student's tasks.py; unset = the reference
SEED = int(os.environ.get("TINYAR_GRADE_SEED", "0"))
WHICH = assignment_of(Path(SUBMISSION)) if SUBMISSION else None   # the reference answers every assignment
TASKS = [t for a, ts in ASSIGNMENTS.items() if WHICH in (None, a) for t in ts]


@pytest.fixture(scope="module")
def functions() -> dict:
    return load_functions(Path(SUBMISSION).resolve() if SUBMISSION else None)


@pytest.mark.parametrize("task", [pytest.param(t.id, marks=getattr(pytest.mark, t.id)) for t in TASKS])
def test_task(task, functions):
    missing = [n for n in BY_ID[task].functions + BY_ID[task].uses if n not in functions]
    assert not missing, f"the submission defines no function {missing[0]}"
    run_check(task, local(functions), SEED)   # raises Failed with one line saying what is wrong
