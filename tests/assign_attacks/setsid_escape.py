"""Attack: outlive grading. Starts a process in a new session (setsid) and a double-forked
daemon, both sleeping with a marker argument, then hangs. The time limit must stop them
all. Scores 0."""
import os
import subprocess
import time

MARKER = "7357.25"       # tests look for a `sleep 7357.25` left running
subprocess.Popen(["sleep", MARKER], start_new_session=True)
if os.fork() == 0:       # a classic daemon: fork, setsid, fork again
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", MARKER])
    os._exit(0)


def shift(tokens):
    while True:
        time.sleep(0.1)


def total_loss(ce, zloss, next_embed, zloss_weight, next_embed_weight):
    raise NotImplementedError
