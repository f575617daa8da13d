"""Run a command as a child subreaper, the way a proper init would, for the local chaos tests.

    python tests/reaper.py LOGFILE -- CMD [ARGS...]

Prints the command's pid, then ``exit <code>`` when it exits (a negative code is the signal),
and keeps reaping every orphan it adopts until its stdin is closed and no child is left.
Processes a killed runner leaves behind are re-parented here instead of to pid 1 (which, in
some containers, never reaps), so a test inspecting /proc sees real leftovers, not zombies.
"""

from __future__ import annotations

import ctypes
import os
import select
import sys
import time


def main() -> int:
    log, sep, *cmd = sys.argv[1:]
    assert sep == "--" and cmd, __doc__
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    actions = [(os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2), (os.POSIX_SPAWN_CLOSE, fd)]
    pid = os.posix_spawnp(cmd[0], cmd, os.environ, file_actions=actions)
    os.close(fd)
    print(pid, flush=True)
    stdin_open, code = True, None
    while True:
        try:
            got, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            if not stdin_open:
                return 0
            got, status = 0, 0
        if got == pid:
            code = os.waitstatus_to_exitcode(status)
            print(f"exit {code}", flush=True)
        if stdin_open and select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.readline():
            stdin_open = False
        if got == 0:
            time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
