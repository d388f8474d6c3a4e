"""The decoding loop that serves many requests with one model: each request is a ``Slot`` (its rows of the shared
batch, its own sampling settings and random generator, its stop strings and its output so far); one thread owns
the model and, step by step, admits waiting requests, samples one character for every running stream, hands the
characters to their slots, retires the finished or cancelled ones at once, and advances all rows together.

A request's text depends only on the request: its prefix runs alone (batch 1), its random numbers come from its
own generator, drawn exactly as ``sample.generate`` draws them, rows are sampled with ``sample.next_token`` (row by
row the same whatever the other rows), and the network step is ``LaneStep``, whose rows do not see each other.
So the same seed gives the same text alone or under any load. (``charrnn generate`` runs one stream through a
matrix-vector product instead, whose last bits can differ, so there the same seed gives the same text except
where a last-bit difference decides a near-tie.)

No web code lives here: the server (app.py) submits ``Job``s and reads slots; tests drive ``step()`` directly.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch

from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.sample import Sampling, gumbel, next_token, noise_steps, warm_up
from charrnn.serve.lanes import LaneStep
from charrnn.stop import StopMatcher
from charrnn.vocab import Vocab

SLOT_NOISE = 1 << 16  # random numbers drawn at once per slot (256 KiB)


class Busy(CharRNNError):
    """No room for another request now (too many streams), or the server is shutting down."""


# calls (texts to score) waiting at once: each runs on the decoding thread between two steps, and holds up every
# stream while it runs (a text of 20,000 characters takes ~0.1-1 s on a CPU thread)
MAX_CALLS = 16


@dataclass(frozen=True)
class Job:
    """What one request asks for, already checked (protocol.py): continue ``prefix_ids`` (P,) int64, P >= 1."""

    prefix_ids: torch.Tensor
    length: int
    how: Sampling
    seed: int
    num_samples: int = 1
    stops: tuple[str, ...] = ()


class Slot:
    """One request in the batch. The decoding thread writes its output; the request's reader calls ``take``."""

    def __init__(self, job: Job, batcher: Batcher) -> None:
        self.job, self._batcher = job, batcher
        self.rows: list[int] = []  # this request's rows in the batch, one per sample
        self.steps = 0  # characters sampled per sample so far
        self.last_tokens: list[int] = []  # the characters sampled at the last step, one per sample
        self.generator: torch.Generator | None = None
        self.noise: torch.Tensor | None = None  # (b, N, V) Gumbel noise for the current block of b steps
        self.matchers = [StopMatcher(job.stops) for _ in range(job.num_samples)]
        self.finish_reasons: list[str | None] = [None] * job.num_samples
        self.error: str | None = None
        self.cancelled = False
        self._lock = threading.Lock()
        self._new: list[list[str]] = [[] for _ in range(job.num_samples)]
        self._ready = threading.Event()

    @property
    def done(self) -> bool:
        """Every sample has finished (or the request was cancelled)."""
        return self.cancelled or all(r is not None for r in self.finish_reasons)

    def take(self) -> tuple[list[str], list[str | None]]:
        """The text each sample produced since the last call, and each sample's finish reason (None while it
        runs): "length", "stop", "shutdown" or "error"."""
        with self._lock:
            new, self._new = self._new, [[] for _ in self._new]
            self._ready.clear()
            return ["".join(pieces) for pieces in new], list(self.finish_reasons)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until there is new output or the request is done (for readers that are not async)."""
        return self._ready.wait(timeout)

    def cancel(self) -> None:
        """The reader went away: the slot stops counting at once, and its rows are freed at the next step."""
        self.cancelled = True
        self._batcher._forget(self)

    def _emit(self, sample: int, text: str, finish: str | None = None) -> None:
        with self._lock:
            if text:
                self._new[sample].append(text)
            if finish is not None and self.finish_reasons[sample] is None:
                self.finish_reasons[sample] = finish
            self._ready.set()


Notify = Callable[[list[Slot]], None]


class Batcher:
    """Owns the model; ``submit`` a Job from any thread and read its Slot; ``start()`` runs the loop in a thread
    (or call ``step()`` yourself). ``max_streams`` bounds the samples admitted at once (running or waiting);
    ``max_running`` the requests decoded together (1: one request at a time, the baseline a naive server gives).
    ``notify`` hears, once per step and on the decoding thread, of the slots with new output."""

    def __init__(self, model: CharRNN, vocab: Vocab, *, max_streams: int = 256, max_running: int | None = None,
                 lanes: int | None = None, notify: Notify | None = None, max_calls: int = MAX_CALLS) -> None:
        self.model, self.vocab = model.eval(), vocab
        self.device = model.embed.weight.device
        self.max_streams, self.max_running, self.max_calls = max_streams, max_running, max_calls
        self.notify = notify
        self.lanes = LaneStep(model, lanes)
        self.last = torch.zeros(0, model.config.vocab_size, device=self.device)  # (R, V) next-character logits
        self.owner: list[Slot | None] = []  # by row
        self.running: list[Slot] = []  # decoding thread only
        self._cond = threading.Condition()
        self._waiting: list[Slot] = []
        self._admitted: set[Slot] = set()  # waiting or running, not cancelled: what /health counts
        self._calls: list[tuple[Callable[[], Any], Future]] = []
        self._closing: str | None = None
        self._thread: threading.Thread | None = None

    # -- any thread --------------------------------------------------------------------------------------------

    def submit(self, job: Job) -> Slot:
        """Queue a request; it joins the batch at the next step. Raises Busy when it would exceed max_streams."""
        slot = Slot(job, self)
        with self._cond:
            if self._closing:
                raise Busy("the server is shutting down")
            streams = sum(s.job.num_samples for s in self._admitted)
            if streams + job.num_samples > self.max_streams:
                raise Busy(f"the server is busy: {streams} streams are running and it takes at most "
                           f"{self.max_streams} at once; try again shortly")
            self._admitted.add(slot)
            self._waiting.append(slot)
            self._cond.notify()
        return slot

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` on the decoding thread between two steps (the model is used by one thread only)."""
        future: Future = Future()
        with self._cond:
            if self._closing:
                raise Busy("the server is shutting down")
            if len(self._calls) >= self.max_calls:  # each holds up every stream while it runs
                raise Busy(f"the server is busy: {len(self._calls)} texts are waiting to be scored; try again shortly")
            self._calls.append((fn, future))
            self._cond.notify()
        return future

    @property
    def active(self) -> int:
        """Requests admitted and not yet finished or cancelled."""
        with self._cond:
            return len(self._admitted)

    @property
    def streams(self) -> int:
        """Samples being generated (or waiting to be)."""
        with self._cond:
            return sum(s.job.num_samples for s in self._admitted)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="charrnn-decoder", daemon=True)
        self._thread.start()

    def close(self, reason: str = "shutdown", timeout: float | None = 10) -> None:
        """End every request (its samples finish with ``reason``), stop the loop and wait for it."""
        with self._cond:
            self._closing = reason
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self._finish_all(reason)

    def _forget(self, slot: Slot) -> None:
        with self._cond:
            self._admitted.discard(slot)
            self._cond.notify()

    # -- the decoding thread -----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or self._calls or self.running or self._closing):
                    self._cond.wait()
                closing = self._closing
            if closing:
                self._finish_all(closing)
                return
            self.step()

    @torch.inference_mode()
    def step(self) -> bool:
        """Run waiting calls, admit waiting requests, and advance every running request by one character.
        Returns whether any request is still running or waiting."""
        self._run_calls()
        try:
            self._admit()
            changed = self._advance()
        except Exception as e:  # noqa: BLE001 - a bug must end the requests, not the server's only decoder
            traceback.print_exc()
            changed = self._fail_running(f"generation failed: {e}")
        if changed and self.notify is not None:
            self.notify(changed)
        with self._cond:
            return bool(self.running or self._waiting)

    def _run_calls(self) -> None:
        with self._cond:
            calls, self._calls = self._calls, []
        for fn, future in calls:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    future.set_exception(e)

    def _admit(self) -> None:
        """Move waiting requests into the batch (as far as max_running allows): run each prefix once, alone."""
        while True:
            with self._cond:
                self._waiting = [s for s in self._waiting if not s.cancelled]
                if not self._waiting or (self.max_running is not None and len(self.running) >= self.max_running):
                    return
                slot = self._waiting.pop(0)
            job = slot.job
            if job.length == 0:
                self._finish(slot, "length")
                continue
            try:
                last, state = warm_up(self.model, job.prefix_ids)  # (1, V), batch-1 state
            except Exception as e:  # noqa: BLE001 - this request fails, the others go on
                traceback.print_exc()
                slot.error = f"generation failed: {e}"
                self._finish(slot, "error")
                continue
            slot.rows = self._take_rows(slot, job.num_samples)
            self.lanes.set_rows(slot.rows, state)
            self.last[slot.rows] = last.to(self.last.dtype)
            slot.generator = torch.Generator(self.device).manual_seed(job.seed)
            self.running.append(slot)

    def _advance(self) -> list[Slot]:
        """Sample a character for every running stream, deliver it, retire finished slots, step the network."""
        self._retire([s for s in self.running if s.cancelled])
        if not self.running:
            return []
        changed, finished = [], []
        for how, group in self._groups().items():
            rows = [r for slot in group for r in slot.rows]
            noise = None if how.greedy else torch.cat([self._noise(slot) for slot in group])  # (n, V)
            tokens = next_token(self.last[rows], how, None, noise).tolist()
            at = 0
            for slot in group:
                self._deliver(slot, tokens[at:at + len(slot.rows)])
                at += len(slot.rows)
                changed.append(slot)
                if slot.done:
                    finished.append(slot)
        self._retire(finished)
        if self.running:
            tokens = [0] * self.lanes.rows  # free rows read character 0; their results are never used
            for slot in self.running:
                for row, token in zip(slot.rows, slot.last_tokens, strict=True):
                    tokens[row] = token
            self.last = self.lanes.step(torch.tensor(tokens, device=self.device))
        return changed

    def _groups(self) -> dict[Sampling, list[Slot]]:
        """Running slots by sampling settings: one next_token call per group."""
        groups: dict[Sampling, list[Slot]] = {}
        for slot in self.running:
            groups.setdefault(slot.job.how, []).append(slot)
        return groups

    def _noise(self, slot: Slot) -> torch.Tensor:
        """This step's Gumbel noise (N, V) for a slot, drawn in blocks as sample.generate draws it (blocks of at
        most SLOT_NOISE numbers, so that memory stays bounded with hundreds of slots; on the CPU the block size does
        not change the numbers)."""
        n, vocab, job = len(slot.rows), self.last.shape[-1], slot.job
        block = min(noise_steps(n, vocab), max(1, SLOT_NOISE // (n * vocab)))
        if slot.steps % block == 0:
            slot.noise = gumbel((min(block, job.length - slot.steps), n, vocab), slot.generator, self.device)
        return slot.noise[slot.steps % block]

    def _deliver(self, slot: Slot, tokens: list[int]) -> None:
        slot.steps += 1
        slot.last_tokens = tokens
        chars = self.vocab.chars
        for i, token in enumerate(tokens):
            if slot.finish_reasons[i] is not None:
                continue
            shown, stopped = slot.matchers[i].feed(chars[token])
            if stopped:
                slot._emit(i, shown, "stop")
            elif slot.steps == slot.job.length:
                slot._emit(i, shown + slot.matchers[i].flush(), "length")
            elif shown:
                slot._emit(i, shown)

    def _take_rows(self, slot: Slot, n: int) -> list[int]:
        """The first n free rows (free rows only exist at the end: see _retire), growing the batch if needed."""
        used = len(self.owner)
        rows = list(range(used, used + n))
        self.owner.extend([slot] * n)
        if len(self.owner) > self.lanes.rows:
            self.lanes.resize(len(self.owner))
            self.last = torch.cat([self.last, self.last.new_zeros(self.lanes.rows - self.last.shape[0],
                                                                  self.last.shape[1])])
        return rows

    def _retire(self, slots: list[Slot]) -> None:
        """Free the rows of finished or cancelled slots, moving the last rows into the holes (a row's result does
        not depend on where it sits), so the batch stays as small as the streams running."""
        if not slots:
            return
        gone = set(slots)
        self.running = [s for s in self.running if s not in gone]
        for slot in slots:
            for row in slot.rows:
                self.owner[row] = None
            slot.rows = []
            self._forget(slot)
        end = len(self.owner)
        for hole in [r for r, owner in enumerate(self.owner) if owner is None]:
            while end > 0 and self.owner[end - 1] is None:
                end -= 1
            if hole >= end:
                break
            self._move(end - 1, hole)
            end -= 1
        del self.owner[end:]
        self.lanes.resize(len(self.owner))
        self.last = self.last[:self.lanes.rows]

    def _move(self, src: int, dst: int) -> None:
        slot = self.owner[src]
        self.lanes.move(src, dst)
        self.last[dst] = self.last[src]
        slot.rows[slot.rows.index(src)] = dst
        self.owner[dst], self.owner[src] = slot, None

    def _end(self, slot: Slot, reason: str) -> None:
        """Finish every sample still running with ``reason``, showing what its stop matcher held back."""
        for i, matcher in enumerate(slot.matchers):
            if slot.finish_reasons[i] is None:
                slot._emit(i, matcher.flush(), reason)

    def _finish(self, slot: Slot, reason: str) -> None:
        """End a request that never ran (length 0, or its prefix failed)."""
        self._end(slot, reason)
        self._forget(slot)
        if self.notify is not None:
            self.notify([slot])

    def _fail_running(self, message: str) -> list[Slot]:
        slots = list(self.running)
        for slot in slots:
            slot.error = message
            self._end(slot, "error")
        self._retire(slots)
        return slots

    @torch.inference_mode()
    def _finish_all(self, reason: str) -> None:
        """End every running and waiting request with ``reason`` (the server is shutting down)."""
        with self._cond:
            waiting, self._waiting = self._waiting, []
            calls, self._calls = self._calls, []
        for _, future in calls:  # an answer for the caller (a cancelled future would raise CancelledError there)
            if future.set_running_or_notify_cancel():  # unless the caller gave up on it already
                future.set_exception(Busy("the server is shutting down"))
        slots = [*self.running, *waiting]
        for slot in slots:
            self._end(slot, reason)
        self._retire(list(self.running))
        for slot in waiting:
            self._forget(slot)
        if slots and self.notify is not None:
            self.notify(slots)
