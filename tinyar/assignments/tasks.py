"""The assignments: students write pieces of tinyar themselves. The library is the answer key.

Assignment 1 ("loss", TASKS) is the loss; assignment 2 ("decoder", DECODER_TASKS) causal
attention, the pre-norm block and a KV-cache step; assignment 3 ("training", TRAINING_TASKS)
the optimizer step, the learning-rate schedule and gradient clipping.

Each student region in tinyar/ sits between `# BEGIN TASK <id>` and `# END TASK <id>`
inside a function. `make_tasks_file()` copies those functions (signature and docstring
kept) into one file and turns every region into `raise NotImplementedError("<id>: ...")`.
The committed copies live in lessons/assignment/tasks.py (regenerate: `python cli.py assign
--out lessons/assignment --force`), lessons/assignment_decoder/tasks.py and
lessons/assignment_training/tasks.py (regenerate: `python -c "from tinyar.assignments.tasks
import write; write('decoder'); write('training')"`).
"""
from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

LESSONS = Path(__file__).resolve().parents[2] / "lessons"
COMMITTED = LESSONS / "assignment" / "tasks.py"
BEGIN, END = re.compile(r"^(\s*)# BEGIN TASK (\w+)\s*$"), re.compile(r"^\s*# END TASK (\w+)\s*$")


@dataclass(frozen=True)
class Task:
    id: str                   # task name, pytest marker and the stub's message prefix
    module: str               # where the reference solution lives
    functions: tuple[str, ...]  # the functions the student writes for it
    points: int
    todo: str                 # what to do and which lesson explains it (the stub's message)
    assignment: str = "loss"
    uses: tuple[str, ...] = ()  # the student's functions of other tasks that this one calls


TASKS = (
    Task("shift", "tinyar.loss", ("shift",), 10,
         "return the inputs (B,T) and the next-token targets (B,T) of a (B,T+1) window (lesson 2, the shift)"),
    Task("mask_positions", "tinyar.loss", ("choose_mask_positions",), 15,
         "draw exactly num_masked(T, p) distinct positions per row, uniform over 1..T-1, rows independent, all from rng (lesson 6, masking)"),
    Task("replace", "tinyar.loss", ("replace_masked", "apply_mask"), 10,
         "put MASK into the masked inputs; targets stay; fcm returns the mask as hidden keys (lesson 6, masking)"),
    Task("fcm", "tinyar.model", ("mask_scores",), 15,
         "set scores to -inf where key j > query i or key j is hidden (lessons 4 and 6, attention and masking)"),
    Task("cross_entropy", "tinyar.loss", ("cross_entropy",), 15,
         "mean of -log softmax(logits)[tgt] over valid positions, stable at large logits (lesson 3, cross-entropy)"),
    Task("zloss", "tinyar.loss", ("attention_zloss",), 15,
         "sum the log-sum-exps over layers, then square, sum over heads, mean the rest (lesson 7, z-loss)"),
    Task("next_embed", "tinyar.loss", ("next_embed_loss",), 15,
         "mean squared / absolute error to the detached target (both kinds) over valid positions and dims (lesson 8, next-embed)"),
    Task("total", "tinyar.loss", ("total_loss",), 5,
         "ce plus each other component times its own weight; a weight of exactly 0 leaves it out (lesson 9, the training loop)"),
)
DECODER_TASKS = (
    Task("attention", "tinyar.assignments.decoder", ("causal_attention",), 35,
         "softmax(q k^T / sqrt(Dh)) v over the keys j <= i, and each row's log-sum-exp over those keys (lesson 4, attention)",
         "decoder"),
    Task("block", "tinyar.assignments.decoder", ("prenorm_block",), 30,
         "x + attention(norm(x)), then x + mlp(norm(x)): normalize the sublayers' inputs, never the residual (lesson 5, the decoder)",
         "decoder", uses=("causal_attention",)),
    Task("kv_cache", "tinyar.assignments.decoder", ("kv_cache_step",), 35,
         "write k, v into slot pos, then attend from q to slots 0..pos only (lesson 10, sampling)",
         "decoder"),
)
TRAINING_TASKS = (
    Task("schedule", "tinyar.train", ("lr_at",), 30,
         "linear warmup to cfg.lr over cfg.warmup steps, then cosine down to lr * min_lr_ratio (lesson 9, the training loop)",
         "training"),
    Task("clip", "tinyar.train", ("clip_grad_norm_",), 30,
         "scale every .grad by min(1, max_norm / (global L2 norm + 1e-6)); return the norm before (lesson 9)",
         "training"),
    Task("adamw", "tinyar.assignments.training", ("adamw_step",), 40,
         "Adam moments with bias correction, then a decoupled weight decay step (lesson 9, the training loop)",
         "training"),
)
ASSIGNMENTS = {"loss": TASKS, "decoder": DECODER_TASKS, "training": TRAINING_TASKS}
BY_ID = {t.id: t for tasks in ASSIGNMENTS.values() for t in tasks}
MAX_POINTS = sum(t.points for t in TASKS)

HEADER = '''"""tinyar assignment 1: the pieces of an autoregressive language model's loss.

Written by `python cli.py assign` from the reference solutions in tinyar/. Replace every
`raise NotImplementedError(...)` with your code; keep the names and signatures. Your
functions get tinygrad Tensors and return Tensors (choose_mask_positions: numpy arrays).
The docstrings are the specification, lessons/README.md the explanations.

Grade yourself from the repository root (each task runs on its own, with a time limit):
    python cli.py grade path/to/tasks.py                 # every task: a table of points
    python cli.py grade path/to/tasks.py --task shift    # one task
    TINYAR_SUBMISSION=path/to/tasks.py python -m pytest tests/test_assign_tasks.py -m shift
"""
from __future__ import annotations

import math

import numpy as np
from tinygrad import Tensor, dtypes

from tinyar.data import MASK, PAD
from tinyar.loss import num_masked
'''

TRAINING_HEADER = '''"""tinyar assignment 3: the training loop's arithmetic.

Replace every `raise NotImplementedError(...)` with your code; keep the names and
signatures. lr_at works on plain floats; clip_grad_norm_ and adamw_step on tinygrad
Tensors. The docstrings are the specification, lessons/ASSIGNMENTS.md the contracts.

Grade yourself from the repository root (each task runs on its own, with a time limit):
    python cli.py grade path/to/tasks.py                 # every task: a table of points
    python cli.py grade path/to/tasks.py --task adamw    # one task
"""
from __future__ import annotations

import math

from tinygrad import Tensor

from tinyar.config import Config

ASSIGNMENT = "training"   # tells the grader which tasks this file answers
'''
DECODER_HEADER = '''"""tinyar assignment 2: the decoder's attention, its pre-norm block and the KV cache.

Replace every `raise NotImplementedError(...)` with your code; keep the names and
signatures. Your functions get tinygrad Tensors (and plain ints) and return Tensors. The
docstrings are the specification, lessons/ASSIGNMENTS.md the contracts. prenorm_block calls
your causal_attention.

Grade yourself from the repository root (each task runs on its own, with a time limit):
    python cli.py grade path/to/tasks.py                     # every task: a table of points
    python cli.py grade path/to/tasks.py --task kv_cache     # one task
"""
from __future__ import annotations

import math

from tinygrad import Tensor, dtypes

ASSIGNMENT = "decoder"   # tells the grader which tasks this file answers
'''
HEADERS = {"loss": HEADER, "decoder": DECODER_HEADER, "training": TRAINING_HEADER}
FILES = {"loss": COMMITTED, "decoder": LESSONS / "assignment_decoder" / "tasks.py",
         "training": LESSONS / "assignment_training" / "tasks.py"}


class TaskMarkerError(ValueError):
    """The BEGIN/END TASK markers in the library are malformed."""


def function_source(module: str, name: str) -> str:
    """The source of one top-level function of a tinyar module, decorators included."""
    path = Path(importlib.import_module(module).__file__)
    text = path.read_text()
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            lines, start = text.splitlines(), min([node.lineno] + [d.lineno for d in node.decorator_list])
            end = node.end_lineno           # the AST ends at the last statement: take the
            while end < len(lines) and lines[end].strip().startswith("#") and \
                    len(lines[end]) - len(lines[end].lstrip()) > node.col_offset:  # comments after it too
                end += 1
            return "\n".join(lines[start - 1:end]) + "\n"
    raise TaskMarkerError(f"{path} has no top-level function {name}")


def stub_function(src: str, task: Task, solution: bool = False) -> str:
    """One function with its task region replaced by the NotImplementedError stub
    (solution=True: the reference body kept, only the marker lines dropped)."""
    out, inside = [], False
    for line in src.splitlines():
        if m := BEGIN.match(line):
            if inside or m.group(2) != task.id:
                raise TaskMarkerError(f"unexpected '# BEGIN TASK {m.group(2)}' in the source of task {task.id}")
            inside = True
            if not solution:
                out.append(f'{m.group(1)}raise NotImplementedError("{task.id}: {task.todo}")')
        elif m := END.match(line):
            if not inside or m.group(1) != task.id:
                raise TaskMarkerError(f"unexpected '# END TASK {m.group(1)}' in the source of task {task.id}")
            inside = False
        elif solution or not inside:
            out.append(line)
    if inside:
        raise TaskMarkerError(f"'# BEGIN TASK {task.id}' has no '# END TASK {task.id}'")
    if len(out) == len(src.splitlines()):
        raise TaskMarkerError(f"no '# BEGIN TASK {task.id}' region in {task.module}: {src.split('(')[0]}")
    return "\n".join(out) + "\n"


def make_tasks_file(solution: bool = False, assignment: str = "loss") -> str:
    """The student's file (every region stubbed), or with solution=True the answer key."""
    parts = [HEADERS[assignment]]
    for task in ASSIGNMENTS[assignment]:
        title = f"# ── task {task.id}: {task.points} points "
        parts.append(f"\n\n{title}{'─' * (88 - len(title))}\n")
        parts.append("\n\n".join(stub_function(function_source(task.module, name), task, solution)
                                  for name in task.functions))
    return "".join(parts)


def write(assignment: str, solution: bool = False) -> Path:
    """Regenerate the committed stub file of an assignment."""
    FILES[assignment].parent.mkdir(exist_ok=True)
    FILES[assignment].write_text(make_tasks_file(solution, assignment))
    return FILES[assignment]


def reference_functions() -> dict[str, object]:
    """Every graded function, taken from the library itself."""
    return {name: getattr(importlib.import_module(t.module), name) for t in BY_ID.values() for name in t.functions}


def assignment_of(path: Path | None) -> str | None:
    """Which assignment a file answers, read without running it: its `ASSIGNMENT = "..."`
    line, else assignment 1. None (the reference) answers them all."""
    if path is None:
        return None
    try:
        for node in ast.parse(path.read_text(errors="replace")).body:
            if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["ASSIGNMENT"] \
                    and isinstance(node.value, ast.Constant) and node.value.value in ASSIGNMENTS:
                return node.value.value
    except (SyntaxError, ValueError, OSError):
        pass
    return "loss"


def library_regions() -> list[tuple[str, str]]:
    """(file, task id) of every BEGIN TASK marker in tinyar/, to check none is unregistered."""
    root = Path(__file__).resolve().parents[1]            # tinyar/
    return [(p.name, m.group(2)) for p in sorted(root.rglob("*.py")) if p.name != "tasks.py"
            for line in p.read_text().splitlines() if (m := BEGIN.match(line))]

