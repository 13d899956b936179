"""Assignments: students write pieces of tinyar themselves; the library is the answer key.

    tasks.py    the tasks (regions marked `# BEGIN TASK` in the library) and the stub generator
    checks.py   the graded checks, against the numpy oracles in oracles.py
    grade.py    grading: the checks run in the grading process, the submission in a sandboxed child
"""
