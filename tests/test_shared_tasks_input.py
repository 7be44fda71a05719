"""The monitor-side drop-in refuses unusable arguments before it locks, copies or sends anything.

No worker runs here: every case must fail in the monitor process, naming the bad thing, and
leave the transfer directory and Redis as they were.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jwql_dramatiq import synthetic
from jwql_dramatiq.errors import BadInput
from jwql_dramatiq.locks import list_locks
from jwql_dramatiq.shared_tasks import run_parallel_pipeline, run_pipeline

pytestmark = pytest.mark.timeout(60)

UNCAL = "jw09999001001_01101_00001_nrca1_uncal.fits"


def transfer_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "transfer").rglob("*") if p.is_file()]


@pytest.mark.parametrize("call, named", [
    (lambda f: run_parallel_pipeline([f], "uncal", 5, "nircam"), "ext_or_exts"),
    (lambda f: run_parallel_pipeline([f], "uncal", ["rate", None], "nircam"), "ext_or_exts"),
    (lambda f: run_parallel_pipeline([f], "uncal", (e for e in ()), "nircam"), "ext_or_exts"),
    (lambda f: run_parallel_pipeline([f], "uncal", {"other_short_name": "rate"}, "nircam"),
     "no entry for 'jw09999001001_01101_00001_nrca1'"),
    (lambda f: run_parallel_pipeline([f], None, "rate", "nircam"), "in_ext None"),
    (lambda f: run_parallel_pipeline([f], "uncal", "rate", "nircam",
                                     step_args={"jump": {"rejection_threshold": np.int64(5)}}),
     "step_args['jump']['rejection_threshold'] = np.int64(5) (int64) cannot be sent as JSON"),
    (lambda f: run_pipeline(f, "uncal", "rate", "nircam", step_args=[("jump", {})]), "step_args is list"),
    (lambda f: run_parallel_pipeline([f.replace("_uncal", "_copy_uncal")], "uncal", "jump", "nircam", jump_pipe=True),
     "named after 'jw09999001001_01101_00001_nrca1'"),
])
def test_unusable_arguments_are_refused_before_anything_is_locked_copied_or_sent(broker, redis_client, tmp_path,
                                                                               call, named):
    # Given: a real input file and no worker
    data = tmp_path / "data"
    synthetic.make_uncal(data / UNCAL)
    Path(data / UNCAL.replace("_uncal", "_copy_uncal")).write_bytes((data / UNCAL).read_bytes())
    # When: a monitor calls with an unusable argument
    with pytest.raises(BadInput) as info:
        call(str(data / UNCAL))
    # Then: the error names it, and nothing was copied, locked or queued
    assert named in str(info.value)
    assert transfer_files(tmp_path) == []
    assert list_locks() == []
    assert not [k for k in redis_client.scan_iter() if b":task:" in k or k.endswith(b".msgs")]
