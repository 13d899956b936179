"""Attack: claim a pass instead of earning it. Writes "passed" wherever a result might be
read (the old grader's result file, files in its folder, every open file descriptor), then
leaves before any check runs. Must score 0."""
import json
import os
import sys
from pathlib import Path

FORGED = json.dumps({"status": "passed", "reason": ""})
for arg in sys.argv[1:]:
    if arg.endswith(".json"):
        Path(arg).write_text(FORGED)
for name in ("result.json", "../result.json"):
    try:
        Path(name).write_text(FORGED)
    except OSError:
        pass
fake = {"ready": ["shift", "total_loss"]}, {"out": {"kind": "tensor"}}, {"status": "passed"}
for fd in range(3, 64):
    for msg in fake:
        try:
            os.write(fd, (json.dumps(msg) + "\n").encode())
        except OSError:
            pass
os._exit(0)


def shift(tokens):
    raise NotImplementedError


def total_loss(ce, zloss, next_embed, zloss_weight, next_embed_weight):
    raise NotImplementedError
