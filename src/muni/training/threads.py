"""CPU threads that make room for other work: fast alone, graceful beside a busy job.

torch's intra-op pool spins at its barriers. With as many threads as cores, one other busy
process on the machine makes every barrier wait for a descheduled thread, and a training step
slows several-fold (4.7x beside a 2-thread matmul loop on 2 cores; see
``docs/results/contention.md``). One thread fewer than the cores the others leave free avoids
that, but pinning one thread costs 1.8x when the machine is idle.

`ThreadGovernor` keeps torch's thread count at the number of CPUs that other processes leave
free. Every ``every_s`` seconds of wall time it reads how busy this process's CPUs were
(``/proc/stat``, only the CPUs in its affinity set) and how much of that was this process
(`time.process_time`, every thread); the difference is the others' share, and

    threads = clamp(round(len(cpus) - others), 1, most)

where ``most`` is the count it started from (torch's default, or ``OMP_NUM_THREADS``). It
therefore never goes above what the user or torch chose, and with ``most = 1`` or
``adapt=False`` it only measures: `others_mean`, the CPUs the other processes used on average,
tells whether a run had the machine to itself (`muni train` records it as ``other_cpus``).
Off Linux (no ``/proc/stat``) it does nothing. A change of thread count may change the
last bits of some kernels' sums, so a run that must resume bitwise fixes ``train.num_threads``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

# /proc/stat per-CPU fields: user nice system idle iowait irq softirq steal (guest is in user)
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity set; every CPU where that is unknown)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def busy_seconds(cpus: Sequence[int], stat: str = "/proc/stat") -> float | None:
    """CPU-seconds the CPUs `cpus` spent busy since boot (all processes), or None where
    ``/proc/stat`` cannot be read."""
    want = {f"cpu{i}" for i in cpus}
    try:
        with open(stat) as f:
            lines = [line.split() for line in f if line.startswith("cpu")]
        ticks = sum(int(parts[1 + i]) for parts in lines if parts[0] in want for i in _BUSY_FIELDS)
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def threads_for(free_cpus: float, most: int) -> int:
    """Threads to use when `free_cpus` CPUs are left by other processes: their rounded count,
    at least 1 and at most `most`."""
    return max(1, min(most, int(free_cpus + 0.5)))


class ThreadGovernor:
    """Sets torch's intra-op threads to the CPUs other processes leave free (module docstring).

    Call `poll` once per training step; it measures only every ``every_s`` seconds and returns
    the new thread count when it changed it, else None; with ``adapt=False`` it never changes
    it. ``busy`` (CPU-seconds busy on this process's CPUs), ``own`` (this process's CPU-seconds)
    and ``clock`` are injectable for tests.
    """

    def __init__(self, most: int | None = None, every_s: float = 2.0, adapt: bool = True,
                 busy: Callable[[], float | None] | None = None,
                 own: Callable[[], float] = time.process_time,
                 clock: Callable[[], float] = time.monotonic, n_cpus: int | None = None) -> None:
        cpus = allowed_cpus()
        self.n_cpus = n_cpus or len(cpus)
        self.most = most or torch.get_num_threads()
        self.every_s = every_s
        self._busy = busy or (lambda: busy_seconds(cpus))
        self._own, self._clock = own, clock
        self.others = 0.0  # CPUs the other processes kept busy in the last window
        self._others_s = self._measured_s = 0.0  # their CPU-seconds, and the wall seconds measured
        first = self._busy()
        self.active = first is not None
        self.adapt = adapt and self.most > 1 and self.active
        self._last = (self._clock(), first, self._own())

    @property
    def others_mean(self) -> float | None:
        """CPUs the other processes used on average over the windows measured so far (None
        before the first)."""
        return self._others_s / self._measured_s if self._measured_s > 0 else None

    def poll(self) -> int | None:
        """Re-measure if ``every_s`` has passed; set and return the new thread count if it
        changed, else None."""
        if not self.active or self._clock() - self._last[0] < self.every_s or not self.measure():
            return None
        want = threads_for(self.n_cpus - self.others, self.most)
        if not self.adapt or want == torch.get_num_threads():
            return None
        torch.set_num_threads(want)
        return want

    def measure(self) -> bool:
        """Close the current window: update `others` and `others_mean` from it (call it once at
        the end of a run so that its last seconds count). False where nothing could be read."""
        now = self._clock()
        t, busy, own = self._last
        busy_now, own_now = self._busy(), self._own()
        self._last = (now, busy_now, own_now)
        if busy_now is None or busy is None or now <= t:
            return False
        self.others = max(0.0, (busy_now - busy) - (own_now - own)) / (now - t)
        self._others_s += self.others * (now - t)
        self._measured_s += now - t
        return True


@contextmanager
def governed() -> Iterator[ThreadGovernor]:
    """A `ThreadGovernor` for the block; the thread count it started from is back when the block
    ends, however it ends."""
    start = torch.get_num_threads()
    try:
        yield ThreadGovernor()
    finally:
        torch.set_num_threads(start)
