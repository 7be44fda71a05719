"""The dashboard over HTTP against a private Redis and real workers: /metrics, security, Redis outages.

The dashboard runs as a real ``jwql-dramatiq web`` subprocess (tests/_web.py); requests go
through httpx, as a browser or Prometheus would send them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jwql_dramatiq.embedded import RedisServer
from jwql_dramatiq.locks import lock
from jwql_dramatiq.broker.states import get_task_state
from tests import actors_for_tests as t
from tests._web import TOKEN, WebServer
from tests.conftest import base_config, free_port, wait_for

NS = "jwql_dramatiq"


def scrape(server: WebServer) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, parsed by prometheus_client's own parser: {(name, labels): value}."""
    response = httpx.get(server.url + "/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.mark.timeout(120)
def test_metrics_match_a_known_sequence_of_tasks(broker, make_config, start_worker, redis_client, web):
    # Given a worker that ran 3 tasks that succeeded and 2 that failed, and a held lock
    config = make_config()
    worker = start_worker(config)
    server = web(config)
    ok = [t.record_span.send(0.2) for _ in range(3)]
    bad = [t.fail_with.send("ValueError", f"bad {i}") for i in range(2)]
    for m in ok:
        m.get_result(block=True, timeout=30_000)
    wait_for(lambda: all((s := get_task_state(m.message_id)) and s.state == "failed" for m in bad), 30, "failures")
    held = lock("metrics-lock", lease_s=30, client=redis_client, namespace=NS)
    held.acquire()
    try:
        # When Prometheus scrapes, twice
        first = scrape(server)
        samples = scrape(server)

        # Then each finished task is counted once, by actor and final state
        assert value(samples, "jwql_dramatiq_redis_up") == 1
        assert value(samples, "jwql_dramatiq_tasks_total", actor="record_span", state="succeeded") == 3
        assert value(samples, "jwql_dramatiq_tasks_total", actor="fail_with", state="failed") == 2
        assert value(first, "jwql_dramatiq_tasks_total", actor="record_span", state="succeeded") == 3
        # ... with their run times (each record_span slept 0.2 s)
        assert value(samples, "jwql_dramatiq_task_duration_seconds_count", actor="record_span") == 3
        total = value(samples, "jwql_dramatiq_task_duration_seconds_sum", actor="record_span")
        assert 0.6 <= total < 3.0
        assert value(samples, "jwql_dramatiq_task_duration_seconds_bucket", actor="record_span", le="1.0") == 3
        # ... and peak memory wherever the worker recorded it
        peaks = [get_task_state(m.message_id).details.get("memory_peak_mib") for m in ok]
        recorded = [float(p) for p in peaks if p]
        assert value(samples, "jwql_dramatiq_task_memory_peak_mib_count", actor="record_span") == (
            len(recorded) or None)
        if recorded:
            assert value(samples, "jwql_dramatiq_task_memory_peak_mib_sum", actor="record_span") == pytest.approx(
                sum(recorded))
        # ... the live worker, the held lock, and an empty queue
        assert value(samples, "jwql_dramatiq_workers_alive") == 1
        assert [v for (n, _), v in samples.items() if n == "jwql_dramatiq_worker_up"] == [1]
        assert value(samples, "jwql_dramatiq_locks_held") == 1
        assert value(samples, "jwql_dramatiq_locks_stale") == 0
        assert 0 <= value(samples, "jwql_dramatiq_lock_oldest_age_seconds") < 30
        assert value(samples, "jwql_dramatiq_queue_ready", queue="jwql") == 0
    finally:
        held.release()

    # When the worker stops and two more tasks wait
    worker.stop()
    waiting = [t.record_span.send(0.1) for _ in range(2)]
    samples = scrape(server)

    # Then the queue shows them with their age, no worker is alive, and the counters did not move
    assert value(samples, "jwql_dramatiq_queue_ready", queue="jwql") == len(waiting)
    assert 0 <= value(samples, "jwql_dramatiq_queue_oldest_message_age_seconds", queue="jwql") < 30
    assert value(samples, "jwql_dramatiq_workers_alive") == 0
    assert value(samples, "jwql_dramatiq_locks_held") == 0
    assert value(samples, "jwql_dramatiq_tasks_total", actor="record_span", state="succeeded") == 3


ACTION_FORMS = {
    "revoke": {"message_id": "no-such-id", "terminate": "1"},
    "purge": {"queue": "jwql"},
    "shutdown": {"host": "no-such-host"},
    "clear_lock": {"name": "no-such-lock"},
}


def csrf_session(server: WebServer, origin: bool = True) -> tuple[httpx.Client, str]:
    """A client that loaded a confirmation page: it holds the CSRF cookie and the form's value."""
    client = httpx.Client(base_url=server.url, timeout=10,
                          headers={"Origin": server.url} if origin else {})
    page = client.get("/confirm/purge?queue=jwql")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found and client.cookies.get("jwql_csrf") == found.group(1)
    return client, found.group(1)


@pytest.mark.timeout(60)
def test_without_a_token_every_action_is_refused(broker, make_config, redis_client, web):
    # Given a dashboard started without JWQL_DRAMATIQ_WEB_TOKEN and a waiting task
    config = make_config()
    server = web(config, token=None)
    waiting = t.record_span.send(0.1)
    client, csrf = csrf_session(server)
    try:
        # When each action is posted with a valid CSRF token and any token at all
        for action, form in ACTION_FORMS.items():
            for token in ("", TOKEN, "anything"):
                response = client.post(f"/actions/{action}", data={**form, "csrf": csrf, "token": token})
                # Then it is refused with 403, and nothing changed
                assert response.status_code == 403, (action, response.text)
                assert "Actions are off" in response.text
        assert client.get("/").text.count("read-only (actions off)") == 1
    finally:
        client.close()
    assert get_task_state(waiting.message_id).state == "queued"
    assert redis_client.llen(f"{NS}:jwql") == 1


@pytest.mark.timeout(60)
def test_a_cross_site_post_without_the_csrf_token_is_refused(broker, make_config, redis_client, web):
    # Given a dashboard with actions on, and a waiting task
    config = make_config()
    server = web(config, token=TOKEN)
    waiting = t.record_span.send(0.1)
    form = {"message_id": waiting.message_id, "token": TOKEN}

    # When another site's page posts the action (the browser sends no CSRF cookie or field)
    hostile = httpx.post(server.url + "/actions/revoke", data=form, timeout=10,
                         headers={"Origin": "http://evil.example", "Referer": "http://evil.example/x"})
    # ... or sends a cookie but not the form field, or a field that does not match
    client, csrf = csrf_session(server)
    try:
        no_field = client.post("/actions/revoke", data=form)
        wrong = client.post("/actions/revoke", data={**form, "csrf": "x" * 43})
        # ... or a right CSRF pair from a page whose Origin is another site
        other_origin = client.post("/actions/revoke", data={**form, "csrf": csrf},
                                   headers={"Origin": "http://evil.example"})
        wrong_token = client.post("/actions/revoke", data={**form, "csrf": csrf, "token": "not-the-token"})

        # Then each is refused with 403, and the task still waits
        for response in (hostile, no_field, wrong, other_origin, wrong_token):
            assert response.status_code == 403, response.text
        assert get_task_state(waiting.message_id).state == "queued"

        # And the same action from the dashboard's own page, with the token, goes through
        done = client.post("/actions/revoke", data={**form, "csrf": csrf})
    finally:
        client.close()
    assert done.status_code == 200 and "revoked" in done.text
    assert get_task_state(waiting.message_id).state == "revoked"


@pytest.mark.timeout(90)
def test_no_credential_appears_in_any_page_or_metric(broker, redis_server, redis_db, tmp_path, start_worker, web):
    # Given Redis credentials (an ACL user) and an action token
    password = "redis-secret-pw-5f3a9c"
    admin = redis_server.client(redis_db)
    admin.execute_command("ACL", "SETUSER", "webtest", "on", f">{password}", "~*", "&*", "+@all")
    try:
        config = tmp_path / "secret-config.json"
        config.write_text(json.dumps(base_config(redis_server.url(redis_db), tmp_path, redis_username="webtest",
                                                 redis_password=password)))
        start_worker(config)
        server = web(config, token=TOKEN)
        message = t.fail_with.send("ValueError", "for the pages")
        wait_for(lambda: (s := get_task_state(message.message_id)) and s.state == "failed", 30, "the failure")
        with lock("secret-lock", lease_s=30, client=admin, namespace=NS):
            client, csrf = csrf_session(server)
            try:
                pages = ["/", "/?all=1", "/tasks", f"/tasks/{message.message_id}", "/tasks?state=failed", "/locks",
                         "/charts", "/metrics", "/healthz", "/tasks?fragment=1", "/static/live.js",
                         "/confirm/revoke?message_id=x", "/confirm/shutdown?host=h", "/confirm/clear_lock?name=n"]
                bodies = [client.get(p) for p in pages]
                bodies.append(client.post("/actions/clear_lock", data={"name": "secret-lock", "csrf": csrf,
                                                                        "token": TOKEN}))
                bodies.append(client.post("/actions/revoke", data={"message_id": "x", "csrf": csrf, "token": "bad"}))
            finally:
                client.close()
        # Then neither the Redis password nor the action token is in any page, header, metric or log
        assert all(r.status_code < 500 for r in bodies), [(r.url, r.status_code) for r in bodies]
        assert bodies[0].status_code == 200 and "secret" not in bodies[0].text
        for response in bodies:
            text = response.text + str(response.headers)
            assert password not in text and TOKEN not in text, response.url
        assert password not in server.log() and TOKEN not in server.log()
    finally:
        admin.execute_command("ACL", "DELUSER", "webtest")


@pytest.mark.timeout(90)
def test_pages_show_redis_unreachable_while_it_is_down_and_recover(tmp_path, web):
    # Given a dashboard on its own Redis (this test stops and restarts it)
    port = free_port()
    server = RedisServer(tmp_path / "own-redis", port=port).start()
    try:
        config = tmp_path / "config.json"
        config.write_text(json.dumps(base_config(server.url(0), tmp_path)))
        dashboard = web(config)
        assert httpx.get(dashboard.url + "/", timeout=10).status_code == 200

        # When Redis goes down
        server.stop()

        # Then every page answers, naming the address, and /metrics says redis_up 0
        for path in ("/", "/tasks", "/tasks/abc", "/locks", "/charts", "/tasks?fragment=1"):
            response = httpx.get(dashboard.url + path, timeout=15)
            assert response.status_code in (200, 404) and f"Redis unreachable at 127.0.0.1:{port}" in response.text
        assert httpx.get(dashboard.url + "/healthz", timeout=15).status_code == 503
        assert value(scrape(dashboard), "jwql_dramatiq_redis_up") == 0
        assert dashboard.proc.poll() is None

        # When Redis is back on the same port, the same pages are whole again
        server = RedisServer(tmp_path / "own-redis", port=port).start()
        wait_for(lambda: httpx.get(dashboard.url + "/healthz", timeout=15).status_code == 200, 20, "recovery")
        response = httpx.get(dashboard.url + "/", timeout=10)
        assert "unreachable" not in response.text and "Workers" in response.text
        assert value(scrape(dashboard), "jwql_dramatiq_redis_up") == 1
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_a_finished_task_keeps_its_arguments_and_is_found_by_its_input_file(broker, make_config, start_worker, web,
                                                                           tmp_path):
    # Given a finished task, whose message Redis no longer holds
    config = make_config()
    start_worker(config)
    server = web(config)
    out = tmp_path / "products-of-jw01234"
    out.mkdir()
    message = t.write_product.send(str(out), "web-test:executions", "task-a", 0.05)
    message.get_result(block=True, timeout=30_000)
    wait_for(lambda: (s := get_task_state(message.message_id)) and s.state == "succeeded", 30, "the success")
    # When the operator filters by its input file (its first argument) and opens it
    listing = httpx.get(server.url + "/tasks", params={"text": "products-of-jw01234"}, timeout=10)
    detail = httpx.get(f"{server.url}/tasks/{message.message_id}", timeout=10)
    overview = httpx.get(server.url + "/", timeout=10)
    # Then it is listed, its page shows the arguments it was sent with, and the workers page
    # shows the fork server's memory
    assert listing.status_code == 200 and message.message_id in listing.text
    assert detail.status_code == 200 and "task-a" in detail.text and "products-of-jw01234" in detail.text
    assert re.search(r"<td>\d+(\.\d)? MiB</td>", overview.text), overview.text


@pytest.mark.timeout(60)
def test_a_task_waiting_since_its_first_send_is_listed_found_and_shown(broker, make_config, web, tmp_path):
    # Given a task sent with no worker running: it has no record, only its waiting message
    server = web(make_config())
    message = t.write_product.send(str(tmp_path / "waiting-jw05678"), "web-test:executions", "task-w", 0.05)
    assert broker.client.exists(f"{NS}:task:{message.message_id}") == 0
    # When the operator lists tasks, filters queued ones by input file, and opens it
    listing = httpx.get(server.url + "/tasks", timeout=10)
    found = httpx.get(server.url + "/tasks", params={"state": "queued", "text": "waiting-jw05678"}, timeout=10)
    other = httpx.get(server.url + "/tasks", params={"state": "running"}, timeout=10)
    detail = httpx.get(f"{server.url}/tasks/{message.message_id}", timeout=10)
    # Then it is listed as queued, found by its input file, and its page shows its arguments
    assert listing.status_code == found.status_code == 200
    assert message.message_id in listing.text and message.message_id in found.text
    assert message.message_id not in other.text
    assert detail.status_code == 200 and "queued" in detail.text and "task-w" in detail.text
    assert f"/confirm/revoke?message_id={message.message_id}" in listing.text
