"""The training loop: AdamW, warmup + cosine decay, clipping, the NaN guard, and the evaluation and save cadence.

``Trainer.train_step`` is one update, top to bottom; ``Trainer.fit`` runs steps until the end. Progress
leaves through a typed callback, checkpoints through an injected ``save`` function (run.py's) and samples through
an injected ``sample`` function (samples.py's), so this module never prints and never touches the run directory.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.lr_scheduler import LambdaLR

from charrnn import dist, graphs
from charrnn.config import TrainConfig
from charrnn.data import Batch, continued_seed, make_batches
from charrnn.devices import FUSED_CELLS, autocast_dtype
from charrnn.dist import SOLO, World
from charrnn.errors import CharRNNError, Damaged
from charrnn.evaluate import Progress, Score, Stopped, bits_per_char, evaluate, perplexity
from charrnn.model import CharRNN, State, detach_state
from charrnn.schema import LogWindow, TrainerState, WorkerState


@dataclass(frozen=True)
class Event:
    """One line of progress: a window of training steps, or an evaluation of the validation split."""

    split: Literal["train", "val"]
    step: int
    loss: float
    lr: float
    grad_norm: float | None
    chars_per_s: float | None
    elapsed: float
    progress: float  # fraction of the run done, by steps or by time, whichever is further
    note: str = ""  # of an evaluation: what it changed, in words (the learning rate dropped, the run ends)

    @property
    def perplexity(self) -> float:
        return perplexity(self.loss)

    @property
    def bpc(self) -> float:
        return bits_per_char(self.loss)

    def to_dict(self) -> dict[str, Any]:
        d = {**asdict(self), "perplexity": self.perplexity, "bpc": self.bpc}
        if not self.note:
            del d["note"]
        return d


# what ended a run: its steps, its time, validation rising with the rate at its floor, or a stop signal
StoppedBy = Literal["steps", "time", "validation", "signal"]


@dataclass(frozen=True)
class Summary:
    steps: int
    elapsed: float
    final: Score | None  # None when a second stop signal skipped the evaluation
    best_loss: float
    best_step: int
    stopped_by: StoppedBy


def set_seed(seed: int) -> None:
    """Seed every random number generator that training touches."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(step: int, progress: float, warmup_steps: int, min_lr_ratio: float) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` at progress 1."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return warm * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)


def make_optimizer(model: CharRNN, cfg: TrainConfig) -> torch.optim.AdamW:
    """Fused AdamW, with weight decay on matrices only (biases are left alone).

    The fused kernel also skips an update on the device when ``optimizer.found_inf`` is 1 (the
    mechanism GradScaler uses), so guarding against NaN costs no host-device synchronisation."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=True)


def training_time(max_time: float, eval_seconds: float) -> float:
    """The seconds of ``max_time`` for training: the end of the budget is kept for the final evaluation, as long as
    the last evaluation took (``eval_seconds``, at most half of the budget), so that the run ends on time."""
    return max_time - min(eval_seconds, max_time / 2)


MAX_NONFINITE = 5  # consecutive non-finite steps before training stops
# a validation loss this far (relative) above the best so far is a rise, not noise, and drops the rate (lr_drop)
RISE = 0.01

Save = Callable[["Trainer", Score | None], None]  # called on every worker; run.py's RunWriter.save
# called on every worker every sample_every steps, with the step's score if it was an evaluation step, before
# the step's checkpoint is saved; samples.py's SampleWriter
Sample = Callable[["Trainer", Score | None], None]


class Trainer:
    """Owns the optimisation state of one run; ``fit`` runs it to the end.

    ``state``/``restore`` cover everything that decides what happens next (weights aside: those are the
    model's), so that a resumed run repeats an uninterrupted one bit for bit on CPU.
    """

    def __init__(
        self,
        model: CharRNN,
        cfg: TrainConfig,
        train_tokens: np.ndarray,
        val_tokens: np.ndarray,
        device: torch.device,
        callback: Callable[[Event], None] | None = None,
        save: Save | None = None,
        world: World = SOLO,
        sample: Sample | None = None,
    ) -> None:
        self.model = model.to(device)
        # under torchrun, DistributedDataParallel all-reduces the gradients (and starts every worker from rank 0's
        # weights); its forward is the model's
        self.parallel = DDP(model, device_ids=[device] if device.type == "cuda" else None) if world.enabled else model
        self.cfg = cfg
        self.device = device
        self.world = world
        self.autocast_dtype = autocast_dtype(cfg.precision, device.type)
        self.val_tokens = val_tokens
        # validation during training scores a fixed slice, the split's first eval_chars predictions, so that it
        # costs the same on a corpus of any size (`charrnn eval` scores the whole split)
        self.eval_tokens = val_tokens[:cfg.eval_chars + 1] if cfg.eval_chars else val_tokens
        self.eval_progress: Progress | None = None  # hears how far each evaluation is
        self.eval_seconds = 0.0  # how long the last evaluation took: a timed run keeps that long for its last one
        self.callback = callback or (lambda event: None)
        self.save = save or (lambda trainer, score: None)
        self.sample = sample or (lambda trainer, score: None)
        self.batches = make_batches(train_tokens, cfg.batching, cfg.batch_size, cfg.seq_len, cfg.seed,
                                    world.rank, world.world_size)
        self.optimizer = make_optimizer(model, cfg)
        self.hidden: State | None = None  # carried from batch to batch (sequential batching)
        self.step = 0
        self.elapsed = 0.0  # seconds of this run so far, across resumes
        self.best_loss = math.inf
        self.best_step = 0
        self.bad_run = torch.zeros((), dtype=torch.long, device=device)  # non-finite steps in a row
        self.window = LogWindow.empty(device)
        self.received_signal: int | None = None  # set by this process's signal handler (run.stop_on_signals)
        self.stop_signal: int | None = None  # the signal every worker agreed to stop for
        self.skip_eval = False  # set by a second stop signal: save without scoring
        self.exhausted = False  # validation rose with the rate already dropped to its floor: training stops
        # replay forward/backward as a CUDA graph (graphs.py): fused cells on one GPU, full softmax (the adaptive
        # head's cluster sizes change from batch to batch); CHARRNN_CUDA_GRAPHS=0 disables
        self.use_graph = (device.type == "cuda" and not world.enabled and cfg.cell in FUSED_CELLS
                          and not model.config.cutoffs and os.environ.get("CHARRNN_CUDA_GRAPHS", "1") != "0")
        self.graph: graphs.GraphedStep | None = None
        # after step and elapsed: LambdaLR calls the schedule (which reads progress) as it is made
        self.scheduler = LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.progress(), cfg.warmup_steps, cfg.min_lr_ratio)
        )

    def progress(self) -> float:
        done = self.step / self.cfg.steps
        if self.cfg.max_time is not None:
            done = max(done, self.elapsed / self.training_time())
        return done

    def training_time(self) -> float:
        assert self.cfg.max_time is not None
        return training_time(self.cfg.max_time, self.eval_seconds)

    def train_step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on one batch. Returns the loss and the gradient norm before clipping, as tensors on the
        device (reading them would make the host wait for the device)."""
        x = batch.x.to(self.device, non_blocking=True)  # (B, T)
        y = batch.y.to(self.device, non_blocking=True)  # (B, T): x shifted by one character
        hidden = None if batch.reset else self.hidden  # a new epoch's streams start from a zero state
        if self.use_graph and self.graph is None:
            self.graph = graphs.capture(self.forward_backward, self.model, x, y)
            self.use_graph = self.graph is not None
        if self.graph is not None and self.graph.fits(x):
            # CUDA graph: forward_backward below, replayed as one launch on static copies of x, y and hidden
            loss, grad_norm, hidden = self.graph(x, y, hidden)
        else:
            loss, grad_norm, hidden = self.forward_backward(x, y, hidden)
        if self.world.enabled:  # the mean loss over workers, so that every worker takes the same decisions
            loss = dist.all_sum_(self.world, loss.clone()) / self.world.world_size
        # NaN guard, on the device (no synchronisation): fused AdamW skips the update where found_inf is 1
        bad = ~(torch.isfinite(loss) & torch.isfinite(grad_norm))
        self.optimizer.found_inf = bad.float()
        self.optimizer.step()
        self.scheduler.step()
        self.bad_run = (self.bad_run + 1) * bad
        self.hidden = detach_state(hidden, keep=~bad)  # after a bad step the streams restart from zero
        self.step += 1
        return loss, grad_norm

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor, hidden: State | None) -> graphs.Out:
        """Zero the gradients, forward, cross-entropy at every position, backward, clip by the global norm."""
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None, cache_enabled=False):
            nll, hidden = self.parallel(x, hidden, targets=y)  # (B, T)
        loss = nll.mean()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip or math.inf)
        return loss.detach(), grad_norm.detach(), detach_state(hidden)

    def fit(self) -> Summary:
        """Train until ``steps``, ``max_time`` or a stop signal, evaluating every ``eval_every`` steps and at
        the end. A stop signal saves after the step, scored unless a second one skips the evaluation."""
        cfg = self.cfg
        self.model.train()
        started = time.perf_counter() - self.elapsed
        window_start = time.perf_counter()
        stopped_by: StoppedBy = "steps"
        while self.step < cfg.steps:
            batch = next(self.batches)
            loss, grad_norm = self.train_step(batch)
            self.elapsed = time.perf_counter() - started
            self.stop_signal = self.received_signal
            if self.world.enabled:  # agree on the clock (it drives the schedule) and on stopping
                self.elapsed, stop = dist.all_max(self.world, [self.elapsed, self.received_signal or 0], self.device)
                self.stop_signal = int(stop) or None
            emitted = self._log(loss, grad_norm, batch.x.numel() * self.world.world_size, window_start)
            if emitted:
                window_start = time.perf_counter()
            if (emitted or self.device.type == "cpu") and int(self.bad_run) >= MAX_NONFINITE:
                raise CharRNNError(
                    f"the loss or gradients were not finite for {int(self.bad_run)} steps in a row (step "
                    f"{self.step}); lower --lr or --clip, and resume from the last checkpoint", exit_code=4)
            if cfg.max_time is not None and self.elapsed >= self.training_time():
                stopped_by = "time"
                break
            if self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                score = self._validate()
                self.model.train()
                window_start += time.perf_counter() - started - self.elapsed  # evaluation is not training
                self.stop_signal = int(self._agree(self.received_signal or 0)) or None  # one came while evaluating?
                if self.exhausted and self.stop_signal is None:
                    return Summary(self.step, self.elapsed, score, self.best_loss, self.best_step, "validation")
            else:
                if self.step < cfg.steps or self.stop_signal is not None:  # the last step samples after its score
                    window_start += self._sample(None)
                if self.stop_signal is not None:
                    score = self._score_for_stop()
            if self.stop_signal is not None:
                return Summary(self.step, self.elapsed, score, self.best_loss, self.best_step, "signal")
        score = self._validate()
        if score is None:  # stop signals came during the final evaluation
            self.stop_signal, stopped_by = self.received_signal, "signal"
        return Summary(self.step, self.elapsed, score, self.best_loss, self.best_step, stopped_by)

    def evaluate(self) -> Score | None:
        """Score the validation slice (``eval_tokens``); None if a second stop signal cut the evaluation short."""
        started = time.perf_counter()
        try:
            score = evaluate(self.model, self.eval_tokens, self.device, self.world, self.eval_progress,
                             stop=lambda: self.skip_eval)
        except Stopped:
            score = None
        if self._agree(score is None):  # every worker keeps the score, or none does
            return None
        self.eval_seconds = self._agree(time.perf_counter() - started)
        return score

    def _agree(self, value: float) -> float:
        """The largest of the workers' values (the value itself on one process)."""
        return dist.all_max(self.world, [float(value)], self.device)[0] if self.world.enabled else value

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _validate(self) -> Score | None:
        """Evaluate, log the score and save a checkpoint with it (without one if the evaluation was skipped)."""
        score = self.evaluate()
        if score is not None:
            note = ""
            if score.loss < self.best_loss:
                self.best_loss, self.best_step = score.loss, self.step
            elif score.loss > self.best_loss * (1 + RISE) and self.cfg.lr_drop < 1:
                note = self._rose(score.loss)
            self.callback(Event("val", self.step, score.loss, self.lr(), None, None, self.elapsed, self.progress(),
                                note))
        self._sample(score)
        self.save(self, score)
        return score

    def _rose(self, loss: float) -> str:
        """Validation came out ``loss``, above its best: drop the rate, or find it at its floor and end the run.
        Returns what that changed, in words, for the user."""
        self.exhausted = self._drop_lr()
        what = ("the learning rate is at its floor, so training stops" if self.exhausted
                else f"the learning rate drops to {self.lr():.2e}")
        return (f"validation {100 * (loss / self.best_loss - 1):.1f} % above its best ({self.best_loss:.4f} at step "
                f"{self.best_step}): {what}")

    def _drop_lr(self) -> bool:
        """Validation rising while training falls: the model is overfitting, or the validation text drifts away
        from the training text, and a lower rate from here on costs least. The scheduler's base rates are in its
        state, so a resumed run keeps the drop; they stop at the schedule's final rate (lr x min_lr_ratio).
        Returns True where they were there already: what is left of the run can only overfit further."""
        floor, bases = self.cfg.lr * self.cfg.min_lr_ratio, self.scheduler.base_lrs
        if floor > 0 and all(base <= floor for base in bases):
            return True
        dropped = [max(base * self.cfg.lr_drop, floor) for base in bases]
        for group, base, new in zip(self.optimizer.param_groups, bases, dropped, strict=True):  # from the next step
            group["lr"] *= new / base if base else 1.0
        self.scheduler.base_lrs = dropped
        return False

    def _sample(self, score: Score | None) -> float:
        """Write the run's sample if this step is due for one, before the step's checkpoint is saved (so that a
        resumed run neither loses nor repeats it); returns the seconds it took."""
        if not self.cfg.sample_every or self.step % self.cfg.sample_every:
            return 0.0
        started = time.perf_counter()
        self.sample(self, score)
        self.model.train()
        return time.perf_counter() - started

    def _score_for_stop(self) -> Score | None:
        """Save the checkpoint of a stop signal with its score, so that it competes with the validated ones for
        best; the score stays out of the log and the best loss, so a resumed run repeats an uninterrupted one."""
        score = self.evaluate()
        self.save(self, score)
        return score

    def _log(self, loss: torch.Tensor, grad_norm: torch.Tensor, chars: int, window_start: float) -> bool:
        """Add a step to the log window (on the device: no synchronisation); emit the line when the
        window is full. Returns True if it emitted."""
        w = self.window
        finite = torch.isfinite(loss)
        w.steps = w.steps + finite
        w.loss = w.loss + torch.where(finite, loss.double(), 0.0)
        w.chars += chars
        if self.step % self.cfg.log_every and self.step != self.cfg.steps:
            return False
        steps = int(w.steps)
        if steps:
            speed = w.chars / max(time.perf_counter() - window_start, 1e-9)
            self.callback(Event("train", self.step, float(w.loss) / steps, self.lr(), grad_norm.item(),
                                speed, self.elapsed, self.progress()))
        self.window = LogWindow.empty(self.device)
        return True

    def state(self) -> tuple[TrainerState, WorkerState]:
        """What a resumed run needs to continue exactly: the part all workers share, and this worker's own."""
        hidden = self.hidden if isinstance(self.hidden, tuple) else () if self.hidden is None else (self.hidden,)
        shared = TrainerState(
            step=self.step, elapsed=self.elapsed, best_loss=self.best_loss, best_step=self.best_step,
            bad_run=int(self.bad_run),
            window={"steps": self.window.steps.item(), "loss": self.window.loss.item(), "chars": self.window.chars},
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            eval_seconds=self.eval_seconds)
        own = WorkerState(
            batches=self.batches.state_dict(), hidden=[h.cpu() for h in hidden], rng_cpu=torch.get_rng_state(),
            rng_cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])
        return shared, own

    def restore(self, shared: TrainerState, own: WorkerState | None) -> None:
        """Continue from a saved state (see ``state``), once every tensor in it is checked to fit. Without ``own``
        (a worker's batches, carried state and random generators: saved by another number of workers) the worker
        goes on from the step on streams of its own."""
        check_restorable(self, shared, own)
        self.step, self.elapsed, self.eval_seconds = shared.step, shared.elapsed, shared.eval_seconds
        self.best_loss, self.best_step = shared.best_loss, shared.best_step
        self.bad_run = torch.tensor(shared.bad_run, device=self.device)
        as64 = {"dtype": torch.float64, "device": self.device}
        self.window = LogWindow(torch.tensor(float(shared.window["steps"]), **as64),
                                torch.tensor(float(shared.window["loss"]), **as64), int(shared.window["chars"]))
        self.optimizer.load_state_dict(shared.optimizer)
        self.scheduler.load_state_dict(shared.scheduler)
        if own is None:  # batches and dropout masks from the step on, not the run's first ones again
            self.batches.continue_from(shared.step)
            torch.manual_seed(continued_seed(self.cfg.seed, self.world.rank, shared.step, 1))
            return
        self.batches.load_state_dict(own.batches)
        hidden = [h.to(self.device) for h in own.hidden]
        if hidden and hidden[0].shape[1] != self.cfg.batch_size:
            hidden = []  # saved with another number of streams: start them from zero
        self.hidden = None if not hidden else tuple(hidden) if self.model.config.cell == "lstm" else hidden[0]
        torch.set_rng_state(own.rng_cpu)
        if own.rng_cuda and torch.cuda.is_available() and len(own.rng_cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(own.rng_cuda)

    def hidden_shape(self) -> list[tuple[int, int, int]]:
        """Shapes of the carried state's tensors: [(L, B, H)], twice for an LSTM (h and c)."""
        shape = (self.cfg.num_layers, self.cfg.batch_size, self.cfg.hidden_size)
        return [shape, shape] if self.cfg.cell == "lstm" else [shape]


def _rate(value: Any, most: float) -> bool:
    """A real number from 0 to ``most``."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= most


def check_restorable(trainer: Trainer, shared: TrainerState, own: WorkerState | None) -> None:
    """Raise Damaged unless a saved state has the structure, shapes and dtypes of ``trainer``'s own, so that a
    damaged or hand-edited file never reaches the fused optimizer's kernels (which would read out of bounds)."""
    mine_shared, mine = trainer.state()

    def fail(what: str) -> None:
        raise Damaged(f"{what} does not fit this model and run")

    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    opt = shared.optimizer
    if not isinstance(opt.get("state"), dict) or not isinstance(opt.get("param_groups"), list):
        fail("the optimizer state")
    groups = [g.get("params") if isinstance(g, dict) else None for g in opt["param_groups"]]
    if groups != [g["params"] for g in mine_shared.optimizer["param_groups"]]:
        fail("the optimizer's parameter groups")
    for index, moments in opt["state"].items():
        if not isinstance(index, int) or not 0 <= index < len(params) or not isinstance(moments, dict):
            fail("the optimizer state")
        p = params[index]
        for name in ("exp_avg", "exp_avg_sq"):
            m = moments.get(name)
            if not isinstance(m, torch.Tensor) or m.shape != p.shape or m.dtype != p.dtype:
                fail(f"the optimizer's {name} for a weight of shape {tuple(p.shape)}")
        step = moments.get("step")
        if not isinstance(step, torch.Tensor) or step.numel() != 1 or not step.is_floating_point():
            fail("the optimizer's step count")
    # the scheduler copies its state into its attributes as it stands, and fused AdamW reads its groups' settings
    # in C++: only their own fields, of their own types; rates (lr_drop lowers them) from 0 to the run's
    sched, own_sched = shared.scheduler, mine_shared.scheduler
    rates = sched.get("base_lrs")
    if (any(k not in own_sched or type(v) is not type(own_sched[k]) for k, v in sched.items())
            or sched.get("last_epoch", -1) < 0 or sched.get("lr_lambdas") != own_sched["lr_lambdas"]
            or not isinstance(rates, list) or len(rates) != len(own_sched["base_lrs"])
            or not all(_rate(r, trainer.cfg.lr) for r in rates)):
        fail("the learning-rate schedule")
    for saved, current in zip(opt["param_groups"], mine_shared.optimizer["param_groups"], strict=True):
        if (any(k in current and type(v) is not type(current[k]) for k, v in saved.items())
                or not _rate(saved.get("lr"), trainer.cfg.lr)
                or any(not _rate(b, 1.0) for b in saved.get("betas", ()))):
            fail("the optimizer's settings")
    if not 0 <= shared.step < 2**62 or not all(math.isfinite(t) and t >= 0 for t in (shared.elapsed,
                                                                                   shared.eval_seconds)):
        fail("the step count or clock")
    window = shared.window
    if (not isinstance(shared.bad_run, int) or not 0 <= shared.bad_run <= MAX_NONFINITE
            or not isinstance(window, dict) or set(window) != {"steps", "loss", "chars"}
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                       for v in window.values())
            or not 0 <= window["steps"] <= shared.step or not 0 <= window["chars"] < 2**62):
        fail("the log's running totals")
    if own is None:
        return
    want = trainer.hidden_shape()
    if own.hidden and (len(own.hidden) != len(want) or any(
            h.dtype != torch.float32 or h.dim() != 3 or h.shape[0] != want[0][0] or h.shape[2] != want[0][2]
            for h in own.hidden)):
        fail("the carried hidden state")
    for saved, current in ((own.rng_cpu, mine.rng_cpu), *zip(own.rng_cuda, mine.rng_cuda, strict=False)):
        if saved.dtype != torch.uint8 or saved.shape != current.shape:
            fail("a random generator state")
    trainer.batches.check_state(own.batches)
