"""redis-py's own lock tests (``tests/test_lock.py`` of the installed redis-py's sdist) run against our lock.

The sdist of the installed redis-py version is fetched once with ``pip download`` into ``.venv/peer-sdists``
(skipped when offline, unless ``CI`` is set). Its ``tests/test_lock.py`` is extracted into a temporary
package next to a conftest.py written here: the ``r`` fixture and ``_get_client`` point at this test's
private Redis database, and ``TestLock.get_lock`` passes ``lock_class=`` our
:class:`jwql_dramatiq.locks.Lock`. Nothing of redis-py's is copied into this repository.

Every failure must be listed as a deliberate difference in docs/compatibility.md, section "redis-py's Lock"
(and every test listed there must still fail, so the document stays true).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import redis

from tests.peers.sdist import peer_sdist

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "compatibility.md"

CONFTEST = '''
"""Fixtures for redis-py's test_lock.py, written by jwql_dramatiq's tests/peers/test_redis_py_lock.py."""
import functools
import os

import pytest
import redis

from jwql_dramatiq.locks import Lock

URL = os.environ["PEER_REDIS_URL"]
#: Our lock, with a lease longer than the tests' timeouts (10 s) so a timeout caps the hold, as in redis-py.
OUR_LOCK = functools.partial(Lock, namespace="peer", lease_s=30.0)


def _get_client(cls, request, single_connection_client=False, flushdb=True, from_url=None, **kwargs):
    client = cls.from_url(URL, single_connection_client=single_connection_client, **kwargs)
    if flushdb:
        client.flushdb()
        request.addfinalizer(client.flushdb)
    request.addfinalizer(client.close)
    return client


@pytest.fixture()
def r(request):
    return _get_client(redis.Redis, request)


@pytest.fixture(autouse=True)
def _our_lock_class(request, monkeypatch):
    if request.cls is not None and request.cls.__name__ == "TestLock":
        def get_lock(self, client, *args, **kwargs):
            kwargs["lock_class"] = OUR_LOCK
            return client.lock(*args, **kwargs)

        monkeypatch.setattr(request.cls, "get_lock", get_lock)
'''


def _sdist() -> Path:
    """The installed redis-py version's sdist, downloaded once into the cache."""
    return peer_sdist("redis", redis.__version__)


def documented_failures() -> set[str]:
    """Test names listed in docs/compatibility.md, section "redis-py's Lock" (``TestLock::test_x``)."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## redis-py's Lock", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(Test\w+::test_\w+)`", section))


@pytest.mark.timeout(180)
def test_redis_py_lock_suite_against_our_lock(redis_url: str, tmp_path: Path) -> None:
    # Given redis-py's own test_lock.py, in a package with our conftest
    sdist = _sdist()
    package = tmp_path / "peer_tests"
    package.mkdir()
    with tarfile.open(sdist) as tar:
        member = tar.getmember(f"redis-{redis.__version__}/tests/test_lock.py")
        source = tar.extractfile(member)
        assert source is not None
        (package / "test_lock.py").write_bytes(source.read())
    (package / "__init__.py").write_text("")
    (package / "conftest.py").write_text(CONFTEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    report = tmp_path / "report.xml"
    # When pytest runs it, in a subprocess, on this test's private database
    env = {**os.environ, "PEER_REDIS_URL": redis_url, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini"),
         "--rootdir", str(tmp_path), f"--junitxml={report}", "-o", "timeout=60", "peer_tests/test_lock.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170,
    )
    # Then every failure is a documented deliberate difference, and every documented one still fails
    assert report.exists(), out.stdout[-3000:] + out.stderr[-3000:]
    cases = ET.parse(report).getroot().iter("testcase")
    outcome = {}
    for case in cases:
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome[name] = "failed" if case.find("failure") is not None or case.find("error") is not None else (
            "skipped" if case.find("skipped") is not None else "passed")
    failed = {name for name, result in outcome.items() if result == "failed"}
    print(f"redis-py {redis.__version__} test_lock.py against jwql_dramatiq.locks.Lock: "
          f"{len(outcome) - len(failed)} passed, {len(failed)} failed: {sorted(failed)}")
    assert len(outcome) >= 30, out.stdout[-3000:]
    assert failed - documented_failures() == set(), out.stdout[-6000:]
    assert documented_failures() - failed == set(), "docs/compatibility.md lists tests that now pass"
