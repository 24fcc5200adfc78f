"""The web export in a real browser: Debian's Chromium through Playwright, the folder served by a static
server on 127.0.0.1 and every other request blocked. Greedy text equals `charnn sample --temperature 0`,
a sampled text streams, Stop stops, the console stays clean, and a file:// page says how to serve it."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charnn.cli import app
from tests.conftest import train_run

runner = CliRunner()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    folder = tmp_path / "site"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", folder
    server.shutdown()


def open_page(browser, url: str, problems: list[str]):
    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone's width
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    blocked: list[str] = []

    def only_local(route) -> None:  # the page must need nothing but its own folder
        if route.request.url.startswith(url):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(url)
    page.wait_for_function("!document.getElementById('generate').disabled", timeout=60_000)
    return page, blocked


def set_range(page, selector: str, value: float) -> None:
    """Move a slider as a person would: its value set, then its input event (Playwright cannot fill a range)."""
    page.eval_on_selector(selector, f"e => {{ e.value = '{value}'; e.dispatchEvent(new Event('input')); }}")


def export_and_open(browser, served: tuple[str, Path], run: str, problems: list[str]):
    """`charnn export RUN --format web` into the served folder, then the page opened on it."""
    url, folder = served
    result = runner.invoke(app, ["export", run, "--format", "web", "--out", str(folder)])
    assert result.exit_code == 0, result.output
    return open_page(browser, url, problems)


def greedy_in_page(page, run: str, prime: str, length: int) -> tuple[str, str]:
    """The page's text at temperature 0, and `charnn sample --temperature 0`'s for the same prime and length."""
    page.fill("#prompt", prime)
    set_range(page, "#temperature", 0)
    page.fill("#length", str(length))
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=60_000)
    expected = runner.invoke(app, ["sample", run, "--prime", prime, "--temperature", "0", "--length", str(length)])
    return page.text_content("#output") or "", expected.output.rstrip("\n")


@pytest.mark.slow
def test_web_export_generates_in_the_browser(browser, served: tuple[str, Path], words_file: Path, tmp_path: Path) -> None:
    train_run(words_file, name="r", max_steps=60, eval_every=20)
    problems: list[str] = []
    page, blocked = export_and_open(browser, served, "r", problems)
    assert "LSTM 2×32" in (page.text_content("#facts") or "")
    shown, expected = greedy_in_page(page, "r", "the cat", 200)  # exactly `charnn sample --temperature 0`
    assert shown == expected
    # Sampled: streams (the text grows while Generate is disabled), and Stop ends it.
    set_range(page, "#temperature", 0.9)
    page.fill("#length", "1000000")
    page.fill("#seed", "3")
    page.click("#generate")
    page.wait_for_function("document.getElementById('output').textContent.length > 100")
    first = len(page.text_content("#output") or "")
    page.wait_for_function(f"document.getElementById('output').textContent.length > {first + 50}")
    assert page.locator("#generate").is_disabled() and page.locator("#stop").is_enabled()
    page.click("#stop")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('stopped after')")
    assert page.locator("#generate").is_enabled() and len(page.text_content("#output") or "") < 1_000_000
    shot = tmp_path / "web.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if keep := os.environ.get("CHARNN_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(keep) / "web-export.png")
    assert problems == [] and blocked == []


@pytest.mark.slow
def test_web_export_lists_distinct_items_in_the_browser(browser, served: tuple[str, Path], words_file: Path) -> None:
    # The List mode of the one generator page, on its browser backend: items end at the separator (a space
    # here: the words file is one line of words), each kept once, and the same seed gives the same list.
    train_run(words_file, name="r", max_steps=60, eval_every=20)
    problems: list[str] = []
    page, blocked = export_and_open(browser, served, "r", problems)
    assert page.locator("#copies").is_hidden()  # copies are marked by the server only

    def listed() -> tuple[list[str], str]:
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent.includes('items from')", timeout=60_000)
        return page.locator("#items li").all_text_contents(), page.text_content("#status") or ""

    page.select_option("#mode", "list")
    page.fill("#separator", " ")
    page.fill("#count", "4")
    page.fill("#seed", "5")
    items, status = listed()
    assert len(items) == 4 == len(set(items)) and status.startswith("4 of 4 items from "), (items, status)
    assert all(item and " " not in item and "\n" not in item for item in items), items
    assert listed()[0] == items  # seeded: the same list again
    assert problems == [] and blocked == []


@pytest.mark.slow
def test_web_export_of_an_mlstm_generates_the_same_greedy_text(browser, served: tuple[str, Path],
                                                                words_file: Path) -> None:
    # An mLSTM's state parts are not (L, B, H) (its matrix memory is (L, B, K·d·d)): the page reads their shapes.
    train_run(words_file, name="m", cell="mlstm", max_steps=40, eval_every=20)
    problems: list[str] = []
    page, blocked = export_and_open(browser, served, "m", problems)
    assert "MLSTM 2×32" in (page.text_content("#facts") or "")
    shown, expected = greedy_in_page(page, "m", "the dog", 150)
    assert shown == expected
    assert problems == [] and blocked == []


@pytest.mark.slow
def test_web_export_writes_in_the_voice_and_blend_picked(browser, served: tuple[str, Path], tmp_path: Path) -> None:
    from tests.test_voices import blend_in_page, train_voiced

    train_voiced(tmp_path, "v", max_steps=60)
    problems: list[str] = []
    page, blocked = export_and_open(browser, served, "v", problems)
    assert page.locator("#voices").is_visible()
    assert page.eval_on_selector_all("#voice option", "os => os.map(o => o.textContent)") == ["(no voice)", "ab", "aa"]
    blend_in_page(page, "ab", "aa", 0.25)
    page.fill("#prompt", "a")
    set_range(page, "#temperature", 0)
    page.fill("#length", "80")
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=60_000)
    expected = runner.invoke(app, ["sample", "v", "--prime", "a", "--temperature", "0", "--length", "80",
                                   "--voice", "ab=0.75,aa=0.25"])
    assert page.text_content("#output") == expected.output.rstrip("\n")
    assert problems == [] and blocked == []


@pytest.mark.slow
def test_web_export_opened_as_a_file_says_how_to_serve_it(browser, words_file: Path, tmp_path: Path) -> None:
    train_run(words_file, name="r", max_steps=10, eval_every=5)
    assert runner.invoke(app, ["export", "r", "--format", "web", "--out", str(tmp_path / "site")]).exit_code == 0
    page = browser.new_page()
    page.goto((tmp_path / "site" / "index.html").as_uri())
    page.wait_for_function("document.getElementById('problem').style.display === 'block'")
    assert "python3 -m http.server" in (page.text_content("#problem") or "")
    assert page.locator("#generate").is_disabled()
