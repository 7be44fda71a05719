"""The dashboard in a real headless Chromium (Debian's, through Debian's chromedriver), against a
private Redis, real workers and the dashboard as a ``jwql-dramatiq web`` subprocess.

Each test saves screenshots under its tmp dir. Chromium missing fails the test (run ./dev test).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dramatiq.results import ResultFailure
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

from jwql_dramatiq.config import HOSTNAME_ENV
from jwql_dramatiq.locks import lock
from jwql_dramatiq.broker.states import get_task_state
from tests import actors_for_tests as t
from tests._web import TOKEN, make_browser
from tests.conftest import REPO, wait_for

NS = "jwql_dramatiq"

HOLDER = """
import sys, time
from jwql_dramatiq.locks import lock
lock(sys.argv[1], lease_s=30).acquire()
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def browser(tmp_path: Path):
    driver = make_browser(tmp_path)
    yield driver
    driver.quit()


def shot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def text_of(driver, css: str) -> str:
    """The text of the first element matching ``css``, or "" (also when the live poll just replaced it)."""
    try:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found else ""
    except StaleElementReferenceException:
        return ""


def click(driver, css: str) -> None:
    """Click the element matching ``css``, finding it again if the live poll replaced it meanwhile."""
    for _ in range(20):
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            continue
    pytest.fail(f"{css} kept being replaced")


def row_texts(driver, css: str) -> list[str]:
    """The texts of the elements matching ``css`` (read again if the live poll replaced them meanwhile)."""
    for _ in range(20):
        try:
            return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]
        except StaleElementReferenceException:
            continue
    return []


def confirm(driver, token: str | None) -> str:
    """On a confirmation page: type the token (if any), submit, return the outcome's text."""
    if token is not None:
        driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "confirm").click()
    wait_for(lambda: driver.find_elements(By.ID, "outcome"), 15, "the action's outcome")
    return driver.find_element(By.ID, "outcome").text


@pytest.mark.timeout(180)
def test_a_running_task_appears_its_failure_shows_the_traceback_and_revoke_terminate_ends_it(
        broker, make_config, start_worker, web, browser, tmp_path):
    # Given a worker, the dashboard with actions on, and a task that runs for a while, then fails
    config = make_config()
    start_worker(config, env={HOSTNAME_ENV: "host-browser"})
    server = web(config, token=TOKEN)
    failing = t.fail_after.send(3.0, "bad slope in the ramp")

    # When the tasks page is open, the running task appears without a reload (live update)
    browser.get(server.url + "/tasks")
    row = f'tr[data-message="{failing.message_id}"]'
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, row + '[data-state="running"]'), 15,
             "the running task on the tasks page")
    assert "host-browser" in text_of(browser, row)
    browser.get(server.url + "/")
    wait_for(lambda: "fail_after" in text_of(browser, "#workers"), 10, "the worker's current task")
    shot(browser, tmp_path, "overview-running")

    # Then, once it failed, its detail page shows the worker's traceback
    wait_for(lambda: (s := get_task_state(failing.message_id)) and s.state == "failed", 20, "the failure")
    browser.get(server.url + f"/tasks/{failing.message_id}")
    traceback = text_of(browser, "#traceback")
    assert "Traceback (most recent call last)" in traceback and "fail_after" in traceback
    assert "ValueError: bad slope in the ramp" in traceback
    assert text_of(browser, "#task-state") == "failed" and "host-browser" in browser.page_source
    shot(browser, tmp_path, "task-failed-traceback")

    # When a long task runs and is revoked with terminate from its page
    long = t.record_span.send(120.0)
    wait_for(lambda: (s := get_task_state(long.message_id)) and s.state == "running", 15, "the long task to run")
    browser.get(server.url + f"/tasks/{long.message_id}")
    click(browser, "#revoke-terminate")
    assert "terminate" in text_of(browser, "#confirm-text")
    shot(browser, tmp_path, "confirm-revoke")
    outcome = confirm(browser, TOKEN)
    shot(browser, tmp_path, "revoked")

    # Then the waiter gets TaskRevoked at once, and the page shows it revoked
    assert outcome.startswith("terminating")
    with pytest.raises(ResultFailure) as info:
        long.get_result(block=True, timeout=10_000)
    assert info.value.orig_exc_type == "TaskRevoked"
    browser.get(server.url + f"/tasks/{long.message_id}")
    assert text_of(browser, "#task-state") == "revoked"
    # ... and the worker goes on with the next task
    assert t.record_span.send(0.0).get_result(block=True, timeout=15_000)["end"] > 0


@pytest.mark.timeout(120)
def test_a_stale_lock_is_cleared_from_the_page_and_a_live_one_refused(make_config, redis_client, web, browser,
                                                                       tmp_path):
    # Given a lock whose holder was killed with SIGKILL, and one held by this live process
    config = make_config()
    env = {**os.environ, "JWQL_DRAMATIQ_CONFIG": str(config)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "stale-one"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE)
    live = lock("live-one", lease_s=30, client=redis_client, namespace=NS)
    try:
        assert holder.stdout.readline().strip() == b"held"
        live.acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        server = web(config, token=TOKEN)

        # When the locks page is open, it shows the owners' state
        browser.get(server.url + "/locks")
        assert "DEAD" in text_of(browser, 'tr[data-lock="stale-one"]')
        assert str(holder.pid) in text_of(browser, 'tr[data-lock="stale-one"]')
        assert "alive" in text_of(browser, 'tr[data-lock="live-one"]')
        shot(browser, tmp_path, "locks")

        # Then clearing the stale one from the page removes it
        click(browser, 'tr[data-lock="stale-one"] a.action')
        outcome = confirm(browser, TOKEN)
        assert outcome.startswith("Removed lock 'stale-one'") and f"pid {holder.pid}" in outcome
        assert not redis_client.exists(f"{NS}:lock:stale-one")

        # And clearing the live one is refused, and it stays
        browser.get(server.url + "/locks")
        click(browser, 'tr[data-lock="live-one"] a.action')
        outcome = confirm(browser, TOKEN)
        shot(browser, tmp_path, "live-lock-refused")
        assert "live owner" in outcome and "not cleared" in outcome
        assert redis_client.exists(f"{NS}:lock:live-one")
    finally:
        holder.kill()
        holder.wait()
        live.release()


@pytest.mark.timeout(120)
def test_a_killed_worker_is_shown_dead_within_the_heartbeat_timeout(make_config, start_worker, web, browser,
                                                                    tmp_path):
    # Given two workers as two hosts, with a 3 s heartbeat timeout, and the overview open
    config = make_config(heartbeat_timeout_s=3)
    a = start_worker(config, env={HOSTNAME_ENV: "host-a"})
    start_worker(config, env={HOSTNAME_ENV: "host-b"})
    server = web(config)
    browser.get(server.url + "/")
    wait_for(lambda: text_of(browser, "#workers").count("alive") == 2, 10, "both workers shown alive")

    # When host-a's worker is killed (its whole process group)
    os.killpg(a.pid, signal.SIGKILL)
    killed = time.monotonic()

    # Then the open page shows it dead (live update, no reload) within the heartbeat timeout
    def host_a_row() -> str:
        return next((text for text in row_texts(browser, "tr.worker") if text.startswith("host-a")), "")

    # the heartbeat timeout, plus one 2 s poll of the page, plus slack for a loaded machine
    bound_s = 3 + 2.0 + 3
    wait_for(lambda: "dead" in host_a_row(), bound_s, "host-a shown dead")
    assert time.monotonic() - killed < bound_s
    assert any(text.startswith("host-b") and "alive" in text for text in row_texts(browser, "tr.worker"))
    shot(browser, tmp_path, "worker-dead")


@pytest.mark.timeout(90)
def test_without_a_token_actions_from_the_page_are_refused(broker, make_config, redis_client, web, browser,
                                                          tmp_path):
    # Given a dashboard started without a token, and a waiting task
    config = make_config()
    server = web(config, token=None)
    waiting = t.record_span.send(0.1)

    # When an operator tries to revoke it and to purge the queue from the pages
    browser.get(server.url + "/tasks")
    assert "read-only (actions off)" in browser.page_source
    click(browser, f'tr[data-message="{waiting.message_id}"] a.action')
    assert "Actions are off" in browser.page_source
    revoke_outcome = confirm(browser, TOKEN)
    shot(browser, tmp_path, "refused")
    browser.get(server.url + "/")
    click(browser, 'tr[data-queue="jwql"] a.action')
    purge_outcome = confirm(browser, None)

    # Then both are refused, and nothing changed
    assert revoke_outcome.startswith("Actions are off") and purge_outcome.startswith("Actions are off")
    assert get_task_state(waiting.message_id).state == "queued" and redis_client.llen(f"{NS}:jwql") == 1
