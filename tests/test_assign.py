"""Assignment 1 end to end, both directions: the committed stubs are current and keep every
signature; the reference scores full marks and the stubs score zero; each classic mistake
(tests/assign_bugs/) fails exactly its own task, with a line that names the mistake; and
grading survives submissions that hang, crash, exit, print a lot or don't even parse.

The per-task checks themselves run in tests/test_assign_tasks.py (tagged `pytest -m <task>`).
"""
import ast
import importlib
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tinyar.assignments.tasks import (ASSIGNMENTS, BY_ID, COMMITTED, FILES, MAX_POINTS, TASKS, assignment_of,
                                     library_regions, make_tasks_file, reference_functions)
from tinyar.assignments.grade import load_functions, run_task

ROOT = Path(__file__).resolve().parent.parent
BUGS = Path(__file__).resolve().parent / "assign_bugs"
# each buggy submission -> the one task it must fail, and words its reason must contain
BUG_TASK = {
    "shift_off_by_one.py": ("shift", "off by one"),
    "mask_position_zero.py": ("mask_positions", "position 0 was masked"),
    "replace_masks_targets.py": ("replace", "targets were masked instead of the inputs"),
    "fcm_hides_queries.py": ("fcm", "hidden as queries"),
    "ce_counts_pad.py": ("cross_entropy", "PAD targets were counted"),
    "ce_unstable_softmax.py": ("cross_entropy", "1000x logits"),
    "zloss_squared_per_layer.py": ("zloss", "squared before summing over layers"),
    "next_embed_not_detached.py": ("next_embed", "detach"),
    "total_swapped_weights.py": ("total", "weights are swapped"),
    # the distribution of the mask, not just its count and range
    "mask_contiguous_span.py": ("mask_positions", "contiguous span"),
    "mask_cyclic_shift.py": ("mask_positions", "rows are not independent"),
    "mask_rng_copied.py": ("mask_positions", "same rng"),
    # the weights: negative, tiny, and 0 with a nan/inf component
    "total_drops_negative.py": ("total", "negative weight"),
    "total_drops_tiny.py": ("total", "tiny weight"),
    "total_zero_weight_nan.py": ("total", "weight is 0 leaked"),
    "next_embed_l1_not_detached.py": ("next_embed", "detach"),
    # assignment 3, the training loop
    "schedule_warmup_off_by_one.py": ("schedule", "warmup is off by one"),
    "clip_per_parameter.py": ("clip", "clipped on its own norm"),
    "adamw_l2_not_decoupled.py": ("adamw", "weight decay went into the gradient"),
    "adamw_no_bias_correction.py": ("adamw", "no bias correction"),
    # assignment 2, the decoder
    "attention_scale_1_over_d.py": ("attention", "scaled by 1/Dh"),
    "attention_lse_before_mask.py": ("attention", "before the causal mask"),
    "attention_lse_detached.py": ("attention", "no gradient flows through lse"),
    "block_post_norm.py": ("block", "post-norm"),
    "kv_slot_not_written.py": ("kv_cache", "not written"),
    "kv_attends_stale_slots.py": ("kv_cache", "stale slots after pos were attended"),
}
RIGHT = Path(__file__).resolve().parent / "assign_right"   # right answers written unlike the reference


# a time limit no task that ends reaches, even on a slow or busy machine: grading verdicts must not
# depend on the machine's load (the limit itself is tested with a task that never ends)
GENEROUS = "1200"


def cli(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    if args[0] == "grade" and "--timeout" not in args:
        args = (*args, "--timeout", GENEROUS)
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=3600)


def name(submission: str) -> str:
    """A student's name: the file's stem, or the folder's name for a folder/tasks.py."""
    p = Path(submission)
    return p.parent.name if p.name == "tasks.py" else p.stem


# ── the stubs ────────────────────────────────────────────────────────────────────────────

def test_committed_stubs_are_up_to_date():
    assert COMMITTED.read_text() == make_tasks_file(), \
        "lessons/assignment/tasks.py is out of date: run python cli.py assign --out lessons/assignment --force"
    for which in ("decoder", "training"):
        assert FILES[which].read_text() == make_tasks_file(assignment=which), \
            f"lessons/assignment_{which}/tasks.py is out of date: run python -c \"from tinyar.assignments.tasks " \
            f"import write; write('{which}')\""
    assert {a: assignment_of(f) for a, f in FILES.items()} == {a: a for a in FILES}


def test_every_marked_region_is_a_registered_task_and_a_pytest_marker():
    want = sorted((Path(importlib.import_module(t.module).__file__).name, t.id) for t in BY_ID.values()
                  for _ in t.functions)
    assert sorted(library_regions()) == want    # one region per graded function, none unregistered
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert all(f'"{task}: ' in pyproject for task in BY_ID)   # registered, so `pytest -m <task>` is clean
    assert MAX_POINTS == 100


@pytest.mark.parametrize("assignment", list(ASSIGNMENTS))
def test_stubs_keep_signatures_and_docstrings_and_raise_with_the_task_id(assignment):
    stub, ref = load_functions(FILES[assignment]), reference_functions()
    for task in ASSIGNMENTS[assignment]:
        for name in task.functions:
            assert inspect.signature(stub[name]) == inspect.signature(ref[name]), name
            assert stub[name].__doc__ == ref[name].__doc__, name
            body = ast.parse(inspect.getsource(stub[name])).body[0].body
            raises = [s for s in body if isinstance(s, ast.Raise) and s.exc.func.id == "NotImplementedError"]
            assert len(raises) == 1 and raises[0].exc.args[0].value.startswith(f"{task.id}: "), name
            assert "lesson" in raises[0].exc.args[0].value
            # nothing of the reference body leaks: every stub line is a reference line or the raise
            ref_lines = set(inspect.getsource(ref[name]).splitlines())
            extra = [l for l in inspect.getsource(stub[name]).splitlines() if l not in ref_lines]
            assert len(extra) == 1 and "NotImplementedError" in extra[0], (name, extra)
            assert len(inspect.getsource(stub[name])) < len(inspect.getsource(ref[name])) + 150


# ── each classic mistake fails exactly its task (in this process: the reference's kernels are cached) ──

def test_every_bug_file_is_listed():
    assert sorted(p.name for p in BUGS.glob("*.py")) == sorted(BUG_TASK)


@pytest.mark.slow
def test_reference_passes_every_task_with_other_random_shapes():
    results = {t: run_task(t, None, seed=1) for t in BY_ID}   # seed 0 runs in test_assign_tasks.py
    assert all(r["status"] == "passed" for r in results.values()), results


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])   # 1: new shapes, new kernels
def test_right_answers_written_differently_pass_every_task(seed):
    """Loops, rng.choice, a -1e30 fill, an all-False key mask in replace mode, '!= 0' weights;
    attention per head in float64, a hand-written LayerNorm, a cache written by concatenation."""
    assert sorted(assignment_of(p) for p in RIGHT.glob("*.py")) == ["decoder", "loss"]
    for sub in sorted(RIGHT.glob("*.py")):
        results = {t.id: run_task(t.id, sub, seed) for t in ASSIGNMENTS[assignment_of(sub)]}
        assert all(r["status"] == "passed" for r in results.values()), (sub.name, results)


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])   # 1: new shapes, new kernels
@pytest.mark.parametrize("name", sorted(BUG_TASK))
def test_classic_mistake_fails_exactly_its_task(name, seed):
    task, words = BUG_TASK[name]
    results = {t.id: run_task(t.id, BUGS / name, seed) for t in ASSIGNMENTS[assignment_of(BUGS / name)]}
    assert {k for k, r in results.items() if r["status"] != "passed"} == {task}, results
    assert results[task]["status"] == "failed" and words in results[task]["reason"], results[task]


# ── the grade command, as an instructor runs it ──────────────────────────────────────────

@pytest.mark.slow
def test_grade_a_folder_reference_full_marks_stubs_zero_bug_fails_its_task(tmp_path):
    """One run over a class folder: the answer key, an untouched stub and the off-by-one shift."""
    (tmp_path / "answer_key").mkdir()
    (tmp_path / "answer_key" / "tasks.py").write_text(make_tasks_file(solution=True))
    shutil.copy(COMMITTED, tmp_path / "untouched_stub.py")
    shutil.copy(BUGS / "shift_off_by_one.py", tmp_path / "off_by_one.py")
    shutil.copy(FILES["training"], tmp_path / "training_stub.py")    # assignment 3: graded on its own tasks
    r = cli("grade", str(tmp_path), "--json", "--jobs", "2")
    assert r.returncode == 1, r.stderr
    subs = {name(s["submission"]): s for s in json.loads(r.stdout)}
    assert set(subs) == {"answer_key", "untouched_stub", "off_by_one", "training_stub"}
    training = subs["training_stub"]
    assert [t["task"] for t in training["tasks"]] == [t.id for t in ASSIGNMENTS["training"]]
    assert training["score"] == 0 and training["max_score"] == 100
    assert {t["status"] for t in training["tasks"]} == {"not implemented"}
    key, stub, bug = subs["answer_key"], subs["untouched_stub"], subs["off_by_one"]
    assert key["score"] == key["max_score"] == 100 and {t["status"] for t in key["tasks"]} == {"passed"}
    assert stub["score"] == 0 and {t["status"] for t in stub["tasks"]} == {"not implemented"}
    assert [t["task"] for t in bug["tasks"] if t["status"] != "passed"] == ["shift"] and bug["score"] == 90
    assert [t["task"] for t in key["tasks"]] == [t.id for t in TASKS]


@pytest.mark.slow
def test_grade_prints_a_table_with_the_reason_and_exits_nonzero():
    r = cli("grade", str(BUGS / "total_swapped_weights.py"), "--task", "total")
    assert r.returncode == 1, r.stderr
    assert "failed" in r.stdout and "0/5" in r.stdout and "swapped" in r.stdout and "score 0/5" in r.stdout
    r = cli("grade", "--reference", "--task", "total", "--seed", "5", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tasks"][0]["status"] == "passed"


def snapshot(*folders: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for f in folders for p in f.rglob("*")}


EVIL = '''
import os, signal, sys, time
from tinyar.loss import choose_mask_positions as reference_choose

def shift(tokens):                      # hangs, with a child process of its own
    import subprocess
    subprocess.Popen(["sleep", os.environ["EVIL_MARKER"]])
    while True:
        time.sleep(0.1)

CHATTY = [True]

def choose_mask_positions(rng, B, T, p):   # right, but prints ~6 MB (on its first call) and writes a file
    if CHATTY.pop() if CHATTY else False:
        for _ in range(20000):
            print("chatter " * 40); print("chatter", file=sys.stderr)
        open("written_by_submission.txt", "w").write("where does this land?")
    return reference_choose(rng, B, T, p)

def replace_masked(inp, mask):          # crashes the interpreter
    os.kill(os.getpid(), signal.SIGSEGV)

def apply_mask(inp, tgt, mask, mode):
    return replace_masked(inp, mask), tgt, None

def cross_entropy(logits, tgt, valid):  # leaves without a word
    os._exit(3)

def total_loss(ce, zloss, next_embed, zloss_weight, next_embed_weight):
    raise RuntimeError("boom")
'''


def running(marker: str) -> list[str]:
    """Live processes whose command line holds marker (a unique `sleep` argument)."""
    found = []
    for p in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (p / "cmdline").read_text().replace("\0", " ") and \
                    (p / "stat").read_text().split(")")[1].split()[0] != "Z":
                found.append(p.name)
        except OSError:
            pass
    return found


def gone(marker: str, deadline: float = 300) -> bool:
    """Whether every process holding marker ends within deadline seconds: SIGKILL takes effect
    when a process is next scheduled, which a busy machine can delay. One that was never
    killed keeps sleeping (hours) and fails this; it is killed here then."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if not running(marker):
            return True
        time.sleep(0.1)
    for pid in running(marker):
        os.kill(int(pid), signal.SIGKILL)
    return False


@pytest.mark.slow
def test_grading_survives_hangs_crashes_exits_chatter_and_syntax_errors(tmp_path):
    folder, marker = tmp_path / "class", f"{7000 + os.getpid() % 1000}.{time.time_ns() % 10**6}"
    folder.mkdir()
    (folder / "evil.py").write_text(EVIL)
    (folder / "broken.py").write_text("def shift(tokens):\n    return (\n")
    before = snapshot(ROOT / "tinyar", ROOT / "lessons")
    tasks = [a for t in ("shift", "mask_positions", "replace", "cross_entropy", "total") for a in ("--task", t)]
    # the hung task must meet the limit, and no other task may meet it: a short limit keeps this
    # quick, a longer one is tried only where the machine is too busy for it
    for limit in ("60", "240"):
        r = cli("grade", str(folder), *tasks, "--timeout", limit, "--jobs", "2", "--json", env={"EVIL_MARKER": marker})
        assert r.returncode == 1, r.stderr
        subs = {name(s["submission"]): {t["task"]: t for t in s["tasks"]} for s in json.loads(r.stdout)}
        others = [t for n, s in subs.items() for k, t in s.items() if (n, k) != ("evil", "shift")]
        if not any("time limit" in t["reason"] for t in others):
            break
    assert "chatter" not in r.stdout + r.stderr and len(r.stdout) < 20_000
    evil, broken = subs["evil"], subs["broken"]
    assert evil["shift"]["status"] == "failed" and f"{limit} s time limit" in evil["shift"]["reason"]
    assert "--timeout" in evil["shift"]["reason"]           # and how to raise it on a slow machine
    assert gone(marker)                                     # the hung task's own child was stopped too
    assert evil["mask_positions"]["status"] == "passed"
    assert evil["replace"]["status"] == "failed" and "SIGSEGV" in evil["replace"]["reason"]
    assert evil["cross_entropy"]["status"] == "failed" and "exited with code 3" in evil["cross_entropy"]["reason"]
    assert evil["total"]["reason"].startswith("RuntimeError: boom (evil.py line")
    assert all(t["status"] == "failed" and "does not load: SyntaxError" in t["reason"] for t in broken.values())
    # nothing written into the library, next to the submissions or in the repository
    assert snapshot(ROOT / "tinyar", ROOT / "lessons") == before
    assert sorted(p.name for p in folder.iterdir()) == ["broken.py", "evil.py"]
    assert not (ROOT / "written_by_submission.txt").exists()


@pytest.mark.slow
def test_ctrl_c_stops_grading_and_every_process_it_started(tmp_path):
    (tmp_path / "evil.py").write_text(EVIL)
    marker = f"{8000 + os.getpid() % 1000}.{time.time_ns() % 10**6}"
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "grade", str(tmp_path / "evil.py"), "--task", "shift",
                             "--timeout", GENEROUS], cwd=ROOT, env={**os.environ, "EVIL_MARKER": marker},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 1200
    while not running(marker) and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.1)                           # until the hung task has started its own child
    assert running(marker), f"the hung task never started its child: {proc.poll()=}"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "Traceback" not in err
    assert gone(marker)


ATTACKS = Path(__file__).resolve().parent / "assign_attacks"


@pytest.mark.slow
def test_attacks_score_zero_and_are_contained(tmp_path):
    """tests/assign_attacks/: forging a verdict, writing into the library, setsid children
    that outlive grading, a memory hog. Each scores 0; the library is unchanged; nothing is
    left running (setsid children need the sandbox: Linux, root, unshare)."""
    from tinyar.assignments.grade import sandbox_works
    contents = lambda: {p: p.read_bytes() for f in ("tinyar", "lessons") for p in (ROOT / f).rglob("*") if p.is_file()}
    before, attacks = contents(), tmp_path / "attacks"
    shutil.copytree(ATTACKS, attacks)
    if not sandbox_works():     # without the sandbox it would really write into this checkout
        (attacks / "write_library.py").unlink()
    r = cli("grade", str(attacks), "--task", "shift", "--task", "total", "--timeout", "120", "--jobs", "2", "--json")
    assert r.returncode == 1, r.stderr
    subs = {name(s["submission"]): {t["task"]: t for t in s["tasks"]} | {"score": s["score"]} for s in json.loads(r.stdout)}
    assert set(subs) == {p.stem for p in attacks.glob("*.py")}
    assert all(s["score"] == 0 for s in subs.values()), subs
    forged = subs["forge_verdict"]["shift"]["reason"]     # its fake answers are garbage, or it is gone
    assert "grading channel" in forged or "exited with code 0" in forged, forged
    assert "MemoryError" in subs["memory_hog"]["shift"]["reason"] and "MemoryError" in subs["memory_hog"]["total"]["reason"]
    assert "time limit" in subs["setsid_escape"]["shift"]["reason"]
    assert contents() == before                                    # nothing written into the library
    assert not list((ROOT / "tinyar").glob("pwned*"))
    if sandbox_works():
        assert not running("7357.25")
        assert subs["write_library"]["shift"]["status"] == "not implemented"
    else:
        for pid in running("7357.25"):             # clean up what an unsandboxed run could not stop
            os.kill(int(pid), signal.SIGKILL)


def test_a_changed_library_scores_zero_without_the_sandbox(tmp_path, monkeypatch):
    """Without the sandbox a submission could write into the library: it scores 0, and the
    change is reported, not undone (it might be someone's edit)."""
    import tinyar.assignments.grade as grade_mod
    lib = tmp_path / "lib"
    (lib / "tinyar").mkdir(parents=True)
    (lib / "tinyar" / "x.py").write_text("A = 1\n")
    monkeypatch.setattr(grade_mod, "LIBRARY_ROOT", lib)
    monkeypatch.setattr(grade_mod, "sandbox_works", lambda: False)
    sub = tmp_path / "sub.py"
    sub.write_text(f"open({str(lib / 'tinyar' / 'x.py')!r}, 'a').write('B = 2\\n')\n"
                   "def total_loss(ce, zloss, next_embed, zloss_weight, next_embed_weight):\n"
                   "    return ce if zloss_weight == 0 else ce + zloss_weight * zloss\n")
    monkeypatch.setattr(grade_mod, "LIBRARY_ROOT", lib)
    (r,) = grade_mod.grade_submission(sub, ["total"], 60.0, 0)
    assert r["status"] == "failed" and r["points"] == 0 and "the library changed" in r["reason"] and "x.py" in r["reason"]
    assert (lib / "tinyar" / "x.py").read_text() == "A = 1\nB = 2\n"


def test_adamw_answer_key_matches_the_trainers_optimizer():
    """tinyar.assignments.training.adamw_step (the key) against tinygrad's AdamW as the
    trainer builds it (b1 0.9, b2 0.95, decoupled weight decay), over three steps."""
    import numpy as np
    from tinygrad import Tensor
    from tinygrad.helpers import Context
    from tinygrad.nn.optim import AdamW
    from tinyar.assignments.training import adamw_step
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((3, 4)).astype(np.float32)
    w = Tensor(p0.copy()).is_param_()
    opt = AdamW([w], lr=0.05, b1=0.9, b2=0.95, weight_decay=0.1)
    p, m, v = Tensor(p0.copy()), Tensor.zeros(3, 4), Tensor.zeros(3, 4)
    for step in (1, 2, 3):
        g = rng.standard_normal((3, 4)).astype(np.float32)
        with Context(TRAINING=1):
            opt.zero_grad()
            (w * Tensor(g)).sum().backward()
            opt.step()
        p, m, v = adamw_step(p, Tensor(g), m, v, step, 0.05, 0.9, 0.95, 1e-8, 0.1)
        assert np.allclose(w.numpy(), p.numpy(), rtol=1e-5, atol=1e-6), step


def test_a_class_gets_the_references_kernels_generated_once():
    """warm_kernels runs the library's answers in a process of their own and hands every
    child its kernels (read-only files); a child loads them before the submission."""
    import pickle
    from tinyar.assignments.child import warm_kernels
    warm = warm_kernels(["total"], 0, 600)
    kernels, compiled = Path(warm["TINYAR_GRADE_KERNELS"]), Path(warm["TINYAR_GRADE_CACHE"])
    data = pickle.loads(kernels.read_bytes())
    assert data["programs"] and data["schedules"] and compiled.stat().st_size > 0
    assert not kernels.stat().st_mode & 0o222 and not compiled.stat().st_mode & 0o222


def test_decoder_answer_key_matches_the_model():
    """tinyar.assignments.decoder (the key) against the trainer's code on the same weights:
    causal_attention = model.attend, prenorm_block = model.Block (TINY's shape), and the
    KV-cache steps, token by token, = causal_attention over the whole text."""
    import numpy as np
    from tinygrad import Tensor
    from conftest import TINY
    from tinyar.assignments.decoder import causal_attention, kv_cache_step, prenorm_block
    from tinyar.model import Block, attend
    rng = np.random.default_rng(0)
    B, H, T, Dh = 2, TINY.heads, TINY.seq_len, TINY.head_dim
    q, k, v = (rng.standard_normal((B, H, T, Dh)).astype(np.float32) for _ in range(3))
    out, lse = causal_attention(Tensor(q), Tensor(k), Tensor(v))
    want_out, want_lse, _ = attend(Tensor(q), Tensor(k), Tensor(v))
    assert np.allclose(out.numpy(), want_out.numpy(), atol=1e-5) and np.allclose(lse.numpy(), want_lse.numpy(), atol=1e-5)

    block = Block(TINY, rng)
    for w in (block.attn_norm.weight, block.ff_norm.weight, block.ff.fc1.bias, block.ff.fc2.bias):
        w.assign(Tensor(rng.standard_normal(w.shape).astype(np.float32))).realize()   # not the 1s and 0s
    x = Tensor(rng.standard_normal((B, T, TINY.dim)).astype(np.float32))
    y, block_lse = prenorm_block(x, H, block.attn_norm.weight, block.attn.to_q.weight, block.attn.to_k.weight,
                           block.attn.to_v.weight, block.attn.to_out.weight, block.ff_norm.weight,
                           block.ff.fc1.weight, block.ff.fc1.bias, block.ff.fc2.weight, block.ff.fc2.bias)
    want_y, want_block_lse = block(x)
    assert np.allclose(y.numpy(), want_y.numpy(), atol=1e-5)
    assert np.allclose(block_lse.numpy(), want_block_lse.numpy(), atol=1e-5)

    ck, cv = (Tensor(rng.standard_normal((B, H, T, Dh)).astype(np.float32) + 3) for _ in range(2))   # stale
    for pos in range(T):
        at = lambda a: Tensor(np.ascontiguousarray(a[:, :, pos:pos + 1]))
        o, l, ck, cv = kv_cache_step(at(q), at(k), at(v), ck, cv, pos)
        assert np.allclose(o.numpy()[:, :, 0], want_out.numpy()[:, :, pos], atol=1e-5), pos
        assert np.allclose(l.numpy()[:, :, 0], want_lse.numpy()[:, :, pos], atol=1e-5), pos
    assert np.allclose(ck.numpy(), k) and np.allclose(cv.numpy(), v)


@pytest.mark.slow
def test_pytest_marker_selects_one_task_and_runs_it_on_a_submission():
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_assign_tasks.py"]
    r = subprocess.run(base + ["-m", "zloss", "--collect-only"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and f"1/{len(BY_ID)} tests collected" in r.stdout, r.stdout
    r = subprocess.run(base + ["-m", "total"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "TINYAR_SUBMISSION": str(COMMITTED)})
    assert r.returncode == 1 and "NotImplementedError: total:" in r.stdout, r.stdout


# ── bad input: one line, exit 2 ──────────────────────────────────────────────────────────

def test_assign_writes_a_workspace_and_never_overwrites_work(tmp_path):
    r = cli("assign", "--out", str(tmp_path / "hw1"))
    assert r.returncode == 0 and (tmp_path / "hw1" / "tasks.py").read_text() == make_tasks_file()
    (tmp_path / "hw1" / "tasks.py").write_text("# my work")
    r = cli("assign", "--out", str(tmp_path / "hw1"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--force" in r.stderr
    assert (tmp_path / "hw1" / "tasks.py").read_text() == "# my work"
    r = cli("assign", "--out", str(tmp_path / "key"), "--solution")
    assert r.returncode == 0 and (tmp_path / "key" / "tasks.py").read_text() == make_tasks_file(solution=True)


@pytest.mark.parametrize("which", ["decoder", "training"])
def test_assign_writes_the_other_assignments_as_committed(tmp_path, which):
    r = cli("assign", "--assignment", which, "--out", str(tmp_path / which))
    assert r.returncode == 0 and which in r.stdout
    written = (tmp_path / which / "tasks.py").read_text()
    assert written == make_tasks_file(False, which) == FILES[which].read_text()   # what the lessons folder holds
    assert f'ASSIGNMENT = "{which}"' in written                                     # graded as that assignment


@pytest.mark.parametrize("args, words", [
    (["missing.py"], "does not exist"),
    (["pyproject.toml"], "not a Python file"),
    (["--reference", "--task", "softmax"], "no task 'softmax'"),
    (["tests/assign_bugs", "--timeout", "0"], "--timeout"),
])
def test_grade_bad_input_is_one_line(args, words):
    r = cli("grade", *args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and words in r.stderr and "Traceback" not in r.stderr


def test_grade_empty_folder_and_default_path(tmp_path):
    r = cli("grade", str(tmp_path))
    assert r.returncode == 2 and "no submissions" in r.stderr
    r = cli("grade", cwd=tmp_path)   # no PATH: ./tasks.py
    assert r.returncode == 2 and "tasks.py does not exist" in r.stderr
