"""``./dev demo``: the main job on an embedded default.

Makes a synthetic exposure for each of the five instruments and matching reference files,
starts a private ``redis-server`` on a free port, writes a config for it (CRDS offline, with a
stub server config, and the references as deployment-level ``step_args``, as an offline site
would configure them) in a temporary directory, starts one real worker (``dramatiq
jwql_dramatiq.actors -p1 -t1``), and runs JWQL's own call, character for character, for each
instrument: ``run_pipeline(f, "uncal", "all", instrument)``. It prints the products, each
median rate, and the time each took, then stops the worker and Redis, leaving no process
behind. ``--full-frame`` also runs a full-frame NIRCam (2048x2048) and MIRI (1024x1032) job.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

#: The demo's instruments, in the order it runs them.
DEMO_INSTRUMENTS = ("nircam", "niriss", "fgs", "nirspec", "miri")
#: Instruments of the ``--full-frame`` jobs, one per detector family.
FULL_FRAME_INSTRUMENTS = ("nircam", "miri")


def run_demo(root: Path, full_frame: bool = False) -> int:
    """Run the demo under ``root``; return the exit code."""
    from . import synthetic
    from .broker import setup_broker
    from .config import load_config
    from .embedded import RedisServer, WorkerProcess

    step_args = synthetic.subarray_step_args(root / "refs" / "small")
    exposures = {inst: synthetic.make_exposure(inst, root / "data" / inst / synthetic.exposure_file_name(inst))
                 for inst in DEMO_INSTRUMENTS}
    if full_frame:
        print("demo: writing full-frame references for every instrument (about 10 s, 1.6 GB)")
        step_args.update(synthetic.deployment_step_args(root / "refs" / "full"))
        for inst in FULL_FRAME_INSTRUMENTS:
            exposures[f"{inst} full frame"] = synthetic.make_exposure(
                inst, root / "data" / f"{inst}_full" / synthetic.exposure_file_name(inst), subarray="full")
    print(f"demo: synthetic exposures for {', '.join(DEMO_INSTRUMENTS)} (50 DN/s and one cosmic ray injected)")
    with RedisServer(root / "redis") as server:
        config_path = root / "config.json"
        config_path.write_text(json.dumps({
            "redis_url": server.url(0),
            "transfer_dir": str(root / "transfer"),
            "working": str(root / "working"),
            "crds_path": str(root / "crds"),
            "crds_offline_stub": True,
            "step_args": step_args,
        }, indent=2))
        print(f"demo: private Redis on {server.host}:{server.port}; config {config_path} "
              f"(the references are its deployment-level step_args)")
        worker = WorkerProcess(config_path, root / "worker.log", cwd=root)
        try:
            print("demo: starting a worker (dramatiq jwql_dramatiq.actors -p1 -t1): it imports jwst and warms up once")
            if not worker.wait_booted(300):
                print(f"demo: the worker did not start:\n{worker.log()}", file=sys.stderr)
                return 1
            broker = setup_broker(load_config(config_path))
            from .shared_tasks import run_pipeline

            rows = []
            for label, uncal in exposures.items():
                instrument = label.split()[0]
                started = time.perf_counter()
                products = run_pipeline(str(uncal), "uncal", "all", instrument)
                elapsed_s = time.perf_counter() - started
                rate = next(p for p in products if p.endswith("_rate.fits"))
                rows.append((label, len(products), median_rate(rate, instrument, "full" in label), elapsed_s))
                print(f"demo: run_pipeline({uncal.name!r}, 'uncal', 'all', {instrument!r}) -> "
                      f"{len(products)} products in {elapsed_s:.2f} s, e.g. {Path(rate).name}")
            print("\ndemo: instrument          products  median rate (injected 50 DN/s)  send->result")
            for label, count, rate_dn_s, elapsed_s in rows:
                print(f"      {label:<19} {count:>8}  {rate_dn_s:>14.3f} DN/s               {elapsed_s:>6.2f} s")
            broker.close()
        finally:
            code = worker.stop()
            print(f"demo: worker stopped (exit code {code}); Redis stopping")
    return 0


def median_rate(path: str, instrument: str, full_frame: bool = False) -> float:
    """The median of a rate product's SCI extension over the light-sensitive pixels."""
    import numpy as np
    from astropy.io import fits

    from .synthetic import detector_for, reference_pixel_mask

    det = detector_for(instrument)
    light = ~reference_pixel_mask(det, det.full_frame() if full_frame else det.small)
    with fits.open(path) as hdul:
        return float(np.nanmedian(hdul["SCI"].data[light]))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m jwql_dramatiq.demo``."""
    parser = argparse.ArgumentParser(prog="./dev demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full-frame", action="store_true",
                        help="also run a full-frame NIRCam and MIRI job (about a minute more)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jwql_dramatiq-demo-") as tmp:
        return run_demo(Path(tmp), full_frame=args.full_frame)


if __name__ == "__main__":
    sys.exit(main())
