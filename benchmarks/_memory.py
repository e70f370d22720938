"""Peak resident memory of a code block, sampled from /proc (CPU tensors bypass tracemalloc)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@contextmanager
def peak_rss(result: dict, interval: float = 0.005):
    """Fill result['peak_bytes'] (absolute) and result['added_bytes'] (over the start)."""
    start = rss_bytes()
    peak = [start]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], rss_bytes())
        result["peak_bytes"] = peak[0]
        result["added_bytes"] = peak[0] - start
