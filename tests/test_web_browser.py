"""End to end in a real browser: ``twistd -n tia --web``, a TiA client, and headless Chromium on the page.

Needs Debian's Chromium (``apt-get install chromium``: /usr/bin/chromium) and the
Python package ``playwright`` (its driver only: never ``playwright install``, the
system browser is used). Without either the test is skipped, saying which.
The screenshot goes to test-artifacts/web-monitor.png.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port, wait_for_port
from test_twistd import request, twistd

from tia.protocol.control import ControlParser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "test-artifacts" / "web-monitor.png"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
BACKGROUND = (0x0F, 0x14, 0x1A)  # the plot's background colour in app.js

CONFIG = """
[server]
control = tcp:{port}:interface=127.0.0.1

[udp]
mode = off

[source:eeg]
driver = ramp
rate = 512
blocksize = 16
channels = Fz, Cz, Pz, Oz
type = eeg

[source:ecg]
driver = sine
rate = 512
blocksize = 16
channels = ECG:ecg
frequency = 1.2
amplitude = 800

[source:markers]
driver = events
channels = trigger:event
interval = 0.5
codes = 7, 8
"""


@pytest.fixture
def monitored_daemon(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(control port, web port) of ``twistd -n tia --web tcp:PORT`` on a ramp config."""
    control_port, web_port = free_port(), free_port()
    config = tmp_path / "server.ini"
    config.write_text(CONFIG.format(port=control_port))
    process = subprocess.Popen(
        [twistd(), "-n", "--pidfile=", "--logfile=-", "tia", "--config", str(config), "--web", f"tcp:{web_port}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(process, control_port)
        wait_for_port(process, web_port)
        yield control_port, web_port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


@pytest.fixture
def test_client(monitored_daemon: tuple[int, int]) -> Iterator[str]:
    """A TiA client streaming over TCP, its data drained by a thread; yields its host:port."""
    control_port, _ = monitored_daemon
    control = socket.create_connection(("127.0.0.1", control_port), timeout=10)
    parser = ControlParser()
    request(control, parser, "CheckProtocolVersion")
    data_port = int(request(control, parser, "GetDataConnection:TCP") or 0)
    data = socket.create_connection(("127.0.0.1", data_port), timeout=10)
    request(control, parser, "StartDataTransmission")
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                if not data.recv(65536):
                    return
            except OSError:
                return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    host, port = control.getsockname()[:2]
    try:
        yield f"{host}:{port}"
    finally:
        stop.set()
        for sock in (data, control):
            sock.close()
        reader.join(timeout=5)


@pytest.mark.slow
def test_the_page_plots_live_signals_and_lists_the_client(
    monitored_daemon: tuple[int, int], test_client: str
) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's Chromium is not installed ({CHROMIUM} missing: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Python package playwright is not installed (pip install playwright; no browser download)")
    _, web_port = monitored_daemon
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"http://127.0.0.1:{web_port}/")
            page.select_option("#window", "5")
            # the plot has drawn data from the stream, markers included ...
            page.wait_for_function(
                "() => window.tiaMonitor && tiaMonitor.frames > 75 && tiaMonitor.pointsDrawn > 500"
                " && tiaMonitor.markers.length > 0",
                timeout=15_000,
            )
            # ... and the status lists the test client as streaming over TCP
            row = page.locator(f'#clients tr[data-peer="{test_client}"]')
            row.wait_for(timeout=10_000)
            assert "TCP" in row.inner_text() and "streaming" in row.inner_text()
            assert page.locator("#groups button.group").all_inner_texts() == ["eeg", "ecg", "event"]
            drawn = page.evaluate(
                """([r, g, b]) => {
                    const canvas = document.getElementById("plot");
                    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
                    let other = 0;
                    for (let i = 0; i < pixels.length; i += 4) {
                        const distance = Math.abs(pixels[i] - r) + Math.abs(pixels[i + 1] - g)
                            + Math.abs(pixels[i + 2] - b);
                        if (distance > 60) other++;
                    }
                    return other / (pixels.length / 4);
                }""",
                list(BACKGROUND),
            )
            assert drawn > 0.01, f"only {drawn:.2%} of the plot differs from the background"
            page.locator('#groups button[data-group="eeg"]').click()  # a group can be hidden
            assert page.locator('#groups button[data-group="eeg"]').get_attribute("aria-pressed") == "false"
            page.locator('#groups button[data-group="eeg"]').click()
            page.wait_for_timeout(300)
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            assert errors == []
        finally:
            browser.close()
