"""Exec a program that gets a signal when the process that started it dies (Linux).

    python -I -S _pdeathsig.py <parent pid> <signal number> <program> [args...]

tracker_ws_dev.processes.ManagedProcess starts every child through this, so that brokers,
Redis servers and workers do not outlive a dev stack or a test run killed with SIGKILL. The
setting survives the exec, so the program keeps this process's pid. Run by path with -I -S: no
site, no PYTHONPATH, nothing of the package is imported (it starts in a few milliseconds).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

PR_SET_PDEATHSIG = 1
EXIT_CANNOT_EXEC = 127


def main(argv: list[str]) -> int:
    parent, signum, program = int(argv[1]), int(argv[2]), argv[3:]
    # Without prctl (not Linux) the child is stopped by the parent's exit path only.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:
        return 1  # the parent died before the setting took effect: nobody to serve
    try:
        os.execvp(program[0], program)
    except OSError as exc:
        print(f"cannot start {program[0]!r}: {exc}", file=sys.stderr, flush=True)
    return EXIT_CANNOT_EXEC


if __name__ == "__main__":
    sys.exit(main(sys.argv))
