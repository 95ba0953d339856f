"""The MLflow UI, in a real headless Chromium, against a real `mlflow server` holding finished runs.

Drives Debian's `chromium` with its `chromedriver` through Selenium (no browser download), so it
skips only where those two are not installed (`apt-get install chromium chromium-driver`).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import free_port
from tracking import runs

RUN_NAMES = ("cnn-lr-0.001", "cnn-lr-0.003", "mlp-lr-0.01")
EPOCHS = 10
CHART_CARD = "[data-testid='experiment-view-compare-runs-card']"
PLOT_POINT = ".scatterlayer path.point"


def _wait_for_health(url, server, log, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"mlflow server exited with {server.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url}/health did not answer within {timeout} s")


def _log_finished_runs(url, mark=True):
    client = MlflowClient(tracking_uri=url)
    experiment_id = client.create_experiment("ui-check")
    if mark:  # as a step run does when it opens (tracking.runs.step_run)
        runs.mark_experiment(experiment_id, client)
    run_ids = []
    for i, name in enumerate(RUN_NAMES):
        run = client.create_run(experiment_id, run_name=name, tags={"fittrack.step": "train"})
        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now + epoch, epoch) for epoch in range(1, EPOCHS + 1)  # steps as fittrack's
                   for key, value in (("loss", 1.0 / (epoch + i)), ("val_loss", 1.2 / (epoch + i) + 0.02 * epoch))]
        params = [Param("model", name.split("-")[0]), Param("learning_rate", name.rsplit("-", 1)[1]),
                  Param("epochs", str(EPOCHS))]
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        client.set_terminated(run.info.run_id)
        run_ids.append(run.info.run_id)
    return experiment_id, run_ids


def _chromium(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)


def _stop(process):
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def ui(tmp_path, empty_store, monkeypatch):
    """`mlflow server` on a free port (SQLite backend, already migrated; served artifacts) and a
    headless Chromium, started while the server boots."""
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        pytest.skip("the UI check needs Chromium and its driver: apt-get install chromium chromium-driver")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser or driver
    db = tmp_path / "server.db"
    shutil.copyfile(empty_store, db)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log = tmp_path / "server.log"
    with open(log, "w") as output:  # a file, not a pipe nobody reads: a full pipe would block the server
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}", "--serve-artifacts",
             "--artifacts-destination", str(tmp_path / "served-artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            env=env, stdout=output, stderr=subprocess.STDOUT)
    browser = None
    try:
        browser = _chromium(tmp_path)
        url = f"http://127.0.0.1:{port}"
        _wait_for_health(url, server, log)
        yield url, browser
    finally:
        if browser is not None:
            browser.quit()
        _stop(server)


def _png_size(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _distinct_colours(path) -> int:
    from matplotlib import image

    pixels = (image.imread(path)[..., :3] * 255).astype("uint8").reshape(-1, 3)
    return len({tuple(p) for p in pixels[::7]})


@pytest.mark.e2e
def test_ui_lists_the_runs_and_draws_val_loss_by_epoch(ui, tmp_path):
    server, browser = ui
    experiment_id, run_ids = _log_finished_runs(server)
    wait = WebDriverWait(browser, 60, poll_frequency=0.25)

    # fittrack tags its experiments machine learning (mlflow.experimentKind), but MLflow 3.17.2's UI
    # opens an experiment by its workflow switch (GenAI | Model training: the URL's workflowType,
    # else the browser's last choice, GenAI at first), not by the tag: the bare route lands on the
    # GenAI overview, and workflowType=machine_learning on the runs table.
    kind = MlflowClient(tracking_uri=server).get_experiment(experiment_id).tags.get(runs.EXPERIMENT_KIND_TAG)
    assert kind == runs.EXPERIMENT_KIND
    browser.get(f"{server}/#/experiments/{experiment_id}?workflowType=machine_learning")
    wait.until(lambda d: all(d.find_elements(By.LINK_TEXT, name) for name in RUN_NAMES))
    assert f"/#/experiments/{experiment_id}/runs" in browser.current_url, browser.current_url
    assert "3 matching runs" in browser.find_element(By.TAG_NAME, "body").text
    browser.save_screenshot(str(tmp_path / "experiment-runs.png"))

    # The first run's model-metrics tab: one chart per metric, val_loss with a point per epoch.
    browser.get(f"{server}/#/experiments/{experiment_id}/runs/{run_ids[0]}/model-metrics")

    def val_loss_card(driver):
        for card in driver.find_elements(By.CSS_SELECTOR, CHART_CARD):
            if card.text.startswith("val_loss") and len(card.find_elements(By.CSS_SELECTOR, PLOT_POINT)) == EPOCHS:
                return card
        return False

    card = wait.until(val_loss_card)
    assert f"{RUN_NAMES[0]} (val_loss)" in card.text  # the legend names the run
    assert "Step" in card.text  # x axis: the step, which fittrack sets to the epoch's number
    time.sleep(0.5)  # let Plotly finish its transition before the picture
    page_png = tmp_path / "val_loss-by-epoch.png"
    assert browser.save_screenshot(str(page_png))
    width, height = _png_size(page_png.read_bytes())
    assert width >= 800 and height >= 600 and page_png.stat().st_size > 20_000
    chart_png = tmp_path / "val_loss-chart.png"
    chart_png.write_bytes(card.screenshot_as_png)
    _png_size(chart_png.read_bytes())
    assert _distinct_colours(chart_png) > 20, "the val_loss chart came out blank"
