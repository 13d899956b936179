"""Every lesson runs from the repo root and every CHECK it prints holds.

Lessons end in `CHECK name = value   expect ...   ok|MISMATCH` lines (lessons/_common.py), so a
lesson whose stated expectation drifts from what the library does fails here."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted(p.name for p in (ROOT / "lessons").glob("[0-9][0-9]_*.py"))


def test_the_course_has_its_lessons():
    assert len(LESSONS) >= 9 and LESSONS[0].startswith("01_")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One folder for the course model, so the lessons that use it train it once."""
    return tmp_path_factory.mktemp("lesson-runs")


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_runs_and_its_checks_hold(name, runs):
    env = dict(os.environ, TINYAR_LESSON_RUNS=str(runs), PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, f"lessons/{name}"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=1200)
    checks = re.findall(r"^CHECK (\S+) = .*?(ok|MISMATCH)$", res.stdout, re.M)
    assert res.returncode == 0, f"{name} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    assert checks, f"{name} printed no CHECK line"
    assert all(status == "ok" for _, status in checks), checks
