"""The memory cgroups and the PSS polling the executor uses, on their own (no worker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from jwql_dramatiq.executor.cgroup import create_root
from jwql_dramatiq.executor.memory import tree_pids, tree_pss_mib

pytestmark = pytest.mark.timeout(60)

ALLOCATE = "import sys; sys.stdin.readline(); b = bytearray({mib} * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); " \
           "print('survived', flush=True); sys.stdin.readline()"


@pytest.fixture
def root():
    made, reason = create_root(f"jwql-test.{os.getpid()}")
    if made is None:
        pytest.skip(f"no memory cgroup can be made here: {reason}")
    yield made
    for child in made.path.glob("child.*"):
        os.rmdir(child)
    made.remove()


def test_a_child_cgroup_limits_the_tree_and_counts_the_oom_kill(root):
    cgroup = root.child("child.test")
    cgroup.set_limit(64)
    proc = subprocess.Popen([sys.executable, "-c", ALLOCATE.format(mib=256)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        cgroup.add(proc.pid)
        assert cgroup.pids() == [proc.pid]
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert cgroup.oom_kills() == 1
        assert 60 <= cgroup.peak_mib() <= 64
    finally:
        proc.kill()
        proc.wait()
    cgroup.kill()
    assert cgroup.remove()


def test_a_cgroup_under_its_limit_measures_the_process(root):
    cgroup = root.child("child.fits")
    cgroup.set_limit(512)
    proc = subprocess.Popen([sys.executable, "-c", ALLOCATE.format(mib=128)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        cgroup.add(proc.pid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "survived"
        assert 128 <= cgroup.current_mib() <= 128 + 64
        assert cgroup.oom_kills() == 0
        cgroup.kill()  # what the fork server does with a task's leftovers
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    assert cgroup.remove()


def test_where_no_cgroup_can_be_made_the_reason_is_given():
    made, reason = create_root("jwql-test-never", prefer="poll")
    assert made is None and "polling" in reason
    made, reason = create_root(f"jwql-test-v2.{os.getpid()}", prefer="v2")
    if made is not None:  # a host with the v2 memory controller delegated
        made.remove()
        pytest.skip("cgroup v2 memory is available here")
    assert "cgroup v2" in reason


def test_polling_sums_pss_over_the_tree():
    code = "import subprocess, sys; b = bytearray(96 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); " \
           "p = subprocess.Popen([sys.executable, '-c', " + repr(ALLOCATE.format(mib=64)) + "], stdin=sys.stdin); " \
           "p.wait()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "survived"
        pids = tree_pids(proc.pid)
        assert len(pids) == 2
        assert 96 + 64 <= tree_pss_mib(proc.pid) <= 96 + 64 + 40
    finally:
        for pid in tree_pids(proc.pid)[::-1]:
            os.kill(pid, signal.SIGKILL)
        proc.wait()
