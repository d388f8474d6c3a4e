"""The HTTP server (serve/app.py, protocol.py, scoring.py, cli/serve.py): endpoints and their JSON, every refusal
as a 4xx JSON error, the page served self-contained, streams that give the library's text, the same text alone
and among concurrent streams, a client that disconnects freeing its slot at once, and a clean exit on
SIGINT/SIGTERM (a real process: slow)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from typer.testing import CliRunner

import charrnn
from charrnn import checkpoint
from charrnn.cli import app as cli_app
from charrnn.sample import Sampling
from charrnn.serve.app import Server, create_app
from charrnn.serve.batcher import Batcher, Busy, Job
from charrnn.serve.protocol import Limits, describe
from charrnn.stop import cut_at_stop
from tests.helpers import ROOT, env, random_checkpoint, synthetic_text
from tests.test_docs import VARIES as VARIES_DOCS_RE

with warnings.catch_warnings():  # Starlette 1.x asks for httpx2 in its test client; httpx works as well
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TEXT = synthetic_text(800)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("serve"), TEXT, hidden_size=48)


def make_server(ckpt: Path, limits: Limits | None = None) -> Server:
    limits = limits or Limits()
    found = checkpoint.find(ckpt, Path("runs"))
    model = found.load_model("cpu").eval()
    batcher = Batcher(model, found.vocab, max_streams=limits.max_streams)
    return Server(model, found.vocab, describe(found, model, limits), limits, batcher)


@pytest.fixture(scope="module")
def client(ckpt: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_server(ckpt, Limits(max_body=10_000)))) as c:
        yield c


def sse_events(body: str) -> list[dict | str]:
    """The data of every server-sent event: a dict, or the string "[DONE]"."""
    out = []
    for event in body.split("\n\n"):
        for line in event.splitlines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def streamed_text(events: list[dict | str], sample: int = 0) -> str:
    return "".join(e.get("text", "") for e in events if isinstance(e, dict) and e.get("sample") == sample)


def test_health_model_and_a_self_contained_page(client: TestClient):
    assert client.get("/health").json() == {"status": "ok", "active": 0, "streams": 0, "max_streams": 256}
    info = client.get("/v1/model").json()
    assert info["cell"] == "lstm" and info["hidden_size"] == 48 and info["num_layers"] == 2
    assert info["vocab_size"] == len(set(TEXT)) == len(info["vocab"])
    assert info["corpus"] == "synthetic.txt" and info["step"] == 0 and info["val_loss"] is None
    assert info["limits"]["max_length"] == 10_000 and info["parameters"] > 0
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert not re.search(r"https?://", page.text), "the page must not load anything from elsewhere"
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page.text)  # everything inline
    for needed in ("/v1/generate", "/v1/score", "/v1/model", "getReader", "AbortController"):
        assert needed in page.text


def test_generate_gives_the_librarys_text_as_json_and_as_a_stream(client: TestClient, ckpt: Path):
    request = {"prefix": "the river", "length": 120, "seed": 3, "temperature": 0.8, "top_p": 0.9}
    answer = client.post("/v1/generate", json=request).json()
    # Usually equal bit for bit to charrnn generate (only a last-bit near-tie between two characters could differ,
    # see serve/batcher.py); on this model and seed it is.
    library = charrnn.load(ckpt, device="cpu").generate("the river", 120, seed=3, temperature=0.8, top_p=0.9)
    assert answer == {"samples": [{"text": library.removeprefix("the river"), "finish_reason": "length"}], "seed": 3}
    stream = client.post("/v1/generate", json={**request, "stream": True})
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = sse_events(stream.text)
    assert streamed_text(events) == answer["samples"][0]["text"]
    assert events[-2:] == [{"sample": 0, "finish_reason": "length", "seed": 3}, "[DONE]"]


def test_several_samples_stop_strings_and_a_random_seed(client: TestClient):
    whole = client.post("/v1/generate", json={"length": 100, "seed": 9, "num_samples": 3}).json()
    stop = whole["samples"][1]["text"][20:22]
    cut = client.post("/v1/generate", json={"length": 100, "seed": 9, "num_samples": 3, "stop": stop}).json()
    assert [s["text"] for s in cut["samples"]] == [cut_at_stop(s["text"], [stop])[0] for s in whole["samples"]]
    assert cut["samples"][1]["finish_reason"] == "stop"
    streamed = sse_events(client.post("/v1/generate", json={"length": 100, "seed": 9, "num_samples": 3,
                                                            "stop": [stop], "stream": True}).text)
    assert [streamed_text(streamed, i) for i in range(3)] == [s["text"] for s in cut["samples"]]
    unseeded = client.post("/v1/generate", json={"length": 30, "stop": None}).json()  # null: no stop strings
    again = client.post("/v1/generate", json={"length": 30, "seed": unseeded["seed"]}).json()
    assert again == unseeded  # the seed it chose is given back, and reproduces the text
    seeds = [client.post("/v1/generate", json={"length": 1}).json()["seed"] for _ in range(3)]
    assert max(seeds) < 2**53  # what a JavaScript number holds exactly, so the page can send it back


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "the request body is not valid JSON"),
    (b"[1, 2]", 400, "the request body must be a JSON object"),
    (b'{"prefix": "' + b"x" * 20_000 + b'"}', 413, "the request body is larger than 10000 bytes"),
    ({"temprature": 0.5}, 400, "unknown field 'temprature' (known fields: greedy, length, num_samples, prefix, seed, "
                               "stop, stream, temperature, top_k, top_p)"),
    ({"temperature": 0}, 400, "temperature must be > 0, not 0.0 (use --greedy for the most likely text)"),
    ({"temperature": "hot"}, 400, "temperature must be a number, not 'hot'"),
    ({"top_k": 0}, 400, "top_k must be at least 1, not 0"),
    ({"top_p": 1.5}, 400, "top_p must be in (0, 1], not 1.5"),
    ({"length": -1}, 400, "length must be >= 0, not -1"),
    ({"length": "10"}, 400, "length must be a whole number, not '10'"),
    ({"length": 10**6}, 400, "length must be at most 10000 on this server, not 1000000"),
    ({"num_samples": 0}, 400, "num_samples must be at least 1, not 0"),
    ({"num_samples": 17}, 400, "num_samples must be at most 16 on this server, not 17"),
    ({"prefix": "a" * 4097}, 400, "the prefix is 4097 characters long; this server takes at most 4096"),
    ({"prefix": "日本 the"}, 400, "the prefix has 2 character(s) the model has never seen: '日' (U+65E5), '本'"),
    ({"seed": -1}, 400, "seed must be a whole number from 0 to 2**63 - 1, not -1"),
    ({"greedy": "yes"}, 400, "greedy must be true or false, not 'yes'"),
    ({"stop": [""]}, 400, "a stop string must be non-empty text, not ''"),
    ({"temperature": 10**400}, 400, "temperature is out of range"),
    ({"top_p": 10**400}, 400, "top_p is out of range"),
])
def test_bad_generate_requests_are_4xx_json_errors(client: TestClient, body, status: int, message: str):
    if isinstance(body, bytes):
        response = client.post("/v1/generate", content=body)
    else:
        response = client.post("/v1/generate", json=body)
    assert response.status_code == status
    assert message in response.json()["error"]


@pytest.mark.parametrize("method, path, body, status, message", [
    ("POST", "/v1/score", {"text": "a"}, 400, "text must be at least 2 characters long"),
    ("POST", "/v1/score", {"text": "the ✓ river"}, 400, "the text has 1 character(s) the model has never seen: '✓'"),
    ("POST", "/v1/score", {"text": "the river", "top": 11}, 400, "top must be from 0 to 10, not 11"),
    ("GET", "/v1/generate", None, 405, "Method Not Allowed"),
    ("GET", "/nowhere", None, 404, "Not Found"),
])
def test_other_refusals_are_json_errors(client: TestClient, method: str, path: str, body, status: int, message: str):
    response = client.request(method, path, json=body)
    assert response.status_code == status and message in response.json()["error"]


def test_score_gives_every_characters_surprisal_and_top_guesses(client: TestClient, ckpt: Path):
    text = TEXT[:300]
    scored = client.post("/v1/score", json={"text": text, "top": 5}).json()
    assert scored["chars"] == len(text) - 1 and scored["text"] == text
    assert scored["loss"] == pytest.approx(charrnn.load(ckpt, device="cpu").score(text).loss, rel=1e-5)
    assert scored["bpc"] == pytest.approx(scored["loss"] / math.log(2))
    assert scored["bits"][0] is None and scored["top"][0] is None and len(scored["bits"]) == len(text)
    assert sum(scored["bits"][1:]) / (len(text) - 1) == pytest.approx(scored["bpc"], rel=1e-4)
    for i in range(1, len(text)):
        guesses = scored["top"][i]
        probs = [p for _, p in guesses]
        assert len(guesses) == 5 and probs == sorted(probs, reverse=True)
        if text[i] in dict(guesses):  # the surprisal is -log2 of the probability the guesses give that character
            assert scored["bits"][i] == pytest.approx(-math.log2(dict(guesses)[text[i]]), abs=1e-3)


def test_the_model_description_is_json_whatever_the_checkpoint_says(ckpt: Path):
    """A corpus named in bytes that are not UTF-8 and a validation loss of NaN (a hand-edited meta.json) would
    make every GET /v1/model a 500: JSON has no NaN, and its UTF-8 no lone surrogate."""
    found = checkpoint.find(ckpt, Path("runs"))
    meta = dataclasses.replace(found.meta, corpus=dataclasses.replace(found.meta.corpus, path="/x/caf\udce9.txt"),
                               metrics=dataclasses.replace(found.meta.metrics, val_loss=math.nan))
    info = describe(dataclasses.replace(found, meta=meta), found.load_model("cpu"), Limits())
    assert info["corpus"] == "caf\ufffd.txt" and info["val_loss"] is None and info["val_bpc"] is None
    json.dumps(info, allow_nan=False, ensure_ascii=False).encode("utf-8")  # as Starlette renders it


def test_texts_to_score_wait_in_a_bounded_queue_and_get_json_at_shutdown(ckpt: Path):
    """Scoring runs on the decoding thread and holds up every stream: past ``max_calls`` waiting, a 429; those
    still waiting when the server stops get a JSON 503, not a bare 500."""
    server = make_server(ckpt)
    server.batcher.max_calls = 2
    gate = threading.Event()
    with TestClient(create_app(server)) as c, ThreadPoolExecutor(2) as pool:
        try:
            server.batcher.call(gate.wait)  # the decoding thread, busy
            while server.batcher._calls:  # taken off the queue: running
                time.sleep(0.01)
            waiting = [server.batcher.call(lambda: None) for _ in range(2)]
            full = pool.submit(c.post, "/v1/score", json={"text": TEXT[:50]}).result(timeout=30)
            assert full.status_code == 429 and full.headers["retry-after"] == "1"
            assert full.json()["error"] == "the server is busy: 2 texts are waiting to be scored; try again shortly"
            server.batcher.max_calls = 3
            late = pool.submit(c.post, "/v1/score", json={"text": TEXT[:50]})
            while len(server.batcher._calls) < 3:  # queued behind the other two
                time.sleep(0.01)
            stopping = pool.submit(server.stop)
        finally:
            gate.set()
        stopping.result(timeout=30)
        assert late.result(timeout=30).status_code == 503
        assert late.result().json() == {"error": "the server is shutting down"}
        assert all(isinstance(w.exception(), Busy) for w in waiting)


def test_a_text_whose_caller_gave_up_does_not_stop_the_shutdown(ckpt: Path):
    server = make_server(ckpt)  # its decoding thread not started: close() finishes everything itself
    gave_up, waiting = server.batcher.call(lambda: None), server.batcher.call(lambda: None)
    gave_up.cancel()  # as asyncio does to the future of a request it cancels
    server.batcher.close("shutdown")
    assert gave_up.cancelled() and isinstance(waiting.exception(), Busy)


def test_a_full_server_answers_429(ckpt: Path):
    server = make_server(ckpt, Limits(max_streams=2))
    with TestClient(create_app(server)) as c:
        more = c.post("/v1/generate", json={"length": 5, "num_samples": 3})  # more than ever run at once: not 429
        assert more.status_code == 400 and c.get("/v1/model").json()["limits"]["max_samples"] == 2
        assert more.json()["error"] == "num_samples must be at most 2 on this server, not 3"
        busy = server.batcher.submit(Job(torch.tensor([1]), 10_000, Sampling(), seed=1, num_samples=2))
        response = c.post("/v1/generate", json={"length": 5})
        assert response.status_code == 429 and response.headers["retry-after"] == "1"
        assert response.json()["error"].startswith("the server is busy: 2 streams are running")
        busy.cancel()
        assert c.post("/v1/generate", json={"length": 5}).status_code == 200


# -- a real server on a thread: real streaming, concurrency and disconnection ---------------------------------------

@pytest.fixture(scope="module")
def served(ckpt: Path) -> Iterator[tuple[str, Server]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = make_server(ckpt)
    web = uvicorn.Server(uvicorn.Config(create_app(server), log_level="warning"))
    thread = threading.Thread(target=web.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not web.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    web.should_exit = True
    thread.join(10)


@pytest.fixture
def live(served: tuple[str, Server]) -> str:
    return served[0]


def stream(url: str, request: dict) -> str:
    with httpx.stream("POST", f"{url}/v1/generate", json={**request, "stream": True}, timeout=60) as response:
        return streamed_text(sse_events(response.read().decode()))


def test_the_same_seed_gives_the_same_text_alone_and_among_concurrent_streams(live: str):
    mine = {"prefix": "the stone", "length": 300, "seed": 42, "temperature": 0.9}
    alone = stream(live, mine)
    others = [{"length": 100 + 40 * i, "seed": i, "num_samples": 1 + i % 3, "top_k": 5} for i in range(7)]
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(stream, live, r) for r in others[:4]]
        mine_under_load = pool.submit(stream, live, mine)
        futures += [pool.submit(stream, live, r) for r in others[4:]]
        assert mine_under_load.result() == alone and all(len(f.result()) > 0 for f in futures)


def test_a_client_that_disconnects_frees_its_slot_at_once(served: tuple[str, Server],
                                                        monkeypatch: pytest.MonkeyPatch):
    url, server = served
    step = server.batcher.lanes.step
    monkeypatch.setattr(server.batcher.lanes, "step", lambda tokens: (time.sleep(0.001), step(tokens))[1])
    with httpx.Client(base_url=url, timeout=60) as http:  # 10,000 steps now take more than 10 s
        with http.stream("POST", "/v1/generate", json={"length": 10_000, "stream": True}) as response:
            lines = response.iter_lines()  # kept: closing it would close the connection
            assert next(lines).startswith('data: {"sample": 0, "text": ')  # the stream has started
            assert http.get("/health").json()["active"] == 1
        wait_until_idle(http)
        with pytest.raises(httpx.ReadTimeout):  # a client that gives up on a JSON answer and hangs up
            http.post("/v1/generate", json={"length": 10_000}, timeout=0.5)
        wait_until_idle(http)


def wait_until_idle(http: httpx.Client) -> None:
    deadline = time.monotonic() + 10
    while http.get("/health").json()["active"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert http.get("/health").json() == {"status": "ok", "active": 0, "streams": 0, "max_streams": 256}


# -- the command ------------------------------------------------------------------------------------------------

def test_serve_command_errors(ckpt: Path, monkeypatch: pytest.MonkeyPatch):
    runner = CliRunner()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(cli_app, ["serve", "--checkpoint", str(ckpt), "--port", str(port)])
    assert result.exit_code == 2 and f"Error: cannot listen on 127.0.0.1:{port}: " in result.stderr
    assert "pass another --port" in result.stderr and "Traceback" not in result.output
    result = runner.invoke(cli_app, ["serve", "--checkpoint", str(ckpt), "--max-streams", "0"])
    assert result.exit_code == 2 and "Error: --max-streams must be at least 1, not 0" in result.stderr
    result = runner.invoke(cli_app, ["serve", "--checkpoint", str(ckpt), "--host", "no-such-host.invalid"])
    assert result.exit_code == 2 and "Error: cannot listen on no-such-host.invalid: " in result.stderr
    assert result.stderr.rstrip().endswith("; pass another --host")
    result = runner.invoke(cli_app, ["serve", "--checkpoint", str(ckpt), "--port", "70000"])
    assert result.exit_code == 2 and "Error: --port must be from 0 to 65535, not 70000" in result.stderr
    monkeypatch.setattr("charrnn.serve.app.serve_forever", lambda *args, **kwargs: None)  # returns at once
    result = runner.invoke(cli_app, ["serve", "--checkpoint", str(ckpt), "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 0 and re.search(r"Warning: listening on 0\.0\.0\.0: anyone who can reach this machine "
                                               r"on port \d+ can use the model \(there is no authentication\)",
                                               result.stderr)
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the serve extra were not installed
    monkeypatch.delitem(sys.modules, "charrnn.serve.app")
    result = runner.invoke(cli_app, ["serve", "--checkpoint", str(ckpt)])
    assert result.exit_code == 2
    assert "Error: charrnn serve needs the serve extra (uvicorn is not installed): pip install " in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_streams_cleanly_and_the_server_exits_0(ckpt: Path, signum: int):
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", "--checkpoint", str(ckpt), "--port", "0"],
                            env=env(), stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if line.startswith("serving on "):
                url = line.split()[2].rstrip("/")
                break
        else:
            raise AssertionError("the server did not start")
        with httpx.stream("POST", f"{url}/v1/generate", json={"length": 10_000, "stream": True}, timeout=30) as r:
            lines = r.iter_lines()
            next(lines)
            os.kill(proc.pid, signum)
            events = sse_events("\n".join(lines))
        assert events[-2:] == [{"sample": 0, "finish_reason": "shutdown", "seed": events[-2]["seed"]}, "[DONE]"]
        assert proc.wait(30) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        proc.kill()


@pytest.mark.slow
def test_the_page_in_a_real_browser(ckpt: Path, tmp_path: Path):
    pytest.importorskip("playwright", reason="the browser check needs `pip install playwright` (not in .[test])")
    if not any(Path(p).exists() for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium")):
        pytest.skip("no Chromium: sudo apt-get install chromium")
    result = subprocess.run([sys.executable, "bench/browser_serve.py", str(tmp_path / "page.png"), "--checkpoint",
                             str(ckpt), "--prefix", "the stone", "--score-text", TEXT[:80]], cwd=ROOT, env=env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = [json.loads(line) for line in result.stdout.splitlines()]
    assert seen[-1]["server_exit_code"] == 0 and (tmp_path / "page.png").stat().st_size > 10_000


def test_the_error_table_in_serving_md_quotes_the_code():
    from tests.test_docs import DOCS, code_text  # the same check as for errors.md, field names varying too
    text, missing = code_text(), []
    fields = r"\b(length|num_samples|temperature|top_k|top_p|greedy|seed|top|text|prefix|stream|stop)\b"
    varies = re.compile(rf"{VARIES_DOCS_RE.pattern}|{fields}")
    rows = re.findall(r"^\| [^|]* \| \d{3}[^|]* \| (.*) \|$", (DOCS / "serving.md").read_text(encoding="utf-8"), re.M)
    assert len(rows) >= 12
    for message in (m for row in rows for m in re.findall(r"`([^`]*)`", row)):
        for chunk in varies.split(message):
            chunk = (chunk or "").strip(" ;:,")
            if len(chunk.split()) >= 4 and chunk not in text:
                missing.append(f"{chunk!r} (in {message!r})")
    assert not missing, "docs/serving.md quotes messages the code no longer gives:\n" + "\n".join(missing)
