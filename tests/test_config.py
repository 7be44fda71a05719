"""Config loading: JWQL's keys, this server's keys, environment overrides, and every error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from redis.connection import parse_url

from jwql_dramatiq.config import load_config
from jwql_dramatiq.errors import ConfigError

pytestmark = pytest.mark.timeout(30)

JWQL_KEYS = {"redis_host": "pljwql2.stsci.edu", "redis_port": "6379", "transfer_dir": "/central/transfer/dev",
             "working": "/internal/data1/working", "outputs": "/outputs", "log_dir": "/logs", "test_data": "/data",
             "connection_string": "postgresql://...", "admin_account": "jwqladm"}


def write(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_jwql_config_loads_with_string_port_and_ignores_unrelated_keys(tmp_path):
    config = load_config(write(tmp_path, JWQL_KEYS), environ={})
    assert config.redis_port == 6379 and config.redis_host == "pljwql2.stsci.edu"
    assert config.url == "redis://pljwql2.stsci.edu:6379/0"
    assert config.working == "/internal/data1/working"
    assert (config.max_tasks_per_child, config.time_limit_s, config.result_ttl_s) == (1, 14_400.0, 86_400.0)


def test_config_is_frozen(tmp_path):
    config = load_config(write(tmp_path, JWQL_KEYS), environ={})
    with pytest.raises(AttributeError):
        config.redis_port = 1  # type: ignore[misc]


def test_path_comes_from_environment_variable(tmp_path, monkeypatch):
    path = write(tmp_path, JWQL_KEYS)
    monkeypatch.chdir(tmp_path.parent)
    assert load_config(environ={"JWQL_DRAMATIQ_CONFIG": str(path)}).path == str(path)


def test_environment_overrides_single_keys(tmp_path):
    env = {"JWQL_DRAMATIQ_REDIS_PORT": "6380", "JWQL_DRAMATIQ_MAX_TASKS_PER_CHILD": "3",
           "JWQL_DRAMATIQ_WARM_UP": "false", "JWQL_DRAMATIQ_REDIS_PASSWORD": "s3cret"}
    config = load_config(write(tmp_path, JWQL_KEYS), environ=env)
    assert (config.redis_port, config.max_tasks_per_child, config.warm_up) == (6380, 3, False)
    assert config.url == "redis://:s3cret@pljwql2.stsci.edu:6380/0"
    assert "s3cret" not in repr(config) and "s3cret" not in config.redis_address


def test_redis_url_replaces_host_and_port(tmp_path):
    config = load_config(write(tmp_path, {"redis_url": "redis://u:p@h:7000/2", "transfer_dir": "/t"}), environ={})
    assert config.redis_address == "h:7000"


@pytest.mark.parametrize(
    ("content", "key", "words"),
    [
        ({"redis_port": "6379", "transfer_dir": "/t"}, "redis_host", "is missing"),
        ({"redis_host": "h", "transfer_dir": "/t"}, "redis_port", "is missing"),
        ({"redis_host": "h", "redis_port": 6379}, "transfer_dir", "is missing"),
        ({**JWQL_KEYS, "redis_port": 70000}, "redis_port", "out of range"),
        ({**JWQL_KEYS, "redis_port": "0"}, "redis_port", "out of range"),
        ({**JWQL_KEYS, "redis_port": "sixty"}, "redis_port", "not a whole number"),
        ({**JWQL_KEYS, "redis_port": True}, "redis_port", "must be an integer or a string"),
        ({**JWQL_KEYS, "redis_host": 12}, "redis_host", "must be a string"),
        ({**JWQL_KEYS, "max_tasks_per_child": "1"}, "max_tasks_per_child", "must be an integer"),
        ({**JWQL_KEYS, "max_tasks_per_child": -1}, "max_tasks_per_child", "0 or more"),
        ({**JWQL_KEYS, "time_limit_s": 0}, "time_limit_s", "greater than 0"),
        ({**JWQL_KEYS, "lock_lease_s": "30"}, "lock_lease_s", "must be an integer or a number"),
        ({**JWQL_KEYS, "result_ttl_s": -5}, "result_ttl_s", "greater than 0"),
        ({**JWQL_KEYS, "queue_name": "bad name!"}, "queue_name", "may only hold"),
        ({**JWQL_KEYS, "redis_url": "http://x"}, "redis_url", "redis://"),
        ({**JWQL_KEYS, "actor_time_limits_s": {"ping": -1}}, "actor_time_limits_s", "'ping'"),
        ({**JWQL_KEYS, "transfer_dir": " "}, "transfer_dir", "must not be empty"),
    ],
)
def test_each_config_error_names_file_key_and_problem(tmp_path, content, key, words):
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value) and repr(key) in str(info.value) and words in str(info.value)
    assert info.value.key == key


def test_bad_environment_override_is_named(tmp_path):
    with pytest.raises(ConfigError, match="'redis_port'.*out of range"):
        load_config(write(tmp_path, JWQL_KEYS), environ={"JWQL_DRAMATIQ_REDIS_PORT": "99999"})


def test_unreadable_json_gives_line_and_column(tmp_path):
    path = write(tmp_path, '{\n  "redis_host": "h",\n  "redis_port": 6379,,\n}')
    with pytest.raises(ConfigError, match=r"not valid JSON at line 3, column 22"):
        load_config(path, environ={})


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.json: no such file"):
        load_config(tmp_path / "nope.json", environ={})


def test_top_level_must_be_an_object(tmp_path):
    with pytest.raises(ConfigError, match="JSON object"):
        load_config(write(tmp_path, "[1, 2]"), environ={})


def test_importing_the_package_reads_no_config_and_opens_no_connection(tmp_path):
    """With no config anywhere and a dead Redis address, every module still imports."""
    code = ("import jwql_dramatiq, jwql_dramatiq.actors, jwql_dramatiq.broker, jwql_dramatiq.config, "
            "jwql_dramatiq.broker.results, jwql_dramatiq.executor, jwql_dramatiq.registry, jwql_dramatiq.worker.boot, "
            "jwql_dramatiq.worker.middleware, jwql_dramatiq.worker.deferred_broker; "
            "import jwql_dramatiq.broker as b; assert b.current_broker() is None; print('ok')")
    env = {"PATH": "/usr/bin:/bin", "JWQL_DRAMATIQ_CONFIG": str(tmp_path / "missing.json")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_password_from_environment_joins_a_tls_url(tmp_path):
    content = {"redis_url": "rediss://redis.example:6380/1?ssl_ca_certs=/etc/jwql/ca.crt", "redis_username": "jwql",
               "transfer_dir": "/t"}
    config = load_config(write(tmp_path, content), environ={"JWQL_DRAMATIQ_REDIS_PASSWORD": "p@ss word"})
    assert config.url == "rediss://jwql:p%40ss%20word@redis.example:6380/1?ssl_ca_certs=/etc/jwql/ca.crt"
    assert config.redis_address == "redis.example:6380" and "p@ss" not in repr(config)


def test_empty_redis_host_is_refused_by_name(tmp_path):
    # JWQL's example config ships "redis_host": "", which used to mean localhost silently
    path = write(tmp_path, {**JWQL_KEYS, "redis_host": ""})
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == "redis_host" and str(path) in str(info.value) and "must not be empty" in str(info.value)


def test_empty_redis_host_is_fine_beside_a_redis_url(tmp_path):
    config = load_config(write(tmp_path, {**JWQL_KEYS, "redis_host": "", "redis_url": "redis://h:7000/1"}), environ={})
    assert config.redis_address == "h:7000"


def test_transfer_dir_that_is_a_file_is_refused_by_name(tmp_path):
    from jwql_dramatiq.config import check_transfer_dir

    regular = tmp_path / "transfer"
    regular.write_text("not a directory")
    path = write(tmp_path, {**JWQL_KEYS, "transfer_dir": str(regular)})
    with pytest.raises(ConfigError) as info:
        check_transfer_dir(load_config(path, environ={}))
    assert info.value.key == "transfer_dir" and "is not a directory" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(("typo", "meant"), [("redis_prot", "redis_port"), ("tranfer_dir", "transfer_dir"),
                                             ("memory_limt_mib", "memory_limit_mib"), ("step_arg", "step_args")])
def test_misspelt_key_gets_one_warning_naming_the_nearest_key(tmp_path, caplog, typo, meant):
    path = write(tmp_path, {**JWQL_KEYS, typo: 1})
    with caplog.at_level("WARNING", logger="jwql_dramatiq.config"):
        load_config(path, environ={})
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"{path}: unknown key {typo!r} is ignored; did you mean {meant!r}?"]


def test_jwql_unrelated_keys_stay_silent(tmp_path, caplog):
    # every key of JWQL's config schema (jwql/utils/utils.py _validate_config), plus JWQL's "cores"
    jwql = {**JWQL_KEYS, **{k: "" for k in ("connection_string", "databases", "django_databases", "filesystem",
                                              "preview_image_filesystem", "thumbnail_filesystem", "jwql_dir",
                                              "admin_account", "test_dir", "setup_file", "auth_mast", "mast_token",
                                              "cores")}}
    with caplog.at_level("WARNING", logger="jwql_dramatiq.config"):
        load_config(write(tmp_path, jwql), environ={})
    assert caplog.records == []


def test_memory_limit_mb_is_an_alias_of_memory_limit_mib(tmp_path):
    assert load_config(write(tmp_path, {**JWQL_KEYS, "memory_limit_mb": 512}), environ={}).memory_limit_mib == 512
    with pytest.raises(ConfigError, match="'memory_limit_mb'.*give only one"):
        load_config(write(tmp_path, {**JWQL_KEYS, "memory_limit_mb": 1, "memory_limit_mib": 2}), environ={})


def test_deployment_step_args_are_checked_at_load(tmp_path):
    good = {"*": {"jump": {"rejection_threshold": 15.0}}, "nircam": {"ramp_fit": {"skip": False}, "rate": {}}}
    assert load_config(write(tmp_path, {**JWQL_KEYS, "step_args": good}), environ={}).step_args == good
    for bad, words in [({"nirspek": {}}, "unknown instrument 'nirspek'"), ({"miri/": {}}, "must be"),
                       ({"miri": {"jumpp": {}}}, "unknown step 'jumpp'"),
                       ({"*": {"dark_current": {"skip": "True"}}}, "must be a bool")]:
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, {**JWQL_KEYS, "step_args": bad}), environ={})
        assert info.value.key == "step_args" and words in str(info.value)


def test_deployment_step_args_merge_under_the_call_per_path():
    from jwql_dramatiq.pipeline.deployment import with_deployment_defaults

    deployment = {"*": {"rate": {"save_opt": False}, "jump": {"rejection_threshold": 15.0}},
                  "nircam": {"dark_current": {"override_dark": "/refs/dark.fits"}}}
    call = {"dark_current": {"skip": True}, "jump": {"rejection_threshold": 5.0}}
    assert with_deployment_defaults(deployment, "NIRCam", "cal", call) == {
        "rate": {"save_opt": False}, "jump": {"rejection_threshold": 5.0},
        "dark_current": {"override_dark": "/refs/dark.fits", "skip": True}}
    assert with_deployment_defaults(deployment, "miri", "jump", None) == {
        "ramp_fit": {"save_opt": False}, "jump": {"rejection_threshold": 15.0}}


def test_deployment_step_args_choose_the_inputs_subarray_last():
    from jwql_dramatiq.pipeline.deployment import with_deployment_defaults

    deployment = {"nircam/SUB64P": {"dark_current": {"override_dark": "/refs/sub64p_dark.fits"}},
                  "nircam": {"dark_current": {"override_dark": "/refs/full_dark.fits"}, "jump": {"skip": False}},
                  "nircam/FULL": {"dark_current": {"override_dark": "/refs/other.fits"}}}
    assert with_deployment_defaults(deployment, "nircam", "cal", None, subarray="sub64p") == {
        "dark_current": {"override_dark": "/refs/sub64p_dark.fits"}, "jump": {"skip": False}}
    assert with_deployment_defaults(deployment, "nircam", "cal", None, subarray="SUB160") == {
        "dark_current": {"override_dark": "/refs/full_dark.fits"}, "jump": {"skip": False}}
    with pytest.raises(Exception, match="must be"):
        from jwql_dramatiq.pipeline.deployment import split_key
        split_key("*/FULL")


SENTINELS = ["10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"]


def test_sentinels_replace_host_and_port_and_turn_on_wait(tmp_path):
    config = load_config(write(tmp_path, {"redis_sentinels": SENTINELS, "redis_master_name": "jwql-prod",
                                          "transfer_dir": "/t"}), environ={})
    assert config.redis_sentinels == tuple(SENTINELS) and config.redis_master_name == "jwql-prod"
    assert config.wait_replicas == 1 and config.redis_wait_ms == 1000
    assert config.redis_address == "sentinels 10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379 (master 'jwql-prod')"
    plain = load_config(write(tmp_path, JWQL_KEYS), environ={})
    assert plain.wait_replicas == 0 and plain.redis_sentinels == ()


def test_sentinel_credentials_and_wait_come_from_the_environment(tmp_path):
    config = load_config(write(tmp_path, {"redis_sentinels": SENTINELS, "transfer_dir": "/t"}),
                         environ={"JWQL_DRAMATIQ_REDIS_SENTINEL_PASSWORD": "s3cret",
                                  "JWQL_DRAMATIQ_REDIS_SENTINEL_USERNAME": "sentinel-user",
                                  "JWQL_DRAMATIQ_REDIS_MIN_REPLICAS": "0", "JWQL_DRAMATIQ_REDIS_WAIT_MS": "250"})
    assert config.redis_sentinel_password == "s3cret" and config.redis_sentinel_username == "sentinel-user"
    assert (config.wait_replicas, config.redis_wait_ms) == (0, 250)
    assert "s3cret" not in repr(config)


def test_redis_url_and_redis_sentinels_together_are_refused_naming_both(tmp_path):
    path = write(tmp_path, {"redis_url": "redis://h:6379/0", "redis_sentinels": SENTINELS, "transfer_dir": "/t"})
    with pytest.raises(ConfigError) as e:
        load_config(path, environ={})
    assert "'redis_url'" in str(e.value) and "'redis_sentinels'" in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize("sentinels, words", [(["10.0.0.1"], "is not host:port"), (["h:99999"], "is not host:port"),
                                              ([26379], "is not a")])
def test_bad_sentinel_entries_are_named(tmp_path, sentinels, words):
    with pytest.raises(ConfigError, match=words) as e:
        load_config(write(tmp_path, {"redis_sentinels": sentinels, "transfer_dir": "/t"}), environ={})
    assert e.value.key == "redis_sentinels"


def test_unreachable_sentinels_give_one_line_naming_every_address(tmp_path):
    from jwql_dramatiq.connection import check_redis, make_redis
    from jwql_dramatiq.embedded import free_port
    from jwql_dramatiq.errors import RedisUnavailable

    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    config = load_config(write(tmp_path, {"redis_sentinels": addresses, "transfer_dir": "/t"}), environ={})
    client = make_redis(config)
    with pytest.raises(RedisUnavailable) as e:
        check_redis(client, config)
    message = str(e.value)
    assert "\n" not in message and "no sentinel gave a master 'jwql'" in message
    assert all(message.count(a) >= 2 for a in addresses), message  # in the address, and in what each said


def run_status(config_path, **env):
    """``python -m jwql_dramatiq status`` on ``config_path`` in a subprocess: (exit code, stderr)."""
    import os

    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith("JWQL_DRAMATIQ_")},
                "JWQL_DRAMATIQ_CONFIG": str(config_path), **env}
    done = subprocess.run([sys.executable, "-m", "jwql_dramatiq", "status"], env=full_env,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis://127.0.0.1:notaport/0", "port 'notaport' is not a whole number"),
        ("redis://127.0.0.1:99999/0", "port 99999 is out of range"),
        ("redis://127.0.0.1:0/0", "port 0 is out of range"),
        ("redis:///0", "has no host"),
        ("redis://:6380/0", "has no host"),
        ("rediss://u:s3cret@:6380/0", "has no host"),
        ("redis://h:6379/abc", "database '/abc' is not a whole number"),
        ("redis://h:6379/1/2", "database '/1/2' is not a whole number"),
        ("redis://h:6379/0?db=abc", "?db='abc' is not a whole number"),
        ("redis://h:6379/1?db=2", "database 1 in its path and 2 in ?db="),
        ("redis://h:6379/0?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
        ("unix://", "has no socket path"),
        ("unix://run/redis.sock", "not host 'run'"),
        ("redis://[::1/0", "unmatched '['"),
        ("redis://u:pa/ss@h:6379/0", "percent-encode"),
    ],
)
def test_malformed_redis_url_is_refused_at_load_without_its_password(tmp_path, url, words):
    path = write(tmp_path, {"redis_url": url, "transfer_dir": "/t"})
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert info.value.key == "redis_url" and str(path) in message and words in message, message
    assert "s3cret" not in message and "pa/ss" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("url", "address"),
    [("redis://h:6379", "h:6379"), ("redis://h/", "h:6379"), ("redis://h:7000/3?db=3", "h:7000"),
     ("redis://h?db=4", "h:6379"), ("redis://[::1]:6380/2", "::1:6380"), ("REDIS://h:7000/0", "h:7000"),
     ("unix:///run/redis.sock?db=2", "/run/redis.sock"), ("unix://u@/run/redis.sock", "/run/redis.sock")],
)
def test_well_formed_redis_urls_still_load(tmp_path, url, address):
    # validated without connecting: nothing here reaches a server
    config = load_config(write(tmp_path, {"redis_url": url, "transfer_dir": "/t"}), environ={})
    assert config.redis_address == address


@pytest.mark.timeout(90)
def test_bad_port_in_redis_url_exits_2_with_one_line_not_a_traceback(tmp_path):
    path = write(tmp_path, {"redis_url": "redis://u:s3cret@127.0.0.1:notaport/0", "transfer_dir": str(tmp_path)})
    code, err = run_status(path)
    assert code == 2, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err and "s3cret" not in err, err
    assert f"bad config: {path}: key 'redis_url': port 'notaport' is not a whole number" in err


def test_bad_environment_override_names_the_variable_not_the_file(tmp_path):
    path = write(tmp_path, {"redis_host": "h", "transfer_dir": "/t", "redis_port": 6379})
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"JWQL_DRAMATIQ_REDIS_PORT": "abc"})
    assert str(info.value) == f"{path}: key 'redis_port' (from $JWQL_DRAMATIQ_REDIS_PORT): 'abc' is not a whole number"
    assert info.value.key == "redis_port" and info.value.env_var == "JWQL_DRAMATIQ_REDIS_PORT"


def test_bad_file_value_is_not_blamed_on_an_unrelated_override(tmp_path):
    path = write(tmp_path, {**JWQL_KEYS, "redis_port": "abc"})
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"JWQL_DRAMATIQ_MAX_TASKS_PER_CHILD": "2"})
    assert str(info.value) == f"{path}: key 'redis_port': 'abc' is not a whole number"
    assert info.value.env_var is None


@pytest.mark.timeout(90)
def test_bad_environment_override_on_the_command_line_names_the_variable(tmp_path):
    path = write(tmp_path, {"redis_host": "h", "transfer_dir": str(tmp_path)})  # no redis_port in the file
    code, err = run_status(path, JWQL_DRAMATIQ_REDIS_PORT="abc")
    assert code == 2, err
    assert err.strip() == (f"jwql-dramatiq: error: bad config: {path}: key 'redis_port' "
                           f"(from $JWQL_DRAMATIQ_REDIS_PORT): 'abc' is not a whole number")


def test_database_beyond_the_servers_databases_is_a_config_error_naming_the_limit(tmp_path, redis_server):
    from jwql_dramatiq.connection import check_redis, make_redis

    # the private server runs with --databases 16 (jwql_dramatiq.embedded.RedisServer)
    path = write(tmp_path, {"redis_host": redis_server.host, "redis_port": redis_server.port, "redis_db": 99,
                            "transfer_dir": "/t"})
    config = load_config(path, environ={})
    client = make_redis(config)
    try:
        with pytest.raises(ConfigError) as info:
            check_redis(client, config)
    finally:
        client.close()
    assert info.value.key == "redis_db" and str(path) in str(info.value)
    assert "database 99 does not exist" in str(info.value) and "databases 0-15" in str(info.value)


def test_database_out_of_range_in_a_redis_url_names_redis_url(tmp_path, redis_server):
    from jwql_dramatiq.connection import check_redis, make_redis

    path = write(tmp_path, {"redis_url": f"unix://{redis_server.socket_path}?db=16", "transfer_dir": "/t"})
    config = load_config(path, environ={})
    client = make_redis(config)
    try:
        with pytest.raises(ConfigError, match=r"key 'redis_url': database 16 does not exist .* databases 0-15"):
            check_redis(client, config)
    finally:
        client.close()


@pytest.mark.timeout(90)
def test_database_out_of_range_exits_2_with_one_line(tmp_path, redis_server):
    path = write(tmp_path, {"redis_host": redis_server.host, "redis_port": redis_server.port, "redis_db": 99,
                            "transfer_dir": str(tmp_path)})
    code, err = run_status(path)
    assert code == 2, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err, err
    assert f"bad config: {path}: key 'redis_db': database 99 does not exist" in err and "0-15" in err


@pytest.mark.parametrize(("url", "warned_db"), [("redis://h:7000/2", 2), ("redis://h:7000?db=3", 3),
                                                ("redis://h:7000", 0), ("unix:///run/r.sock?db=4", 4)])
def test_redis_db_beside_a_redis_url_naming_another_database_is_warned_as_ignored(tmp_path, caplog, url, warned_db):
    path = write(tmp_path, {"redis_url": url, "redis_db": 5, "transfer_dir": "/t"})
    with caplog.at_level("WARNING", logger="jwql_dramatiq.config"):
        config = load_config(path, environ={})
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: 'redis_db' (5) is ignored: 'redis_url' names database {warned_db} (give the database in the URL)"]
    assert int(parse_url(config.url).get("db", 0)) == warned_db  # as the client will connect


def test_redis_db_beside_a_redis_url_naming_the_same_database_is_silent(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="jwql_dramatiq.config"):
        load_config(write(tmp_path, {"redis_url": "redis://h:7000/5", "redis_db": 5, "transfer_dir": "/t"}), environ={})
    assert caplog.records == []
