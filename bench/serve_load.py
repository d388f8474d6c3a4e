"""Load test of `charrnn serve` on this machine (127.0.0.1 only; bounded in requests and time).

    python bench/serve_load.py [--checkpoint PATH] [--clients 1,8,32,128] [--length 500] [--min-requests 32]

Starts two local servers on the same checkpoint, the batching one and `--no-batching` (one request at a time:
what a naive server gives), and for each number of concurrent streaming clients measures the aggregate
characters per second, p50/p99 time to the first character and p50/p99 total time per request. Each level runs
at least --min-requests requests (clients repeat requests until then), so its percentiles mean something. Then it
checks that the same seed gives the same text alone and under load, and that a client disconnecting mid-stream
frees its slot (the active count in /health before and after).

Without --checkpoint it builds a 2×256 LSTM over 65 characters with random weights: the speed of a trained model of
that shape (the text is noise). Prints one JSON line per measurement, then a table. The client runs on this
machine too, so on a small machine it takes some of the CPU the server could use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"


def random_checkpoint(directory: Path, hidden_size: int = 256, num_layers: int = 2) -> Path:
    """A checkpoint of an untrained LSTM (random weights) over 65 printable characters."""
    import torch

    from charrnn import checkpoint
    from charrnn.config import TrainConfig
    from charrnn.model import CharRNN
    from charrnn.schema import CheckpointMeta, CorpusInfo, Scores

    torch.manual_seed(0)
    chars = sorted(set(string.ascii_letters + string.digits + " \n.,;:!?'-"))[:65]
    cfg = TrainConfig(hidden_size=hidden_size, num_layers=num_layers, device="cpu")
    model = CharRNN(cfg.model_config(len(chars)))
    meta = CheckpointMeta(step=0, vocab=chars, model=model.config, config=cfg,
                          corpus=CorpusInfo("random-weights", "0" * 64, 0), metrics=Scores(), elapsed=0.0)
    return checkpoint.save(directory, model, meta)


class Served:
    """`charrnn serve` in a subprocess on a free port."""

    def __init__(self, ckpt: Path, *flags: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", "--checkpoint", str(ckpt), "--port",
                                      "0", "--max-streams", "1024", *flags], stderr=subprocess.PIPE, text=True,
                                     cwd=ROOT)
        for line in self.proc.stderr:
            if line.startswith("serving on "):
                self.port = int(line.split()[2].rstrip("/").rsplit(":", 1)[1])
                return
        raise SystemExit(f"the server did not start: {self.proc.wait()}")

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(30)


@dataclass
class Result:
    ttfc: float  # seconds from sending the request to the first character
    total: float  # seconds from sending the request to the end of the stream
    text: str


async def _request(port: int, method: str, path: str, body: dict | None = None):
    reader, writer = await asyncio.open_connection(HOST, port)
    payload = b"" if body is None else json.dumps(body).encode()
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split()[1])
    return reader, writer, status, head


async def get_json(port: int, path: str) -> dict:
    reader, writer, _, _ = await _request(port, "GET", path)
    body = await reader.read()
    writer.close()
    return json.loads(body)


async def _chunks(reader: asyncio.StreamReader):
    """The bodies of an HTTP/1.1 chunked response, as they arrive."""
    while True:
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            return
        yield await reader.readexactly(size)
        await reader.readexactly(2)


def _texts(buffer: bytes) -> tuple[list[str], bytes]:
    """The text pieces of the complete events in ``buffer``, and what is left of it."""
    *events, rest = buffer.split(b"\n\n")
    pieces = [json.loads(e.removeprefix(b"data: ")).get("text", "") for e in events if e != b"data: [DONE]"]
    return [p for p in pieces if p], rest


async def stream(port: int, body: dict) -> Result:
    start = time.perf_counter()
    reader, writer, status, _ = await _request(port, "POST", "/v1/generate", {**body, "stream": True})
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {await reader.read()}")
    ttfc, text, buffer = math.nan, [], b""
    async for chunk in _chunks(reader):
        pieces, buffer = _texts(buffer + chunk)
        if pieces and math.isnan(ttfc):
            ttfc = time.perf_counter() - start
        text += pieces
    writer.close()
    return Result(ttfc, time.perf_counter() - start, "".join(text))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


async def level(port: int, clients: int, length: int, min_requests: int, timeout: float, seed0: int,
                extra: dict | None = None) -> tuple[dict, list[Result]]:
    rounds = max(1, math.ceil(min_requests / clients))

    async def client(i: int) -> list[Result]:
        out = []
        for r in range(rounds):
            request = {"length": length, "seed": seed0 + i * rounds + r, "temperature": 0.8}
            if extra is not None and i == 0 and r == 0:
                request = extra
            out.append(await stream(port, request))
        return out

    start = time.perf_counter()
    results = [r for rs in await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(clients))), timeout)
               for r in rs]
    wall = time.perf_counter() - start
    chars = sum(len(r.text) for r in results)
    return {"clients": clients, "requests": len(results), "chars": chars, "seconds": round(wall, 3),
            "chars_per_s": round(chars / wall, 1),
            "ttfc_p50_ms": round(1000 * percentile([r.ttfc for r in results], 50), 1),
            "ttfc_p99_ms": round(1000 * percentile([r.ttfc for r in results], 99), 1),
            "total_p50_ms": round(1000 * percentile([r.total for r in results], 50), 1),
            "total_p99_ms": round(1000 * percentile([r.total for r in results], 99), 1)}, results


async def disconnect_check(port: int) -> dict:
    """Start a long stream, read its first characters, hang up; the active count before and after."""
    reader, writer, _, _ = await _request(port, "POST", "/v1/generate", {"length": 10_000, "seed": 1, "stream": True})
    buffer = b""
    async for chunk in _chunks(reader):
        pieces, buffer = _texts(buffer + chunk)
        if pieces:
            break
    during = (await get_json(port, "/health"))["active"]
    writer.transport.abort()
    hung_up, after = time.perf_counter(), during
    while after and time.perf_counter() - hung_up < 10:
        await asyncio.sleep(0.005)
        after = (await get_json(port, "/health"))["active"]
    return {"check": "disconnect", "active_while_streaming": during, "active_after_hang_up": after,
            "freed_within_ms": round(1000 * (time.perf_counter() - hung_up), 1)}


async def run(args: argparse.Namespace, ckpt: Path) -> None:
    rows = []
    probe = {"prefix": "The ", "length": args.length, "seed": 12345, "temperature": 0.8, "top_p": 0.95}
    for mode, flags in (("batched", ()), ("one at a time", ("--no-batching",))):
        server = Served(ckpt, *flags)
        try:
            alone = (await stream(server.port, probe)).text
            for clients in args.clients:
                row, results = await level(server.port, clients, args.length, args.min_requests, args.timeout,
                                           seed0=1000 * clients, extra=probe)
                row = {"server": mode, **row}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if clients == max(args.clients):
                    loaded = results[0].text  # client 0's first request was the probe
                    print(json.dumps({"check": "same seed alone and under load", "server": mode,
                                      "clients": clients, "identical": loaded == alone}), flush=True)
            if mode == "batched":
                print(json.dumps({"server": mode, **await disconnect_check(server.port)}), flush=True)
        finally:
            print(json.dumps({"server": mode, "exit_code_after_sigterm": server.stop()}), flush=True)
    print(f"\n{'server':<14} {'clients':>7} {'chars/s':>10} {'ttfc p50':>9} {'ttfc p99':>9} {'total p50':>10} "
          f"{'total p99':>10}  (ms)")
    for r in rows:
        print(f"{r['server']:<14} {r['clients']:>7} {r['chars_per_s']:>10,.0f} {r['ttfc_p50_ms']:>9} "
              f"{r['ttfc_p99_ms']:>9} {r['total_p50_ms']:>10} {r['total_p99_ms']:>10}")
    by = {(r["server"], r["clients"]): r["chars_per_s"] for r in rows}
    for mode in ("batched", "one at a time"):
        if (mode, 1) in by and (mode, 32) in by:
            print(f"{mode}: 32 clients / 1 client = {by[(mode, 32)] / by[(mode, 1)]:.1f}x")
    if ("batched", 32) in by and ("one at a time", 32) in by:
        print(f"32 clients, batched / one at a time = {by[('batched', 32)] / by[('one at a time', 32)]:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a run or checkpoint [default: a random 2x256 LSTM]")
    parser.add_argument("--clients", default="1,8,32,128", help="concurrency levels, comma-separated")
    parser.add_argument("--length", type=int, default=500, help="characters per request")
    parser.add_argument("--min-requests", type=int, default=32, help="requests per level, at least")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per level before giving up")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or random_checkpoint(Path(tmp) / "run")
        asyncio.run(run(args, ckpt))


if __name__ == "__main__":
    main()
