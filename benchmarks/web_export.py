"""Generation speed of the web export in headless Chromium beside `charnn sample`, same machine, same model.

    python benchmarks/web_export.py [--record]

For a 2x512 LSTM and a 2x384 GRU (tiny-shakespeare's vocabulary, weights after a few steps: speed does
not depend on training): `charnn export --format web`, the folder served on 127.0.0.1, the page asked
for 3000 characters at temperature 0.8 (one stream), its chars/s read from the page. The baseline is
`charnn sample` as a whole process: the time for --length 3200 minus the time for --length 200, so
start-up and loading cancel out. Medians of 3 runs each, alternating.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import report, table

MODELS = {"lstm 2x512": ("lstm", 512, 128), "gru 2x384": ("gru", 384, 64)}
LENGTH = 3000
ROUNDS = 3


def page_rate(browser: object, url: str) -> float:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(url)
    page.wait_for_function("!document.getElementById('generate').disabled", timeout=60_000)
    page.fill("#prime", "ROMEO:")
    page.fill("#length", str(LENGTH))
    page.fill("#seed", "1")
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=300_000)
    rate = float(page.get_attribute("#status", "data-rate") or "nan")
    page.close()
    return rate


def sample_rate(run: Path) -> float:
    def timed(length: int) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "charnn", "sample", str(run), "--prime", "ROMEO:", "--length", str(length),
                        "--seed", "1"], check=True, capture_output=True)
        return time.perf_counter() - started

    return (LENGTH) / max(timed(LENGTH + 200) - timed(200), 1e-9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from charnn import api
    from charnn.model.network import ModelConfig
    from charnn.run.config import TrainConfig

    work = Path(tempfile.mkdtemp(prefix="charnn-web-"))
    paths = api.Paths(work / "checkpoints", work / "corpora")
    rows: list[list[str]] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        for label, (cell, hidden, embed) in MODELS.items():
            name = label.replace(" ", "-")
            api.start_training("shakespeare", ModelConfig(1, cell, 2, hidden, embed),
                               TrainConfig(batch_size=8, seq_len=32, max_steps=2, eval_every=2), name=name,
                               device="cpu", paths=paths, show_progress=False)
            site = work / f"{name}-web"
            subprocess.run([sys.executable, "-m", "charnn", "export", name, "--format", "web", "--out", str(site),
                            "--checkpoints-dir", str(paths.checkpoints), "--corpora-dir", str(paths.corpora)],
                           check=True, capture_output=True)
            server = http.server.ThreadingHTTPServer(
                ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
            threading.Thread(target=server.serve_forever, daemon=True).start()
            url = f"http://127.0.0.1:{server.server_port}/"
            web, native = [], []
            for _ in range(ROUNDS):
                web.append(page_rate(browser, url))
                native.append(sample_rate(paths.checkpoints / name))
            server.shutdown()
            w, n = statistics.median(web), statistics.median(native)
            rows.append([label, f"{w:,.0f}", f"{n:,.0f}", f"{w / n:.2f}x"])
        browser_version = browser.version
        browser.close()
    note = (f"One stream, {LENGTH} characters at temperature 0.8, medians of {ROUNDS}, in turns; `charnn sample` "
            f"timed as whole processes (--length {LENGTH + 200} minus --length 200); Chromium {browser_version}.")
    report("web export: generation in headless Chromium beside charnn sample",
           [table(["model", "browser (web export) chars/s", "`charnn sample` chars/s", "browser / sample"], rows), note],
           args.record)
    return 0


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    sys.exit(main())
