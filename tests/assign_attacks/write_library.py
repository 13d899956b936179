"""Attack: change the grader for every later student. Appends to the library's files and
adds one (with Python and with a shell command), and disables the checks in its own
process. Its functions are not written. Must score 0, and the library must be unchanged."""
import subprocess
from pathlib import Path

import tinyar
import tinyar.assignments.checks as checks

LIB = Path(tinyar.__file__).resolve().parent
for target in [LIB / "assignments" / "checks.py", LIB / "loss.py"]:
    try:
        with open(target, "a") as f:
            f.write("\nCHECKS = {k: (lambda fns, rng: None) for k in CHECKS}  # pwned\n")
    except OSError:
        pass
try:
    (LIB / "pwned.py").write_text("PWNED = True\n")
except OSError:
    pass
subprocess.run(["sh", "-c", f"echo '# pwned' >> {LIB}/data.py; touch {LIB}/pwned_by_shell.py"],
               capture_output=True)
checks.CHECKS = {k: (lambda fns, rng: None) for k in checks.CHECKS}   # no-op checks, here at least


def shift(tokens):
    raise NotImplementedError


def total_loss(ce, zloss, next_embed, zloss_weight, next_embed_weight):
    raise NotImplementedError
