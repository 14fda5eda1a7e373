"""`python kill_worker.py N <onereason args>`: runs the CLI and SIGKILLs its own process when
the training loop asks for its N-th batch: a real kill -9 mid-stage (no cleanup, no finally),
at a reproducible point. Used by test_pretrain.py."""

import os
import signal
import sys

import onereason.train.loop as loop
from onereason.cli import app

n, calls, real = int(sys.argv[1]), [0], loop.collate


def collate_then_die(*a, **k):
    calls[0] += 1
    if calls[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)


loop.collate = collate_then_die
app(sys.argv[2:])
