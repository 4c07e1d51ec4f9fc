"""What a benchmark function gets and returns. No Django here: the runner imports it too."""

from __future__ import annotations

import gc
import re
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One line of the results table. `passed` is None where there is no target."""

    figure: str
    target: str
    measured: str
    passed: bool | None

    @property
    def verdict(self) -> str:
        return "—" if self.passed is None else ("pass" if self.passed else "FAIL")


@dataclass
class Measurement:
    seconds: float = 0.0
    peak_mb: float = 0.0


def _status_kb(key: str) -> int | None:
    try:
        match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark to its current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB (10^6 bytes)."""
    hwm = _status_kb("VmHWM")
    if hwm is None:  # no /proc: ru_maxrss is in kB on Linux
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return hwm * 1024 / 1e6


@dataclass
class Context:
    """Handed to each benchmark function, in its own child process."""

    notes: list[str] = field(default_factory=list)
    peak_reset_works: bool = True

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  {text}", file=sys.stderr, flush=True)

    @contextmanager
    def measure(self) -> Iterator[Measurement]:
        """Wall time (perf_counter) and peak RSS of the block; the peak is reset before it starts."""
        m = Measurement()
        gc.collect()
        self.peak_reset_works = reset_peak_rss() and self.peak_reset_works
        start = time.perf_counter()
        try:
            yield m
        finally:
            m.seconds = time.perf_counter() - start
            m.peak_mb = peak_rss_mb()


def fmt_seconds(seconds: float) -> str:
    return f"{seconds:.2f} s"


def fmt_mb(mb: float) -> str:
    return f"{mb:,.0f} MB"
