"""The HTTP application (Starlette): routes, server-sent events, JSON errors. The only module that knows the web.

    GET  /              the web page (page.html: self-contained, no network)
    GET  /health        {"status", "active", "streams", "max_streams"}
    GET  /v1/model      the model's description and this server's limits
    POST /v1/generate   JSON in; JSON out, or server-sent events with "stream": true
    POST /v1/score      JSON in; loss, bits per character, per-character surprisal and top guesses

The decoding runs on the batcher's own thread; the event loop only parses, waits and writes. The batcher tells
the loop of new output through one callback per step, and at most one wake-up is ever queued on the loop, however
many streams are running. A request whose client goes away is cancelled at once (its slot stops counting in
/health, and its rows leave the batch at the next step).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from charrnn.model import CharRNN
from charrnn.serve.batcher import Batcher, Busy, Slot
from charrnn.serve.protocol import Limits, RequestError, parse_generate, parse_json, parse_score
from charrnn.serve.scoring import score_text
from charrnn.vocab import Vocab

# The page may run its own inline script and talk to this server, and nothing else.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
               "img-src data:; base-uri 'none'; form-action 'none'")


def error(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers=headers)


class Waker:
    """Wakes the readers of slots with new output: called on the decoding thread, runs on the event loop. At most
    one wake-up is queued on the loop at a time, and wake-ups come at most every ``interval`` seconds, longer as more
    streams run (``interval`` per ``streams_per_interval``), so that under load each server-sent event carries
    several characters and the loop, which writes the events, keeps time to spare."""

    def __init__(self, streams: Callable[[], int], interval: float = 0.005, streams_per_interval: int = 16) -> None:
        self.streams, self.interval, self.per = streams, interval, streams_per_interval
        self.loop: asyncio.AbstractEventLoop | None = None
        self.events: dict[Slot, asyncio.Event] = {}
        self._lock = threading.Lock()
        self._pending: set[Slot] = set()
        self._queued = False
        self._last = float("-inf")

    def __call__(self, slots: list[Slot]) -> None:
        with self._lock:
            self._pending.update(slots)
            if self._queued or self.loop is None:
                return
            self._queued = True
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
            self.loop.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        wait = self._last + self.interval * max(1, self.streams() / self.per) - self.loop.time()
        if wait > 0:
            self.loop.call_later(wait, self._wake)
        else:
            self._wake()

    def _wake(self) -> None:
        self._last = self.loop.time()
        with self._lock:
            slots, self._pending, self._queued = self._pending, set(), False
        for slot in slots:
            event = self.events.get(slot)
            if event is not None:
                event.set()


class SlotStream(StreamingResponse):
    """Server-sent events of one slot; however the response ends (finished, client gone, server stopping), the
    slot is cancelled if it has not finished."""

    def __init__(self, slot: Slot, body: AsyncIterator[str]) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.slot.done:
                self.slot.cancel()


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class Server:
    """The state one application holds: the model, its batcher and the page."""

    def __init__(self, model: CharRNN, vocab: Vocab, info: dict[str, Any], limits: Limits, batcher: Batcher) -> None:
        self.model, self.vocab, self.limits, self.batcher = model, vocab, limits, batcher
        self.info = {**info, "decoding": {"lanes": batcher.lanes.lanes, "one_product": batcher.lanes.one_call,
                                          "one_request_at_a_time": batcher.max_running == 1}}
        self.waker = Waker(lambda: batcher.streams)
        batcher.notify = self.waker
        self.page = resources.files("charrnn.serve").joinpath("page.html").read_text(encoding="utf-8")
        self.stopping = False

    async def read_body(self, request: Request) -> dict[str, Any]:
        """The JSON body, read no further than the size limit (whatever Content-Length claims)."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limits.max_body:
                raise RequestError(f"the request body is larger than {self.limits.max_body} bytes", 413)
            chunks.append(chunk)
        return parse_json(b"".join(chunks))

    async def page_route(self, request: Request) -> Response:
        return HTMLResponse(self.page, headers={"Content-Security-Policy": PAGE_POLICY})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "stopping" if self.stopping else "ok", "active": self.batcher.active,
                             "streams": self.batcher.streams, "max_streams": self.limits.max_streams})

    async def model_route(self, request: Request) -> Response:
        return JSONResponse(self.info)

    async def generate(self, request: Request) -> Response:
        try:
            job, stream = parse_generate(await self.read_body(request), self.vocab, self.limits)
            slot = self.batcher.submit(job)
        except RequestError as e:
            return error(str(e), e.status)
        except Busy as e:
            return error(str(e), 503 if self.stopping else 429, {"Retry-After": "1"})
        event = asyncio.Event()
        self.waker.events[slot] = event
        if stream:
            return SlotStream(slot, self._events(slot, event))
        try:
            return await self._collect(request, slot, event)
        finally:
            self.waker.events.pop(slot, None)
            if not slot.done:
                slot.cancel()

    async def _events(self, slot: Slot, event: asyncio.Event) -> AsyncIterator[str]:
        """{"sample": i, "text": ...} as text is produced, {"sample": i, "finish_reason": ..., "seed": ...} as each
        sample ends, then [DONE]."""
        told = [False] * slot.job.num_samples
        try:
            while True:
                await event.wait()
                event.clear()
                texts, reasons = slot.take()
                out = [sse({"sample": i, "text": t}) for i, t in enumerate(texts) if t]
                for i, reason in enumerate(reasons):
                    if reason is not None and not told[i]:
                        told[i] = True
                        out.append(sse(self._finished(slot, i, reason)))
                if all(told):
                    out.append("data: [DONE]\n\n")
                if out:
                    yield "".join(out)
                if all(told):
                    return
        finally:
            self.waker.events.pop(slot, None)

    def _finished(self, slot: Slot, sample: int, reason: str) -> dict[str, Any]:
        end = {"sample": sample, "finish_reason": reason, "seed": slot.job.seed}
        if reason == "error":
            end["error"] = slot.error
        return end

    async def _collect(self, request: Request, slot: Slot, event: asyncio.Event) -> Response:
        texts = [""] * slot.job.num_samples

        async def finish() -> list[str | None]:
            while True:
                await event.wait()
                event.clear()
                new, reasons = slot.take()
                for i, t in enumerate(new):
                    texts[i] += t
                if all(r is not None for r in reasons):
                    return reasons

        async def gone() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        done_task, gone_task = asyncio.ensure_future(finish()), asyncio.ensure_future(gone())
        try:
            await asyncio.wait({done_task, gone_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (done_task, gone_task):
                task.cancel()
        if not done_task.done() or done_task.cancelled():
            return Response(status_code=499)  # the client left; nobody reads this
        reasons = done_task.result()
        if "error" in reasons:
            return error(slot.error or "generation failed", 500)
        samples = [{"text": t, "finish_reason": r} for t, r in zip(texts, reasons, strict=True)]
        return JSONResponse({"samples": samples, "seed": slot.job.seed})

    async def score(self, request: Request) -> Response:
        try:
            text, tokens, top = parse_score(await self.read_body(request), self.vocab, self.limits)
            future = self.batcher.call(lambda: score_text(self.model, self.vocab, text, tokens, top))
            return JSONResponse(await asyncio.wrap_future(future))
        except RequestError as e:
            return error(str(e), e.status)
        except Busy as e:
            return error(str(e), 503 if self.stopping else 429, {"Retry-After": "1"})

    def stop(self) -> None:
        """Shutting down: end every stream now (each sample finishes with "shutdown"), refuse new requests."""
        self.stopping = True
        self.batcher.close("shutdown")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.detail, exc.status_code, exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return error(f"internal error: {type(exc).__name__}", 500)


def create_app(server: Server, on_ready: Callable[[], None] | None = None) -> Starlette:
    """The Starlette application around ``server``; its batcher runs while the application does."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server.waker.loop = asyncio.get_running_loop()
        server.batcher.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            server.stop()

    routes = [
        Route("/", server.page_route),
        Route("/health", server.health),
        Route("/v1/model", server.model_route),
        Route("/v1/generate", server.generate, methods=["POST"]),
        Route("/v1/score", server.score, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error, Exception: _server_error})
    app.state.server = server
    return app


class _Graceful(uvicorn.Server):
    """uvicorn's server, which on SIGINT/SIGTERM first ends every stream, so that the connections close at once
    and the shutdown that follows has nothing to wait for."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.on_exit()
        super().handle_exit(sig, frame)


def serve_forever(server: Server, sock: socket.socket, on_ready: Callable[[], None] | None = None) -> None:
    """Serve on a bound socket until SIGINT or SIGTERM (uvicorn raises the signal again afterwards, to the handler
    it replaced: the caller decides what that does)."""
    config = uvicorn.Config(create_app(server, on_ready), log_level="warning", timeout_graceful_shutdown=5)
    _Graceful(config, server.stop).run(sockets=[sock])
