"""``./dev demo``: the main job on an embedded default.

Makes a synthetic NIRCam exposure and matching reference files, starts a private
``redis-server`` on a free port, writes a config for it (CRDS offline, with a stub server
config) in a temporary directory, starts one real worker (``dramatiq jwql_dramatiq.actors -p1
-t1``), runs ``run_pipeline(..., "uncal", "all", "nircam")`` through it exactly as a monitor
would, prints the products and their median rate, and stops the worker and Redis, leaving no
process behind.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path


def run_demo(root: Path) -> int:
    """Run the demo under ``root``; return the exit code."""
    from . import synthetic
    from .broker import setup_broker
    from .config import load_config
    from .embedded import RedisServer, WorkerProcess

    data = root / "data"
    uncal = synthetic.make_uncal(data / "jw09999001001_01101_00001_nrca1_uncal.fits")
    refs = synthetic.make_reference_files(root / "refs")
    print(f"demo: synthetic NIRCam exposure {uncal.name} (2 ints x 5 groups x 64x64, 50 DN/s injected)")
    with RedisServer(root / "redis") as server:
        config_path = root / "config.json"
        config_path.write_text(json.dumps({
            "redis_url": server.url(0),
            "transfer_dir": str(root / "transfer"),
            "working": str(root / "working"),
            "crds_path": str(root / "crds"),
            "crds_offline_stub": True,
        }, indent=2))
        print(f"demo: private Redis on {server.host}:{server.port}; config {config_path}")
        worker = WorkerProcess(config_path, root / "worker.log", cwd=root)
        try:
            print("demo: starting a worker (dramatiq jwql_dramatiq.actors -p1 -t1): it imports jwst and warms up once")
            if not worker.wait_booted(300):
                print(f"demo: the worker did not start:\n{worker.log()}", file=sys.stderr)
                return 1
            broker = setup_broker(load_config(config_path))
            from .shared_tasks import run_pipeline

            started = time.perf_counter()
            products = run_pipeline(str(uncal), "uncal", "all", "nircam",
                                    step_args=synthetic.offline_step_overrides(refs, "cal"), timeout=300)
            elapsed_s = time.perf_counter() - started
            print(f"demo: run_pipeline(..., 'uncal', 'all', 'nircam') took {elapsed_s:.2f} s; products:")
            for path in products:
                print(f"  {path}")
            rate = next(p for p in products if p.endswith("_rate.fits"))
            print(f"demo: median rate in {Path(rate).name}: {median_rate(rate):.3f} DN/s (injected: 50 DN/s)")
            broker.close()
        finally:
            code = worker.stop()
            print(f"demo: worker stopped (exit code {code}); Redis stopping")
    return 0


def median_rate(path: str) -> float:
    """The median of the SCI extension of a rate product."""
    import numpy as np
    from astropy.io import fits

    with fits.open(path) as hdul:
        return float(np.nanmedian(hdul["SCI"].data))


def main() -> int:
    """Entry point of ``python -m jwql_dramatiq.demo``."""
    with tempfile.TemporaryDirectory(prefix="jwql_dramatiq-demo-") as tmp:
        return run_demo(Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
