"""The MLflow UI in a real headless Chromium, over a store that our tracker filled by real training."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catgan.config import VARIANTS
from catgan.errors import UserError
from catgan.tracking.client import MlflowTracker
from catgan.tracking.runmeta import run_tags
from catgan.tracking.ui import runs_page, serve
from catgan.training.loop import train
from catgan.training.outputs import TrainResult

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "test-artifacts" / "mlflow-ui.png"
CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: CI runs as root. The rest keeps Chromium off the network and off the GPU.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000  # the UI's first load parses a large bundle: seconds on 2 busy cores
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
Login = tuple[str, str] | None  # user and password, for a server that asks


def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: CI must install it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing; install it (apt-get install chromium) to test the UI")
    return CHROMIUM


def server_processes(port: int) -> dict[int, int]:
    """Process id -> process group of every live process started with ``--port <port>``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state, _, group = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:  # it exited while we looked
            continue
        if state != "Z" and any(a == b"--port" and b == str(port).encode() for a, b in zip(args, args[1:])):
            found[int(entry.name)] = int(group)
    return found


@pytest.mark.slow
def test_ui_shows_each_variant_its_metrics_and_samples(tiny_params, tiny_images, tmp_path):
    browser = chromium()
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(store, "catgan-ui", tmp_path / "artifacts")

    # The runs train while the server starts: each takes seconds, and the UI must show runs logged
    # after it started.
    with ThreadPoolExecutor(max_workers=1) as pool:
        training = pool.submit(train_each_variant, tracker, tiny_params, tiny_images, tmp_path)
        with serve(store, tmp_path / "served-artifacts") as url:
            fused = training.result()["fused"]
            port = int(url.rsplit(":", 1)[1])
            server = server_processes(port)
            assert server, f"no process serves {url}"
            assert len(set(server.values())) == 1 and os.getpgrp() not in server.values()
            assert listening_addresses(port) == {"127.0.0.1"}  # the default: loopback only
            check_artifact_api(url, fused, tmp_path / "fused" / "grids")
            check_experiment_kind(url, tracker.experiment_id)
            check_pages(url, browser, store, "catgan-ui", tracker.experiment_id, fused)

    assert server_processes(port) == {}
    with pytest.raises(ProcessLookupError):  # nothing is left in the server's process group
        os.killpg(next(iter(server.values())), 0)


def train_each_variant(tracker: MlflowTracker, tiny_params, images, folder: Path,
                       after=lambda params, result: None) -> dict[str, TrainResult]:
    """A tiny run of each variant, logged as the train and evaluate stages log theirs (``after``
    each run's training, before it finishes)."""
    results = {}
    for variant in VARIANTS:
        params = tiny_params(model={"variant": variant}, tracking={"enabled": True})
        tracker.tags = run_tags(params, "ui-test")  # as the train stage names its run
        results[variant] = train(params, images, "ui-test", folder / variant, tracker)
        after(params, results[variant])
        tracker.log_metrics({"eval.swd.swd_avg": 1.0}, step=2)  # as evaluate logs it
        tracker.finish()
    return results


def listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a socket listening on ``port``, from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, _, state = line.split()[1:4]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def check_artifact_api(url: str, run: TrainResult, grids: Path, login: Login = None) -> None:
    """The last epoch's sample grid comes back as the very PNG that training saved."""
    epoch = len(run.history)
    listing = json.loads(fetch(f"{url}/ajax-api/2.0/mlflow/artifacts/list", login, run_id=run.run_id,
                               path="images"))
    paths = [f["path"] for f in listing["files"]]
    png = [p for p in paths if f"samples+step+{epoch}+" in p and p.endswith(".png") and "compressed" not in p]
    assert len(png) == 1, paths
    body = fetch(f"{url}/get-artifact", login, path=png[0], run_uuid=run.run_id)
    assert body.startswith(PNG_MAGIC)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))),
                                  np.asarray(Image.open(grids / f"epoch_{epoch:03d}.png")))


def fetch(url: str, login: Login = None, **query: str) -> bytes:
    # No proxy: one taken from the environment would not reach the loopback server.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    headers = {"Authorization": "Basic " + base64.b64encode(":".join(login).encode()).decode()} \
        if login else {}
    request = urllib.request.Request(f"{url}?{urllib.parse.urlencode(query)}", headers=headers)
    with opener.open(request, timeout=30) as response:
        return response.read()


def check_experiment_kind(url: str, experiment_id: str, login: Login = None) -> None:
    """Marked as model training, the kind MLflow's UI shows as "Machine learning"."""
    exp = json.loads(fetch(f"{url}/ajax-api/2.0/mlflow/experiments/get", login,
                           experiment_id=experiment_id))["experiment"]
    assert {t["key"]: t["value"] for t in exp["tags"]}["mlflow.experimentKind"] == \
        "custom_model_development"


def check_pages(url: str, browser: Path, store: str, experiment: str, experiment_id: str,
                fused: TrainResult, login: Login = None, screenshot: Path = SCREENSHOT) -> None:
    from playwright.sync_api import expect, sync_playwright

    epoch = len(fused.history)
    ml_view = "workflowType=machine_learning"  # the UI opens on its GenAI view unless told
    with sync_playwright() as playwright:
        chrome = playwright.chromium.launch(executable_path=str(browser), args=CHROMIUM_ARGS)
        credentials = {"http_credentials": dict(zip(("username", "password"), login))} if login else {}
        page = chrome.new_page(viewport={"width": 1400, "height": 1000}, **credentials)
        page.set_default_timeout(WAIT_MS)
        try:
            # The link `make ui` prints opens the runs table, which lists exactly one run per
            # variant, by the names our tags give them.
            page.goto(runs_page(url, store, experiment))
            runs = page.get_by_role("link", name=re.compile(r"-seed\d+$"))
            expect(runs).to_have_count(len(VARIANTS), timeout=WAIT_MS)
            assert sorted(runs.all_inner_texts()) == [f"{v}-seed0" for v in VARIANTS]

            # The run's link leads to its page, which shows its last epoch's loss_d digit for digit.
            # The link drops the view from the URL (a user's choice would be remembered): keep it.
            run_page = f"#/experiments/{experiment_id}/runs/{fused.run_id}"
            expect(runs.filter(has_text="fused-seed0")).to_have_attribute("href", run_page)
            page.goto(f"{url}/{run_page}?{ml_view}")
            row = page.get_by_role("row").filter(has=page.get_by_text("epoch/loss_d", exact=True))
            expect(row).to_contain_text(repr(fused.history[-1]["loss_d"]), timeout=WAIT_MS)

            # Its charts open with the training curves, per epoch then per step; eval.* come last.
            page.get_by_role("tab", name="Model metrics").click()
            headers = page.wait_for_function(
                "() => { const found = document.body.innerText.match("
                "/(epoch|step|Model metrics)\\s*\\(\\d+\\)/g); "
                "return found && found.length >= 3 ? found : null; }", timeout=WAIT_MS).json_value()
            assert [re.sub(r"\s*\(.*", "", h) for h in headers] == ["epoch", "step", "Model metrics"]

            # The images chart shows the per-epoch samples and steps to the last epoch's.
            page.get_by_placeholder("Search metric charts").fill("samples")
            expand = page.locator("[data-component-id=fullscreen_button_chartcard]")
            expect(expand).to_have_count(1, timeout=WAIT_MS)
            expand.click()
            dialog = page.get_by_role("dialog")
            step = dialog.get_by_role("spinbutton")
            step.fill(str(epoch))
            step.press("Tab")
            image = dialog.locator("img[src*='get-artifact']")
            expect(image).to_have_attribute(
                "src", re.compile(rf"samples%2Bstep%2B{epoch}%2B.*run_uuid={fused.run_id}"), timeout=WAIT_MS)
            # decode() rejects when the browser could not load or decode the image.
            assert image.evaluate("img => img.decode().then(() => img.naturalWidth)") > 0
            image.evaluate("img => img.scrollIntoView({block: 'center'})")
        finally:
            screenshot.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(screenshot))
            chrome.close()


@pytest.mark.slow
def test_a_taken_port_fails_before_starting_anything(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=rf"127\.0\.0\.1:{port} .*UI_PORT"):
            with serve(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path, port=port):
                pass
    assert server_processes(port) == {}


@pytest.mark.slow
def test_a_server_that_dies_while_starting_reports_its_output(tmp_path):
    with pytest.raises(UserError, match=r"exited with code \d+ while starting:(.|\n)*bogus://nowhere"):
        with serve("bogus://nowhere", tmp_path):
            pass



STUDY_SCREENSHOT = ROOT / "test-artifacts" / "study-page.png"
PAGE_WIDTH = 1300  # a laptop's browser window, where the H200 study's table overflowed


@pytest.mark.slow
def test_the_study_pages_tables_fit_a_1300_px_window(tmp_path):
    """Every table within its column, none scrolled sideways; each comparison row at most two lines
    tall, its verdict on screen; the header's links wrap instead of widening the page."""
    from playwright.sync_api import sync_playwright

    from catgan.study import page as studypage
    from catgan.study.folder import write_study
    from test_studypage import MADE_BY, add_weights, make_study

    browser = chromium()
    root = make_study(tmp_path / "study")
    info = json.loads((root / "study.json").read_text())
    write_study(root, {**info, "provenance": MADE_BY})
    add_weights(root, "fused", "fused-1")
    page_path = studypage.build_page(root, tmp_path / "study.html")
    with sync_playwright() as playwright:
        chrome = playwright.chromium.launch(executable_path=str(browser), args=CHROMIUM_ARGS)
        page = chrome.new_page(viewport={"width": PAGE_WIDTH, "height": 900})
        try:
            page.goto(page_path.as_uri())
            assert page.evaluate("document.documentElement.scrollWidth") <= PAGE_WIDTH
            tables = page.evaluate("""() => [...document.querySelectorAll('table')].map(t => ({
                section: t.closest('section').id, wide: t.scrollWidth,
                room: t.parentElement.clientWidth}))""")
            assert {t["section"] for t in tables} >= {"budget", "compare", "parity", "provenance"}
            assert all(t["wide"] <= t["room"] for t in tables), tables
            rows = page.evaluate("""() => [...document.querySelectorAll('#compare tbody tr')].map(
                tr => { const cells = [...tr.cells];
                  const lines = Math.max(...cells.map(td => { const s = getComputedStyle(td);
                    const inner = td.clientHeight - parseFloat(s.paddingTop)
                                  - parseFloat(s.paddingBottom);
                    return Math.round(inner / parseFloat(s.lineHeight)); }));
                  const verdict = cells[cells.length - 1].getBoundingClientRect();
                  return {metric: cells[0].title, lines: lines, right: verdict.right,
                          text: cells[cells.length - 1].innerText}; })""")
            assert len(rows) == 9 and all(r["text"] for r in rows)
            assert all(r["lines"] <= 2 and r["right"] <= PAGE_WIDTH for r in rows), rows
        finally:
            STUDY_SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(STUDY_SCREENSHOT), full_page=True)
            chrome.close()
