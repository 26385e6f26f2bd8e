"""A real TensorBoard server and a headless Chromium, for the board tests.

`TensorBoardServer` runs `tensorboard --logdir ...` in a subprocess on a
free loopback port, as a user does; `chromium` drives Debian's `chromium`
through its `chromedriver` with Selenium (nothing is downloaded: both come
from `apt-get install chromium chromium-driver`, which `make test` runs as
root). `benchmarks/bench_board.py` uses both too.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

PLUGIN_ROUTE = "/data/plugin/keras_gated"


class TensorBoardServer:
    """`tensorboard --logdir log_dir` on 127.0.0.1, port chosen by the OS.

    Args:
        log_dir: The directory of runs.
        load_fast: TensorBoard's `--load_fast`: "false" for its Python
            loader, "true" for the Rust data server, "auto" for its choice.
        extra: More command-line flags.
    """

    def __init__(self, log_dir, load_fast="false", extra=()):
        self.url = None
        self._output = tempfile.TemporaryFile("w+")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorboard.main",
                f"--logdir={log_dir}",
                "--host=127.0.0.1",
                "--port=0",
                f"--load_fast={load_fast}",
                "--reload_interval=1",
                *extra,
            ],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        )
        self._wait_for_url(timeout=120)

    def _wait_for_url(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._output.seek(0)
            output = self._output.read()
            found = re.search(r"at (http://127\.0\.0\.1:\d+)/", output)
            if found:
                self.url = found.group(1)
                return
            if self._process.poll() is not None:
                break
            time.sleep(0.2)
        self.close()
        self._output.seek(0)
        raise RuntimeError(f"TensorBoard did not start:\n{self._output.read()}")

    def get(self, path, **params):
        """`(status, body)` of a GET; JSON bodies are decoded."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                status, body = response.status, response.read()
                kind = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        if kind.startswith("application/json"):
            return status, json.loads(body)
        return status, body

    def plugin(self, route, **params):
        """The decoded JSON answer of one of the plugin's routes."""
        status, body = self.get(f"{PLUGIN_ROUTE}/{route}", **params)
        assert status == 200, body
        return body

    def wait_for(self, steps_by_run, timeout=300):
        """Waits until the plugin lists every run at its last step."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = {
                run["run"]: run["max_step"]
                for run in self.plugin("runs")["runs"]
            }
            if all(listed.get(r) == s for r, s in steps_by_run.items()):
                return
            time.sleep(0.5)
        raise TimeoutError(f"TensorBoard listed {listed}, not {steps_by_run}")

    def close(self):
        self._process.terminate()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
        self._output.close()


def missing_browser():
    """Why the browser tests cannot run here, or `None` when they can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            return (
                f"{program} is not installed: `apt-get install chromium "
                "chromium-driver` (make test does this when run as root)"
            )
    return None


def chromium(width=1400, height=1000):
    """A headless Chromium driven by Selenium through Debian's driver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(
        service=Service(shutil.which("chromedriver")), options=options
    )


def wait_until(condition, timeout=30, interval=0.02):
    """Polls `condition()` until it returns a truthy value, which it returns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"not reached within {timeout} s")


def open_dashboard(driver, url):
    """Opens TensorBoard at the Timesteps tab and enters the plugin's frame."""
    driver.get(f"{url}/#keras_gated")
    frame = wait_until(lambda: driver.find_elements("css selector", "iframe"))
    driver.switch_to.frame(frame[0])
    # A boolean, not the object: the object holds ECharts instances, whose
    # circular references newer chromedrivers refuse to serialise.
    wait_until(
        lambda: driver.execute_script("return !!window.timestepsDashboard")
    )


def renders(driver, chart):
    """What the chart `chart` (its element id) last drew, or `None`."""
    return driver.execute_script(
        "return window.timestepsDashboard.renders[arguments[0]] || null", chart
    )
