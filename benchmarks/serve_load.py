"""Serving under load: a whole `charnn serve` process, one client against many, on 127.0.0.1.

    python benchmarks/serve_load.py [--clients 32] [--requests 128] [--tokens 400] [--record]

A 2x512 LSTM run is made in a temporary folder (two training steps on tiny-shakespeare: its
weights do not matter for speed), then served by `charnn serve` in its own process. Baseline,
same run: one client making requests one after another. Load: `--clients` concurrent streaming
clients making `--requests` requests in all (different seeds). Reported: time to first character
(p50/p95), aggregate characters/s, and the count of 5xx answers (must be 0). Bounded: every request
has a timeout and the loops stop by themselves.

Beside it, in this process before the server starts: the engine alone on the same run, `--clients`
requests of `--tokens` characters stepped together (`sample.Engine`, as the server's batcher runs
them), so "server with 32 clients / engine at 32 samples" is a ratio measured in one run (target >= 0.8x).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import report, table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_run(work: Path) -> None:
    from charnn import api
    from charnn.model.network import ModelConfig
    from charnn.run.config import TrainConfig

    api.start_training("shakespeare", ModelConfig(vocab_size=1, cell="lstm", layers=2, hidden=512, embed=64),
                       TrainConfig(batch_size=8, seq_len=32, max_steps=2, eval_every=2, val_frac=0.002),
                       name="lstm512", device="cpu", paths=api.Paths(work / "checkpoints", work / "corpora"),
                       show_progress=False)


async def one_request(host: str, port: int, seed: int, tokens: int) -> tuple[float, int, int]:
    """(time to first character, characters, status) of one streamed completion.

    A lean HTTP/1.1 client (one connection per request, chunked transfer decoded by hand): the load
    generator shares the server's cores, so every microsecond it spends per event is taken from the
    server being measured (httpx's streaming parser cost about 4x as much CPU per event).
    """
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        body = json.dumps({"prompt": "ROMEO:", "max_tokens": tokens, "seed": seed, "stream": True}).encode()
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (host.encode(), len(body), body))
        status = int((await reader.readline()).split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        if status != 200 or headers.get("transfer-encoding") != "chunked":
            await reader.read()
            return float("nan"), 0, status
        first, chars, pending = None, 0, b""
        while size := int((await reader.readline()).split(b";")[0], 16):
            pending += await reader.readexactly(size)
            await reader.readexactly(2)  # the chunk's CRLF
            *events, pending = pending.split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: ") or event == b"data: [DONE]":
                    continue
                text = "".join(c["text"] for c in json.loads(event[6:])["choices"])
                if text and first is None:
                    first = time.perf_counter() - start
                chars += len(text)
        return (first if first is not None else float("nan")), chars, 200
    finally:
        writer.close()


async def load(port: int, clients: int, requests: int, tokens: int) -> dict:
    queue = list(range(requests))
    results: list[tuple[float, int, int]] = []

    async def client_loop() -> None:
        while queue:
            seed = queue.pop()
            results.append(await asyncio.wait_for(one_request("127.0.0.1", port, seed, tokens), timeout=120))

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    ttfc = sorted(r[0] for r in results if r[2] == 200)
    return {"requests": len(results), "chars": sum(r[1] for r in results), "wall": wall, "client_cores": cpu / wall,
            "rate": sum(r[1] for r in results) / wall, "errors_5xx": sum(1 for r in results if r[2] >= 500),
            "other": sum(1 for r in results if r[2] != 200 and r[2] < 500),
            "p50": statistics.median(ttfc), "p95": ttfc[min(len(ttfc) - 1, int(0.95 * len(ttfc)))]}


def engine_rate(work: Path, requests: int, tokens: int, repeats: int = 3) -> float:
    """Aggregate chars/s of `requests` one-sample requests joined and stepped together in one engine, as the
    server's batcher runs requests that arrive together (median of runs)."""
    import torch

    from charnn import api
    from charnn.sample import Engine, SampleConfig

    model = api.load_run(str(work / "checkpoints" / "lstm512"), device="cpu")
    rates = []
    for r in range(repeats + 1):
        start = time.perf_counter()
        with torch.inference_mode():
            engine = Engine(model.model, model.tokenizer)
            engine.join_many([("ROMEO:", SampleConfig(length=tokens, seed=seed + 1000 * r)) for seed in range(requests)])
            while engine.groups:
                engine.step()
                for group in [g for g in engine.groups if g.finished]:
                    engine.leave(group)
        if r:  # the first is a warm-up
            rates.append(requests * tokens / (time.perf_counter() - start))
    return statistics.median(rates)


def start_server(work: Path, port: int, threads: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "charnn", "serve", "lstm512", "--port", str(port), "--threads",
                             str(threads), "--checkpoints-dir", str(work / "checkpoints")], cwd=work,
                            stderr=subprocess.PIPE, text=True)


def wait_healthy(base: str) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the server did not come up within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=128, help="requests under load, per round")
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds of engine alone / server under load")
    parser.add_argument("--serve-threads", type=int, default=0, help="the server's --threads (0: PyTorch's default)")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_run(work)
        port = _free_port()
        server = start_server(work, port, args.serve_threads)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base)
            asyncio.run(load(port, 1, 2, args.tokens))  # warm-up
            alone = asyncio.run(load(port, 1, 8, args.tokens))
            engines, crowds = [], []
            for _ in range(args.rounds):  # alternating, so both see the same background load; the server idles meanwhile
                engines.append(engine_rate(work, args.clients, args.tokens, repeats=1))
                crowds.append(asyncio.run(load(port, args.clients, args.requests, args.tokens)))
        finally:
            server.terminate()
            server.communicate(timeout=30)
    ratios = [c["rate"] / e for c, e in zip(crowds, engines, strict=True)]
    ratio = statistics.median(ratios)
    crowd = sorted(crowds, key=lambda c: c["rate"])[len(crowds) // 2]
    engine = statistics.median(engines)
    rows = [[f"1 client, {alone['requests']} requests in sequence", f"{alone['rate']:,.0f}", "1.00x",
             f"{alone['p50'] * 1e3:.0f} ms", f"{alone['p95'] * 1e3:.0f} ms", str(alone["errors_5xx"])],
            [f"{args.clients} concurrent clients, {crowd['requests']} requests (median round)", f"{crowd['rate']:,.0f}",
             f"{crowd['rate'] / alone['rate']:.2f}x", f"{crowd['p50'] * 1e3:.0f} ms", f"{crowd['p95'] * 1e3:.0f} ms",
             str(sum(c["errors_5xx"] for c in crowds))],
            [f"engine alone, {args.clients} requests stepped together, in-process (median)", f"{engine:,.0f}",
             f"{engine / alone['rate']:.2f}x", "-", "-", "-"]]
    note = (f"A whole `charnn serve` process on 127.0.0.1, 2x512 LSTM, streamed completions of {args.tokens} "
            f"characters each; {args.rounds} rounds, each the engine alone then {crowd['requests']} requests under load "
            f"({crowd['chars']:,} characters in {crowd['wall']:.1f} s in the median round). Targets: aggregate with "
            f"{args.clients} clients >= 3x one client; zero 5xx; server with {args.clients} clients / engine alone at "
            f"{args.clients} (median of the rounds' ratios: {', '.join(f'{r:.2f}' for r in ratios)}): "
            f"**{ratio:.2f}x** (target >= 0.8x). The load generator shares this machine's cores: it used "
            f"{crowd['client_cores']:.2f} of them under load.")
    report("Serving under load (benchmarks/serve_load.py)", [
        note, table(["load", "aggregate chars/s", "vs 1 client", "time to first char p50", "p95", "5xx"], rows)],
        args.record)


if __name__ == "__main__":
    main()
