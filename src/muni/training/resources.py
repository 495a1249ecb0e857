"""Peak resident memory of a training process (Linux), for the bench's cost table."""

from __future__ import annotations

import torch


def reset_peak_rss() -> bool:
    """Restart the peak-RSS count of this process (Linux >= 4.0: ``/proc/self/clear_refs``);
    False where the system does not allow it (then no training peak is reported)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    return True


def process_peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (``ru_maxrss``; on Linux `reset_peak_rss`
    restarts it too)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def train_peak_rss_mib() -> float:
    """Peak resident memory in MiB since the last `reset_peak_rss` (``VmHWM``, Linux); the
    peak CUDA memory since then is added when a GPU is used."""
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    if torch.cuda.is_available():
        rss += torch.cuda.max_memory_allocated() / 2 ** 20
    return rss
