"""The page at / in a real browser: headless Chromium (Debian's package) driven by Playwright.

CI installs Chromium and sets CHARNN_REQUIRE_BROWSER=1, so there a missing browser fails
the test; on a developer machine without Chromium it is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from charnn.serve import ServeConfig, load
from tests.conftest import Server


@pytest.fixture(scope="module")
def page_server(run_root: Path) -> Iterator[Server]:
    # A high cap, so the stop test's long generation cannot finish between its checks and its click.
    s = Server(run_root / "checkpoints", ServeConfig(max_tokens_cap=100_000))
    yield s
    s.stop()


def open_page(browser, url: str) -> tuple[object, list[str]]:
    """The server's page in a desktop-sized tab, and the console errors and page errors it raises."""
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(url + "/")
    return page, problems


@pytest.mark.slow
def test_page_generates_streams_and_stops(browser, page_server: Server, tmp_path: Path) -> None:
    page, problems = open_page(browser, page_server.url)
    page.wait_for_function("document.getElementById('facts').textContent.includes('LSTM 2×32')")
    page.fill("#prompt", "the cat ")
    page.fill("#length", "100000")
    page.fill("#seed", "3")
    page.click("#generate")
    output = page.locator("#output")
    page.wait_for_function("document.getElementById('output').textContent.length > 60")
    first = len(output.text_content() or "")
    page.wait_for_function(f"document.getElementById('output').textContent.length > {first + 40}")  # still streaming
    assert page.locator("#stop").is_enabled() and page.locator("#generate").is_disabled()
    page.screenshot(path=str(tmp_path / "streaming.png"))
    page.click("#stop")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('stopped after')")
    assert page.locator("#generate").is_enabled()
    text = output.text_content() or ""
    assert text.startswith("the cat ") and 60 < len(text) < 100_000 + 8
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if keep := os.environ.get("CHARNN_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(keep) / "page.png")
    # Stop closed the stream: the server dropped the request from its batch.
    page.wait_for_function("1", timeout=100)
    rows = httpx.get(page_server.url + "/health").json()["models"]["tiny"]["rows"]
    assert rows == 0
    # Keyboard: Ctrl+Enter generates the same text for the same seed; Esc stops.
    page.fill("#length", "80")
    page.focus("#prompt")
    page.keyboard.press("Control+Enter")
    page.wait_for_function("document.getElementById('status').textContent.includes('80 characters')")
    again = output.text_content() or ""
    assert again == text[: len(again)]  # seed 3 again: the same opening as the first run
    assert problems == [], problems
    page.close()


@pytest.fixture(scope="module")
def list_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A tiny model of a list: one name per line, few enough that it repeats itself."""
    import random

    from charnn import api
    from tests.conftest import tiny_model, tiny_train

    root = tmp_path_factory.mktemp("list")
    rng = random.Random(1)
    names = ["anna", "bob", "cara", "dan", "eve", "finn", "gus", "hal"]
    (root / "names.txt").write_text("\n".join(rng.choice(names) for _ in range(4000)) + "\n", encoding="utf-8")
    api.start_training(str(root / "names.txt"), tiny_model(), tiny_train(max_steps=80), name="names", device="cpu",
                       paths=api.Paths(root / "checkpoints", root / "corpora"), show_progress=False)
    config = ServeConfig()
    s = Server(root / "checkpoints", config, load(["names"], root / "checkpoints", "cpu", config))
    yield s
    s.stop()


@pytest.mark.slow
def test_page_list_mode_gives_distinct_complete_items(browser, list_server: Server) -> None:
    page, problems = open_page(browser, list_server.url)
    page.wait_for_function("document.getElementById('facts').textContent.includes('names')")
    page.select_option("#mode", "list")
    assert page.is_visible("#count") and page.is_visible("#separator") and not page.is_visible("#copies")
    page.fill("#count", "6")
    page.fill("#seed", "2")
    page.fill("#temperature", "1")
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.includes('items from')")
    items = page.locator("#items li").all_text_contents()
    status = page.text_content("#status") or ""
    assert len(items) == 6 == len(set(items)), (items, status)  # six, all different
    assert all(item and "\n" not in item for item in items)  # each one complete line, no separator inside
    assert status.startswith("6 of 6 items from ")
    if keep := os.environ.get("CHARNN_SCREENSHOT_DIR"):
        page.screenshot(path=str(Path(keep) / "list.png"), full_page=True)
    # an impossible ask: fewer found, and said so
    page.fill("#count", "200")
    page.fill("#length", "3")
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.includes('found no more')", timeout=120_000)
    assert len(page.locator("#items li").all_text_contents()) < 200
    assert problems == [], problems
    page.close()


@pytest.mark.slow
def test_page_fits_a_phone(browser, page_server: Server, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    page.goto(page_server.url + "/")
    page.wait_for_function("document.getElementById('facts').textContent.includes('LSTM')")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    if keep := os.environ.get("CHARNN_SCREENSHOT_DIR"):
        shutil.copy(tmp_path / "phone.png", Path(keep) / "phone.png")
    page.close()


@pytest.mark.slow
def test_inspect_page_switches_neuron_and_shows_hovered_values(browser, words_file: Path, tmp_path: Path) -> None:
    """An inspect page offline (file://): pick a neuron from the list, hover characters, read the values."""
    import torch

    from charnn import api
    from charnn.insight import inspector
    from charnn.model.network import CharRNN
    from tests.conftest import train_run

    run_dir = train_run(words_file, name="insp", max_steps=40, eval_every=20)
    model = api.load_run(str(run_dir))
    torch.manual_seed(0)
    untrained = CharRNN(model.model.config)
    text = words_file.read_text()[:3000] + '\n"quoted (words)" here\n'
    numbers = inspector.inspect(model.model, model.tokenizer, text, inspector.InspectConfig(show=500, reach=20),
                                untrained)
    path = tmp_path / "inspect.html"
    path.write_text(inspector.page(numbers, "insp"), encoding="utf-8")
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_())
    page.goto(path.as_uri())
    assert page.locator("#neurons tr").count() == len(numbers["neurons"]) > 1
    # pick the second neuron of the list: the controls follow
    pick = numbers["neurons"][1]
    page.locator("#neurons button").nth(1).click()
    assert page.input_value("#layer") == str(pick["layer"]) and page.input_value("#unit") == str(pick["unit"])
    assert page.input_value("#part") == str(numbers["parts"].index(pick["part"]))
    unit = (pick["layer"] * len(numbers["parts"]) + numbers["parts"].index(pick["part"])) * numbers["hidden"] + pick["unit"]
    acts = numbers["activations"]
    tolerance = float(abs(acts[:, unit]).max()) / 127 + 1e-4  # the page holds int8 per unit
    for t in (7, 123):
        page.locator(f"#neuron-text span[data-t='{t}']").hover()
        readout = page.text_content("#neuron-readout") or ""
        assert readout.startswith(f"{json_char(numbers['text'][t])} at {t}:"), readout
        assert abs(float(readout.rsplit("= ", 1)[1]) - float(acts[t, unit])) <= tolerance, readout
    # the unit box: type another unit and hover again
    page.fill("#unit", "3")
    page.dispatch_event("#unit", "change")
    page.locator("#neuron-text span[data-t='50']").hover()
    other = unit - pick["unit"] + 3  # unit 3 of the same layer and value
    readout = page.text_content("#neuron-readout") or ""
    assert abs(float(readout.rsplit("= ", 1)[1]) - float(acts[50, other])) <= float(abs(acts[:, other]).max()) / 127 + 1e-4
    # surprise: hover shows the probability and the model's top guesses
    s = numbers["surprise"][40]
    page.locator("#surprise-text span[data-t='40']").hover()
    readout = page.text_content("#surprise-readout") or ""
    assert f"p({json_char(numbers['text'][40])}) = {s['p']:.4f}" in readout, readout
    assert f"1. {json_char(s['top'][0][0])}" in readout
    assert page.is_visible("#tooltip")
    # gradient reach: both lines drawn, 20 points each
    lines = page.locator("#reach-chart polyline")
    assert lines.count() == 2
    assert len((lines.nth(0).get_attribute("points") or "").split()) == 20
    shot = tmp_path / "inspect.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    if keep := os.environ.get("CHARNN_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(keep) / "inspect.png")
    assert problems == [], problems
    page.close()


def json_char(ch: str) -> str:
    import json

    return json.dumps(ch)
