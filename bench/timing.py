"""Timing whole commands with as little harness overhead as possible.

Each sample is one posix_spawn + waitpid, timed with perf_counter; every
contender in a table is measured by the same loop, interleaved round by
round, so machine noise hits them alike and the ratios stay meaningful.
"""

import os
import statistics
import time


def spawn_and_wait(argv, env, cwd=None, stdout=None):
    """Run argv to completion; return (seconds, exit status)."""
    file_actions = []
    if stdout is not None:
        file_actions.append((os.POSIX_SPAWN_DUP2, stdout, 1))
    here = None
    if cwd is not None:
        here = os.getcwd()
        os.chdir(cwd)
    try:
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, env, file_actions=file_actions)
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter() - start
    finally:
        if here is not None:
            os.chdir(here)
    return elapsed, os.waitstatus_to_exitcode(status)


class Sample:
    def __init__(self, name, seconds):
        self.name = name
        self.seconds = sorted(seconds)

    @property
    def median(self):
        return statistics.median(self.seconds)

    @property
    def p90(self):
        return self.seconds[int(0.9 * (len(self.seconds) - 1))]

    def ms(self):
        return f"{self.median * 1000:.1f}"


def compare(contenders, rounds, env, cwd=None, warmup=3, between=None):
    """contenders: list of (name, argv).  Returns [Sample] in the same order.

    between: a callable run (untimed) after every sample, e.g. to wait until
    a vault has locked again before the next unlock is timed."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        times = {name: [] for name, _ in contenders}
        for round_number in range(warmup + rounds):
            for name, argv in contenders:
                seconds, status = spawn_and_wait(argv, env, cwd, stdout=devnull)
                if status != 0:
                    raise RuntimeError(f"{name}: {' '.join(argv)} exited {status}")
                if round_number >= warmup:
                    times[name].append(seconds)
                if between is not None:
                    between(name)
        return [Sample(name, times[name]) for name, _ in contenders]
    finally:
        os.close(devnull)
