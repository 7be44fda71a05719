"""Shared pieces of the benchmarks: a private Redis, workers, timing and tables."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of ``values``, nearest-rank."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize_ms(samples_s: list[float]) -> dict[str, float]:
    """p50, p90 and mean of ``samples_s``, in milliseconds."""
    ms = [s * 1000 for s in samples_s]
    return {"p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90), "mean_ms": statistics.fmean(ms), "n": len(ms)}


def write_config(path: Path, redis_url: str, root: Path, **overrides: Any) -> Path:
    """Write a jwql_dramatiq config for a benchmark worker."""
    config = {"redis_url": redis_url, "transfer_dir": str(root / "transfer"), "working": str(root / "working"),
              "preload": [], "warm_up": False, **overrides}
    path.write_text(json.dumps(config, indent=2))
    return path


def start_process(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``argv`` in its own process group with output to ``log``."""
    return subprocess.Popen(argv, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(proc: subprocess.Popen, timeout_s: float = 15) -> None:
    """SIGTERM, wait, then SIGKILL the process group; always reaps."""
    import signal

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def measure_latency(send_and_wait: Callable[[], Any], count: int, idle_s: float = 0.0) -> list[float]:
    """Time ``count`` send->result round trips, sleeping ``idle_s`` before each."""
    samples = []
    for _ in range(count):
        if idle_s:
            time.sleep(idle_s)
        started = time.perf_counter()
        send_and_wait()
        samples.append(time.perf_counter() - started)
    return samples


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    """Print a Markdown table."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{c:.1f}" if isinstance(c, float) else str(c) for c in row) + " |")


#: The original JWQL worker's Celery flags (from its runbook), less -D (detach) and -E (events).
CELERY_ORIGINAL_FLAGS = ["-c1", "-Ofair", "--max-tasks-per-child=1", "--prefetch-multiplier", "1"]


@contextmanager
def running(argv: list[str], log: Path, env: dict[str, str], ready_text: str, timeout_s: float) -> Iterator[None]:
    """Run ``argv`` until the block ends, once ``ready_text`` shows in its log; always reap it."""
    from jwql_dramatiq.embedded import poll_until

    proc = start_process(argv, log, env)
    try:
        if not poll_until(lambda: ready_text in log.read_text(errors="replace"), timeout_s, 0.05):
            raise SystemExit(f"{' '.join(argv[:3])} did not start:\n{log.read_text(errors='replace')}")
        yield
    finally:
        stop_process(proc)


def celery_worker(url: str, log: Path) -> Any:
    """The original's Celery worker (``benchmarks.celery_app``) on ``url``, as a context manager."""
    argv = [str(BIN / "celery"), "-A", "benchmarks.celery_app", "worker", *CELERY_ORIGINAL_FLAGS, "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    return running(argv, log, {"BENCH_REDIS_URL": url}, "ready.", 180)


def jwql_worker(config: Path, log: Path) -> Any:
    """A ``dramatiq jwql_dramatiq.actors -p1 -t1`` worker for ``config``, as a context manager."""
    argv = [str(BIN / "dramatiq"), "jwql_dramatiq.actors", "-p1", "-t1"]
    return running(argv, log, {"JWQL_DRAMATIQ_CONFIG": str(config)}, "ready for action", 300)
