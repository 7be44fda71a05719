"""Helpers for the dashboard tests: the dashboard as a real ``jwql-dramatiq web`` subprocess, and
a headless Debian Chromium driven by Selenium (never a downloaded browser)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: A token long enough to turn actions on.
TOKEN = "test-action-token-0123456789"


class WebServer:
    """``python -m jwql_dramatiq --config CONFIG web --port PORT`` as a subprocess, always reaped."""

    def __init__(self, config: Path, log_path: Path, token: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "JWQL_DRAMATIQ_WEB_TOKEN"}
        if token is not None:
            env["JWQL_DRAMATIQ_WEB_TOKEN"] = token
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "jwql_dramatiq", "--config", str(config), "web",
                                      "--port", str(self.port)], cwd=REPO, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        wait_for(self._answers, 30, f"the dashboard on port {self.port}", interval_s=0.1)

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"the dashboard exited with {self.proc.returncode}:\n{self.log()}")
        try:
            urllib.request.urlopen(self.url + "/healthz", timeout=2).read()
        except urllib.error.HTTPError:
            return True  # it answers; Redis may be down
        except OSError:
            return False
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def make_browser(tmp_path: Path):
    """A headless Chromium from Debian's packages, through Debian's chromedriver (no Selenium Manager)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(p) or shutil.which(Path(p).name))]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run ./dev test, which installs Debian's chromium and "
                    "chromium-driver (or apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(20)
    return driver
