"""charrnn serve: an HTTP server (and web page) for a trained model; see charrnn/serve/ and docs/serving.md."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
from collections.abc import Iterator
from typing import Annotated

import typer

from charrnn import devices
from charrnn.cli.common import CheckpointOption, DeviceOption, app, load, user_errors
from charrnn.cli.views import say
from charrnn.errors import CharRNNError


@app.command(name="serve")
@user_errors
def serve_cmd(
    checkpoint_path: CheckpointOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    device: DeviceOption = "auto",
    max_streams: Annotated[int, typer.Option(help="Samples generated at once, all requests together.")] = 256,
    max_length: Annotated[int, typer.Option(help="Characters one sample may ask for.")] = 10_000,
    max_prefix: Annotated[int, typer.Option(help="Characters of prefix one request may give.")] = 4096,
    max_samples: Annotated[int, typer.Option(help="Samples one request may ask for.")] = 16,
    no_batching: Annotated[bool, typer.Option(
        "--no-batching", help="Generate for one request at a time (the baseline for bench/serve_load.py).")] = False,
) -> None:
    """Serve a trained model over HTTP: a JSON API (generate, stream, score) and a web page at /."""
    try:
        from charrnn.serve.app import Server, serve_forever
        from charrnn.serve.batcher import Batcher
        from charrnn.serve.protocol import Limits, describe
    except ImportError as e:
        raise CharRNNError(f"charrnn serve needs the serve extra ({e.name} is not installed): "
                           "pip install 'charrnn[serve]'") from None
    limits = Limits(max_prefix=max_prefix, max_length=max_length, max_samples=max_samples, max_streams=max_streams)
    devices.set_threads(1)  # one thread keeps each stream's arithmetic independent of the others (serve/lanes.py)
    with contextlib.closing(_listen(host, port)) as sock:  # a port already taken fails before the model loads
        ckpt, model, _ = load(checkpoint_path, device)
        model.eval()
        url = f"http://{_url_host(host)}:{sock.getsockname()[1]}/"
        batcher = Batcher(model, ckpt.vocab, max_streams=max_streams, max_running=1 if no_batching else None,
                          lanes=1 if no_batching else None)
        server = Server(model, ckpt.vocab, describe(ckpt, model, limits), limits, batcher)
        with _signals_end_quietly():
            serve_forever(server, sock, on_ready=lambda: say(f"serving on {url} (Ctrl-C stops)"))
    say("stopped")


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (uvicorn listens on it), or a one-line error."""
    if not 0 <= port <= 65535:
        raise CharRNNError(f"--port must be from 0 to 65535, not {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise CharRNNError(f"cannot listen on {host}: {e.strerror}; pass another --host") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise CharRNNError(f"cannot listen on {host}:{port}: {e.strerror}; pass another --port") from None
    with contextlib.suppress(ValueError):
        if not ipaddress.ip_address(address[0]).is_loopback:
            say(f"Warning: listening on {host}: anyone who can reach this machine on port {sock.getsockname()[1]} "
                "can use the model (there is no authentication)")
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@contextlib.contextmanager
def _signals_end_quietly() -> Iterator[None]:
    """uvicorn stops gracefully on SIGINT/SIGTERM and then raises the signal again, to the handler it found; this
    makes that handler a quiet one, so that a stopped server exits 0."""
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
