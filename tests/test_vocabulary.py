"""Issue 13, "stand on public interfaces": one exit-code table, one Redis-error conversion, one Lua
loader, TaskTimeout as Dramatiq's ResultTimeout, configobj's public API, and no unlisted private
names of dependencies (scripts/check_private_names.py).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from dramatiq.results import ResultTimeout

from jwql_dramatiq import exit_codes
from jwql_dramatiq.embedded import WorkerProcess, free_port
from jwql_dramatiq.errors import JwqlDramatiqError, RedisAuthFailed, RedisUnavailable, TaskError, TaskTimeout
from tests.conftest import REPO, base_config
from tests.faults.servers import RECOMMENDED_RULES, SecureRedis, new_password

pytestmark = pytest.mark.timeout(120)

CLI = [sys.executable, "-m", "jwql_dramatiq"]


# -- the exit-code table --------------------------------------------------------------------------


def test_exit_codes_extend_dramatiqs_own():
    import dramatiq.cli

    # Given: Dramatiq's documented worker codes; Then: ours are the same numbers under the same names
    for name, value in exit_codes.DRAMATIQ_CODES.items():
        assert getattr(dramatiq.cli, name) == value, name
    assert {name for name in dir(dramatiq.cli) if name.startswith("RET_")} == set(exit_codes.DRAMATIQ_CODES)
    # ... and the CLI's own outcomes follow after them, one meaning per row of the table
    codes = [code for code, _ in exit_codes.EXIT_CODES]
    assert len(codes) == len(set(codes)) and codes == sorted(codes)
    ours = {exit_codes.RET_NOT_FOUND, exit_codes.RET_FINISHED, exit_codes.RET_REFUSED, exit_codes.RET_ERROR}
    assert min(ours) > max(exit_codes.DRAMATIQ_CODES.values())
    assert exit_codes.RET_CONFIG == dramatiq.cli.RET_IMPORT and exit_codes.RET_REDIS == dramatiq.cli.RET_CONNECT


@pytest.mark.parametrize("mistake", ["missing", "bad_port"])
def test_bad_config_under_systemd_is_2_and_not_restarted(tmp_path, make_config, mistake):
    # Given: the unit's own command, with a config that is missing or invalid
    unit = (REPO / "deploy" / "jwql-dramatiq-worker.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    path = tmp_path / "missing.json"
    if mistake == "bad_port":
        path = make_config()
        data = json.loads(path.read_text())
        data.pop("redis_url")
        data.update(redis_host="127.0.0.1", redis_port="seventy")
        path.write_text(json.dumps(data))
    # When: it runs as systemd would (ExecStart=... jwql-dramatiq worker)
    assert settings["ExecStart"].endswith("jwql-dramatiq worker")
    done = subprocess.run([*CLI, "--config", str(path), "worker", "--log-file", "-"], cwd=REPO,
                          capture_output=True, text=True, timeout=90)
    # Then: exit 2, one of the codes the unit does not restart on
    assert done.returncode == exit_codes.RET_CONFIG, done.stderr
    assert str(exit_codes.RET_CONFIG) in settings["RestartPreventExitStatus"].split()
    assert str(exit_codes.RET_REDIS) not in settings["RestartPreventExitStatus"].split()
    assert "Traceback" not in done.stderr and str(path) in done.stderr


def test_the_package_does_not_import_dramatiq_cli():
    code = ("import sys, jwql_dramatiq.cli, jwql_dramatiq.worker.boot, jwql_dramatiq.exit_codes, jwql_dramatiq.broker; "
            "print('dramatiq.cli' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def test_readme_and_help_show_the_table(capsys):
    from jwql_dramatiq.cli import main

    assert main(["--help"]) == exit_codes.RET_OK
    out = capsys.readouterr().out
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| code | meaning |"):].split("\n\n")[0].splitlines()[2:]
    assert [row.split("|")[1].strip() for row in table] == [str(code) for code, _ in exit_codes.EXIT_CODES]
    for code, meaning in exit_codes.EXIT_CODES:
        assert f"  {code}  {meaning}" in out


# -- TaskTimeout is Dramatiq's ResultTimeout ------------------------------------------------------


def test_task_timeout_is_a_result_timeout(broker):
    from jwql_dramatiq.actors import ping
    from jwql_dramatiq.waiting import iter_results

    # Given: a message no worker will run (no worker is started)
    message = ping.send()
    started = time.monotonic()
    # When: a caller waits one second for it, catching what Dramatiq's own code catches
    with pytest.raises(ResultTimeout) as info:
        list(iter_results([message], timeout_s=1.0))
    # Then: it is this package's TaskTimeout too, within the bound
    assert isinstance(info.value, TaskTimeout) and isinstance(info.value, TaskError)
    assert isinstance(info.value, JwqlDramatiqError) and "not in after 1 s" in str(info.value)
    assert time.monotonic() - started < 10


# -- a refused login is "authentication failed", exit 2, never retried ----------------------------


@pytest.fixture
def acl_redis(tmp_path):
    server = SecureRedis(tmp_path / "redis", "127.0.0.1", free_port(), "jwql", new_password(),
                         rules=RECOMMENDED_RULES).start()
    yield server
    server.stop()


def _wrong_password_config(tmp_path: Path, server: SecureRedis) -> tuple[Path, str]:
    wrong = new_password()
    config = base_config(None, tmp_path, redis_host="127.0.0.1", redis_port=server.port, redis_username="jwql",
                         redis_password=wrong)
    del config["redis_url"]
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps(config))
    return path, wrong


def test_wrong_password_is_authentication_failed_for_worker_cli_and_monitor(tmp_path, acl_redis):
    from jwql_dramatiq.actors import ping
    from jwql_dramatiq.broker import setup_broker
    from jwql_dramatiq.config import load_config
    from jwql_dramatiq.shared_tasks import start_pipeline

    path, wrong = _wrong_password_config(tmp_path, acl_redis)
    expected = f"Redis authentication failed for user 'jwql' at 127.0.0.1:{acl_redis.port}"
    # When: a worker starts with it ...
    worker = WorkerProcess(path, tmp_path / "worker.log", cwd=REPO)
    try:
        code = worker.proc.wait(60)
    finally:
        worker.stop()
    # Then: one line, the bad-config code (systemd does not restart it), no password
    log = worker.log()
    assert code == exit_codes.RET_CONFIG, log
    assert len([line for line in log.splitlines() if expected in line]) == 1, log
    assert "unreachable" not in log and "Traceback" not in log and wrong not in log
    # When: an operator runs a command with it; Then: the same line and code
    for words in (["status"], ["locks", "list"]):
        done = subprocess.run([*CLI, "--config", str(path), *words], cwd=REPO, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == exit_codes.RET_CONFIG, (words, done.stderr)
        assert done.stderr.count("\n") == 1 and expected in done.stderr and wrong not in done.stdout + done.stderr
    # When: a monitor sends, with a 30 s bound to ride out outages
    broker = setup_broker(load_config(path))
    try:
        with pytest.raises(RedisAuthFailed, match=expected):
            ping.send()
        started = time.monotonic()
        with pytest.raises(RedisAuthFailed, match=expected) as info:
            start_pipeline("/nowhere/jw09999001001_01101_00001_nrca1_uncal.fits", "jw09999001001_01101_00001_nrca1",
                           "rate", "nircam", timeout=30)
        # Then: refused at once (a refused login is not an outage to wait out), as a RedisUnavailable too
        assert time.monotonic() - started < 5
        assert isinstance(info.value, RedisUnavailable) and wrong not in repr(info.value)
    finally:
        broker.close()


def test_redis_unavailable_is_the_one_conversion():
    from jwql_dramatiq.connection import redis_unavailable
    from jwql_dramatiq.outage import is_outage

    client = redis.Redis(host="127.0.0.1", port=free_port(), username="ops")
    auth = redis_unavailable(redis.AuthenticationError("invalid username-password pair"), client=client)
    down = redis_unavailable(redis.ConnectionError("Connection refused"), client=client)
    assert type(auth) is RedisAuthFailed and str(auth).startswith("Redis authentication failed for user 'ops' at")
    assert type(down) is RedisUnavailable and str(down).startswith("Redis is unreachable at 127.0.0.1:")
    assert not is_outage(auth) and not is_outage(redis.AuthenticationError("x")) and is_outage(down)
    assert redis_unavailable(auth) is auth
    again = redis_unavailable(auth, what="sending x")
    assert type(again) is RedisAuthFailed and again.username == "ops" and "sending x: invalid" in str(again)
    client.close()


# -- one Lua loader -------------------------------------------------------------------------------


def test_lua_scripts_load_on_noscript_and_queue_on_pipelines(redis_client):
    from jwql_dramatiq.broker import scripts
    from jwql_dramatiq.lua import LuaScript

    # Given: every script of jwql_dramatiq/scripts is a LuaScript of the one loader
    declared = {name for s in scripts.ALL_SCRIPTS for name in (s.filename, *s.includes)}
    assert declared == {p.name for p in (REPO / "jwql_dramatiq" / "broker" / "scripts").glob("*.lua")}
    # ... and a shared library is prepended once to each script that includes it
    assert scripts.ENQUEUE.source.count("local function write_task_state(") == 1
    assert scripts.TASK_STATE.source.count("local function write_task_state(") == 1
    echo = LuaScript("jwql_dramatiq.broker.scripts", "sweep.lua")
    assert echo.source.startswith("--") and len(echo.sha) == 40
    # When: the server has forgotten the script (a restart, SCRIPT FLUSH)
    redis_client.script_flush()
    heartbeats = "t:__heartbeats__"
    reply = echo.run(redis_client, keys=[heartbeats], args=["t", 0, 1000, 1000, "me", 10])
    # Then: it is loaded and run; and on a pipeline it is queued as EVALSHA
    assert int(reply[0]) == 0 and redis_client.script_exists(echo.sha) == [True]
    with redis_client.pipeline(transaction=False) as pipe:
        echo.queue(pipe, keys=[heartbeats], args=["t", 0, 1000, 1000, "me", 10])
        assert int(pipe.execute()[0][0]) == 0


# -- configobj's public API; the asdf patch's version gate ----------------------------------------


@pytest.mark.parametrize("check, expected", [
    ("boolean(default=False)", ("boolean", [], "False")),
    ("option('OLS', 'OLS_C', default='OLS_C')", ("option", ["OLS", "OLS_C"], "OLS_C")),
    ("float(default=None)", ("float", [], "None")),
    ("integer()", ("integer", [], None)),
    ("is_string_or_datamodel(default=None)", ("is_string_or_datamodel", [], "None")),
])
def test_spec_checks_are_parsed_with_configobjs_public_check(check, expected):
    from jwql_dramatiq.pipeline.specs import parse_check

    assert parse_check(check) == expected


def test_asdf_cache_stays_off_on_an_untested_asdf(caplog):
    from jwql_dramatiq.pipeline.asdf_cache import cache_asdf_schemas

    with caplog.at_level(logging.WARNING, logger="jwql_dramatiq.pipeline.asdf_cache"):
        assert cache_asdf_schemas(tested=("0.0.1",)) is False
    assert "not one the schema cache was tested with" in caplog.text


# -- no private names of dependencies beyond the allow-list ---------------------------------------


def test_no_private_names_of_dependencies_beyond_the_allow_list():
    done = subprocess.run([sys.executable, "scripts/check_private_names.py"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # Dramatiq's are all gone (the broker is ours); asdf's schema cache is the one allow-listed use
    assert "dramatiq" not in done.stdout.lower().replace("jwql_dramatiq", "")


def test_the_private_names_check_lists_each_use(tmp_path):
    # Given: a module using private names of dependencies in each way the check knows
    bad = tmp_path / "pkg" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("import redis\nimport asdf.schema as schema\nfrom dramatiq.brokers.redis import _RedisConsumer\n"
                   "from configobj.validate import Validator\n\n"
                   "schema._make_schema_loader\nValidator()._parse_with_caching('x')\n"
                   "getattr(object(), '_exception', None)\nredis.__version__\n")
    # When: the check runs on it with an empty allow-list
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "check_private_names.py"), "--allow", "/dev/null",
                           str(tmp_path / "pkg")], capture_output=True, text=True, timeout=60)
    # Then: it fails, naming file:line of each, and not the dunder
    assert done.returncode == 1
    for line, name in ((3, "_RedisConsumer"), (6, "_make_schema_loader"), (7, "_parse_with_caching"),
                       (8, "_exception")):
        assert f"bad.py:{line}: " in done.stderr and name in done.stderr, (line, done.stderr)
    assert "__version__" not in done.stderr


# -- no import cycles -----------------------------------------------------------------------------


def _import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at module level or inside functions.

    A package's own ``__init__`` is not counted when one of its modules is imported (Python runs it
    first whatever the importer), only when a name is imported from the package itself.
    """
    import ast

    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
                # "from pkg import name": the submodule pkg.name if there is one, else pkg itself
                candidates = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                              for alias in node.names]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            for candidate in candidates:
                while candidate and candidate not in modules and "." in candidate:
                    candidate = candidate.rsplit(".", 1)[0]
                if candidate in modules and candidate != name:
                    graph[name].add(candidate)
    return graph


def test_the_package_has_no_import_cycles():
    # Given: every import in jwql_dramatiq/, lazy ones (inside functions) included
    graph = _import_graph(REPO / "jwql_dramatiq")
    # When: looking for a module that reaches itself again
    cycles = []
    for start in sorted(graph):
        seen, stack = set(), [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    cycles.append(" -> ".join(path + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        if cycles:
            break
    # Then: there is none (imports point one way, along the path a task takes)
    assert not cycles, cycles[0]
    assert len(graph) > 60  # the walk saw the whole package
