"""A run folder, and training into it. `python cli.py train` and the lessons both use `Run`.

    RUN/ckpt-<step>.safetensors   weights, optimizer, config, step, data RNG (tinyar/checkpoint.py)
    RUN/metrics.jsonl             one JSON row per log step and per validation (train.train's rows)
    RUN/stdin.bin                 the corpus, when it was piped in (so a resume finds it again)

The folder itself is flock-ed by the one process writing it (lock_folder).

`Run.start_or_resume` applies the resume rules, `open` readies the folder, corpus and device,
`build` makes the Trainer (restored exactly when resuming), `train` runs it. Errors are
one-line exceptions (RunError, ConfigError, CorpusError, DeviceError); the CLI prints them.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Callable

from tinyar import checkpoint as ckpt
from tinyar.config import Config, flag
from tinyar.data import Corpus, copy_stream, default_corpus

METRICS, STDIN_COPY = "metrics.jsonl", "stdin.bin"
MODEL_SHAPE = ("dim", "depth", "heads", "dim_head", "seq_len", "vocab")  # fixed by the saved weights


class RunError(ValueError):
    """A run can't start or resume as asked. The message says why and what to do."""


class StopOnSignal:
    """SIGINT (Ctrl-C) and SIGTERM ask training to stop after the current step; a second signal
    gives up at once (KeyboardInterrupt). Call it to ask whether a stop was requested."""

    def __init__(self):
        self.signum = None
        self.unfinished = False  # the signal cut a step short (its update must not be saved)

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        # os.write, not print: a handler may interrupt a print that holds the stream's lock. To
        # Python's stderr, not fd 2: fd 2 may be a compiler log (tinyar/compiler_log.py)
        os.write(_stderr_fd(), f"\n{signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
                    f"(press Ctrl-C again to quit without saving)\n".encode())

    def __call__(self) -> bool:
        return self.signum is not None


def _stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return 2


def resume_config(saved: Config, given: dict) -> tuple[Config, list[str]]:
    """The run's saved config with the options given now; shape options can't change.
    -> (config, the changes as '--flag old -> new' lines)"""
    for field in MODEL_SHAPE:
        if field in given and given[field] != getattr(saved, field):
            raise RunError(f"{flag(field)} {given[field]} differs from the resumed run's {getattr(saved, field)}: a "
                           f"run keeps its model shape; drop {flag(field)}, or start a new run in another --out")
    cfg = saved.replace(**given)
    if cfg.use_next_embed != saved.use_next_embed:
        raise RunError("--next-embed can't be switched on or off when resuming (it adds or removes the next-embed "
                       "head); start a new run instead")
    changed = [f"{flag(k)} {getattr(saved, k)} -> {v}" for k, v in given.items() if getattr(saved, k) != v]
    return cfg, changed


HOST_DEVICES = ("CPU", "CL")   # memory is the machine's own (PoCL's CL runs on the CPU)


def available_memory() -> int | None:
    """Bytes of memory the machine can still give (Linux: MemAvailable), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(cfg: Config, device, available: int | None = None) -> None:
    """Refuse a model that can't fit before building it (numpy would try for minutes, then fail or
    be killed): on the machine's memory, training needs 16 bytes per parameter (float32 weights,
    gradients and AdamW's two moments) on each device; on a GPU the host still draws the weights."""
    from tinyar.model import param_count
    devices = device if isinstance(device, tuple) else (device or "CPU",)
    host = devices[0].split(":")[0] in HOST_DEVICES
    params, available = param_count(cfg), available_memory() if available is None else available
    need = params * (16 * len(devices) if host else 4)
    why = "16 bytes a parameter: weights, gradients, two AdamW moments" if host else "the weights, drawn on the host"
    if available is not None and need > available:
        raise RunError(f"a model of {params:,} parameters (--dim {cfg.dim}, --depth {cfg.depth}) needs at least "
                       f"{need / 2**30:,.1f} GiB of memory to train here ({why}), and {available / 2**30:,.1f} GiB "
                       f"is available: pick a smaller --dim or --depth")


def run_name(args: tuple[str, ...]) -> str:
    """The default run folder's name: the corpus file's stem, 'stdin' or 'default'."""
    if not args:
        return "default"
    if args[0] == "-":
        return "stdin"
    return "".join(c for c in Path(args[0]).stem if c.isalnum() or c in "._-") or "corpus"


_held: dict[Path, int] = {}   # folders this process holds the lock of -> the folder's open descriptor


def lock_folder(folder: Path) -> None:
    """Make this process the run folder's one writer for as long as it lives: an exclusive OS
    lock on the folder itself (flock; the OS drops it when the process ends, even by kill -9). A
    second writer (another `train`, or a `--resume` of a run still going) would interleave
    metrics.jsonl and overwrite checkpoints, so it is refused, naming the process that holds it."""
    try:
        import fcntl
    except ImportError:   # not POSIX: no lock (the README says so)
        return
    key = Path(folder).resolve()
    if key in _held:
        return
    fd = os.open(key, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RunError(f"{folder} is being written by {lock_holder(key)} (a train still running?); wait for it "
                       f"to finish or stop it (Ctrl-C saves a checkpoint), or pick another --out") from None
    _held[key] = fd


def lock_holder(path: Path) -> str:
    """'process PID' holding a flock on path, from Linux's /proc/locks, or 'another process'."""
    try:
        inode = f":{path.stat().st_ino} "
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "FLOCK" in fields and inode in line + " " and "->" not in fields:
                return f"process {fields[4]}"
    except (OSError, IndexError):
        pass
    return "another process"


def unlock_folder(folder: Path) -> None:
    """Let the folder go (the lock also ends with the process): Run.close()."""
    try:
        key = Path(folder).resolve()
    except (OSError, RuntimeError):   # a symbolic link loop: never locked
        return
    fd = _held.pop(key, None)
    if fd is not None:
        os.close(fd)


# temp files a writer leaves when it dies mid-write: checkpoint.write_atomic, copy_stream, trim_metrics,
# prepare_folder's probe; the number is the writer's pid
LEFTOVER = re.compile(rf"\.(?:{ckpt.PREFIX}\d+\.safetensors|{STDIN_COPY}|{METRICS})\.tmp(\d+)|\.write-test-(\d+)")


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete the temp files in `folder` whose writer is no longer running. -> the files deleted"""
    gone = []
    for path in sorted(Path(folder).iterdir()):
        m = LEFTOVER.fullmatch(path.name)
        if m and not alive(int(m.group(1) or m.group(2))):
            path.unlink(missing_ok=True)
            gone.append(path)
    return gone


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


def holds_run(folder: Path) -> bool:
    """True when the folder has checkpoints or logged rows, i.e. starting over there would lose work."""
    metrics = Path(folder) / METRICS
    return bool(ckpt.checkpoints(folder)) or (metrics.exists() and metrics.stat().st_size > 0)


def clear_run(folder: Path) -> None:
    """Delete tinyar's own files in the folder (for --force); anything else there is left alone."""
    for path in ckpt.checkpoints(folder) + [Path(folder) / METRICS]:
        path.unlink(missing_ok=True)


def trim_metrics(folder: Path, step: int) -> None:
    """Drop logged rows after `step` (logged after the checkpoint we resume from, or cut off
    mid-line by a crash), so a resumed run's metrics.jsonl reads like one uninterrupted run."""
    path = Path(folder) / METRICS
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            pass
    tmp = path.with_name(f".{METRICS}.tmp{os.getpid()}")
    try:
        tmp.write_text("".join(kept))
        os.replace(tmp, path)
    except OSError as e:
        raise RunError(f"cannot trim {path} to step {step} before resuming: {e.strerror or e}; it is unchanged "
                       f"(free some space, then resume again)") from None
    finally:
        tmp.unlink(missing_ok=True)


class Run:
    """One training run in `folder`: its Config, corpus arguments and, when resuming, the
    checkpoint it continues from (`path`, `arrays`, `meta`, and `changed` settings)."""

    def __init__(self, folder: Path, cfg: Config, corpus: tuple[str, ...] = (), keep: int = 3):
        cfg.validate()   # ConfigError first, then --keep, as the CLI has always checked them
        if keep < 1:
            raise RunError(f"--keep must be at least 1 (got {keep}): the newest checkpoint is what --resume "
                           f"continues from")
        self.folder, self.cfg, self.corpus, self.keep = Path(folder), cfg, tuple(corpus), keep
        self.path = self.arrays = self.meta = None   # the checkpoint resumed from
        self.changed: list[str] = []
        self.saved_step = None                       # the step of the newest checkpoint on disk
        self.device = None                           # tinygrad's default until open()
        self.init = self.init_from = None            # a fresh run's starting weights (train --init-from)
        self.left_fresh: list[str] = []              # weights init lacked, left at their initial values
        self.created: list[Path] = []                # folders open() made (removed again if it fails)
        self.leftovers: list[Path] = []              # temp files of a crashed writer, removed by open()

    @classmethod
    def start_or_resume(cls, given: dict, corpus: tuple[str, ...] = (), out: Path | None = None,
                        resume: Path | None = None, keep: int = 3) -> "Run":
        """A fresh run with the `given` Config fields, or (`resume`: a run folder) its newest
        checkpoint's config with `given` changed on top: only the model shape is fixed, and a
        resumed run remembers its corpus. Raises RunError, ConfigError."""
        if resume is None:
            return cls(out or Path("runs") / run_name(corpus), Config().replace(**given), corpus, keep)
        if problem := ckpt.folder_problem(resume, "--resume"):
            raise RunError(problem)
        if not resume.is_dir():
            raise RunError(f"--resume {resume} is not a run folder; pass the --out folder of an earlier run")
        if out is not None and out.resolve() != resume.resolve():
            raise RunError(f"--out {out} and --resume {resume} name different folders; a resumed run stays in its folder")
        path = ckpt.latest(resume)
        if path is None:
            raise RunError(f"no checkpoint in {resume}; start a new run without --resume")
        try:
            saved, arrays, meta = ckpt.load(path)
        except ckpt.CheckpointError as e:
            raise RunError(str(e)) from None    # it names the file and the one before it
        cfg, changed = resume_config(saved, given)
        cfg.validate()   # --steps -1 is wrong as such, before it is too few
        if cfg.steps <= meta["step"]:
            raise RunError(f"the run in {resume} is already at step {meta['step']} of {saved.steps}; pass --steps "
                           f"with a larger number to train further")
        run = cls(resume, cfg, corpus or tuple(meta.get("corpus", [])), keep)
        run.path, run.arrays, run.meta, run.changed = path, arrays, meta, changed
        return run

    def resume_if_same(self) -> bool:
        """Build the trainer from the folder's newest checkpoint if exactly this Config wrote it
        (the lessons' shared course model). False, and nothing kept, if there is none, it is
        damaged or foreign, or another Config wrote it."""
        path = ckpt.latest(self.folder)
        try:
            cfg, self.arrays, self.meta = ckpt.load(path) if path else (None, None, None)
            if cfg != self.cfg:
                raise RunError(f"{path} holds another config")
            self.path = path
            self.build()
            return True
        except (ckpt.CheckpointError, RunError):
            self.path = self.arrays = self.meta = None
            return False

    def open(self, force: bool = False, stdin=None, device: str | None = None) -> None:
        """Check the device and its dtype, then ready the folder (never starting over on a run
        unless `force`), then the corpus (`-` is copied from `stdin` into the folder).
        Sets files, data and device. Raises RunError, CorpusError, DeviceError, OSError."""
        from tinyar.devices import check_dtype, use_device
        # the device first: a missing GPU is the problem to report, not the folder's old run
        self.device = use_device(device)
        check_dtype(self.cfg.dtype, self.device)
        check_memory(self.cfg, self.device)
        self.prepare_folder(force)
        try:
            self.files = [str(copy_stream(stdin, self.folder / STDIN_COPY)) if a == "-" else a for a in self.corpus]
            self.data = (Corpus(self.files, self.cfg.seq_len) if self.files else
                         Corpus(default_corpus(), self.cfg.seq_len, name="python stdlib sources"))
        except BaseException:
            self.remove_created()   # a refused corpus leaves no empty run folder behind
            raise

    def remove_created(self) -> None:
        """Remove the folders prepare_folder created (and the stdin copy), if nothing else is in them."""
        if self.created:
            self.close()
            (self.folder / STDIN_COPY).unlink(missing_ok=True)
        for folder in self.created:   # the run folder first, then parents it had to make
            try:
                folder.rmdir()
            except OSError:
                break

    def close(self) -> None:
        """Stop being the folder's writer (the end of the process does the same)."""
        unlock_folder(self.folder)

    def prepare_folder(self, force: bool = False) -> None:
        """Refuse a folder that can't hold a run; never start over on top of a run unless force."""
        out = self.folder
        if out.exists() and not out.is_dir():
            raise RunError(f"--out {out} is a file, not a folder; pass a folder name (it is created if missing)")
        if problem := ckpt.folder_problem(out, "--out"):   # a symbolic link loop (exists() says False)
            raise RunError(problem)
        if self.path is None and out.is_dir() and holds_run(out) and not force:
            raise RunError(f"{out} already holds a run; continue it with --resume {out}, or pass --force to start "
                           f"over (deletes its checkpoints and metrics)")
        self.created = [p for p in (out, *out.parents) if not os.path.lexists(p)]
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            self.remove_created()
            raise RunError(f"cannot write to run folder {out}: {e.strerror}; pick another --out") from None
        lock_folder(out)   # before anything is written, trimmed or cleared
        self.leftovers = remove_leftovers(out)

    def build(self, force: bool = False):
        """The Trainer, restored from the resumed checkpoint (its later metrics rows dropped), or
        fresh (with `force`, the folder's old checkpoints and metrics deleted). -> Trainer"""
        from tinyar.train import Trainer
        try:
            self.trainer = Trainer(self.cfg, devices=self.device if isinstance(self.device, tuple) else None)
        except ValueError as e:
            raise RunError(str(e)) from None
        except MemoryError:
            raise RunError(f"out of memory building the model (--dim {self.cfg.dim}, --depth {self.cfg.depth}, "
                           f"--seq-len {self.cfg.seq_len}): pick a smaller one") from None
        if self.meta is not None:
            try:
                self.trainer.load_state(self.arrays, self.meta)
            except (ValueError, TypeError, KeyError) as e:
                raise RunError(f"{self.path}: {e}") from None
            trim_metrics(self.folder, self.trainer.step)
            self.saved_step = self.trainer.step
        else:
            if force:
                clear_run(self.folder)
            if self.init is not None:   # a Decoder, e.g. from x-transformers (tinyar/xt_io.py)
                from tinyar.xt_io import init_weights
                self.left_fresh = init_weights(self.trainer, self.init)
        return self.trainer

    def save(self) -> Path:
        """Checkpoint the trainer now (with the corpus, so a resume finds it); keep the newest `keep`."""
        t = self.trainer
        meta = t.state_meta() | {"corpus": [os.path.abspath(f) for f in self.files], "corpus_bytes": len(self.data)}
        if self.init_from is not None:
            meta["init_from"] = os.path.abspath(self.init_from)
        path = ckpt.save(self.folder, t.step, t.state_arrays(), meta, keep=self.keep)
        self.saved_step = t.step
        return path

    def train(self, on_row: Callable[[dict], None] | None = None, stop: StopOnSignal | None = None) -> None:
        """Train to cfg.steps: every row appended to metrics.jsonl, then handed to on_row; a
        checkpoint every save_every steps; generated kernels saved once each kind of step ran.
        After `stop` fires, the last finished step is saved (a step cut short is not).
        Raises train.Diverged on a NaN/inf (nothing after the last checkpoint is saved)."""
        from tinyar import kernel_cache
        from tinyar.train import Diverged, train
        with self.open_metrics() as metrics:
            try:
                cached = set()
                for row in train(self.trainer, self.data, on_checkpoint=lambda t: self.save(),
                                 should_stop=stop or (lambda: False)):
                    self.log(metrics, row)
                    if row["kind"] not in cached:   # the train (or eval) kernels now exist: keep them
                        cached.add(row["kind"])
                        kernel_cache.save()
                    if on_row:
                        on_row(row)
            except (Diverged, RunError):
                raise
            except Exception:
                if stop is None or not stop():
                    raise
                # e.g. Ctrl-C in a terminal also killed the compiler tinygrad was running: this step
                # never finished, and its half-applied update must not be saved
                stop.unfinished = True
        if stop is not None and stop() and not stop.unfinished and self.trainer.step not in (0, self.saved_step):
            self.save()

    def open_metrics(self):
        """metrics.jsonl for appending, unbuffered (so closing it has nothing left to write)."""
        try:
            return open(self.folder / METRICS, "ab", buffering=0)
        except OSError as e:
            raise self.write_error(e, self.trainer.step) from None

    def log(self, metrics, row: dict) -> None:
        """Append one row to metrics.jsonl; a full disk ends the run with a RunError (a torn last
        line is dropped when the run is resumed, trim_metrics)."""
        try:
            metrics.write((json.dumps(row) + "\n").encode())
        except OSError as e:
            raise self.write_error(e, row["step"]) from None

    def write_error(self, e: OSError, step: int) -> RunError:
        then = (f"the last checkpoint, {self.latest()}, is intact: free some space, then resume with --resume "
                f"{self.folder}" if self.saved_step is not None else
                "no checkpoint was saved yet: free some space, then start again with --force")
        return RunError(f"cannot write {self.folder / METRICS} at step {step}: {e.strerror or e}; {then}")

    def latest(self) -> Path | None:
        return ckpt.latest(self.folder)

    def last_good(self) -> Path | None:
        """The newest checkpoint known to be good: one this run saved, or the one it resumed from if
        its checksums held. Not a file from before checksums that no step has proven since (damaged
        optimizer moments would pass every check and still make the next step diverge)."""
        if self.saved_step is None:
            return None
        if self.path is not None and self.saved_step == self.meta["step"] and not ckpt.has_checksums(self.path):
            return None
        return self.latest()
