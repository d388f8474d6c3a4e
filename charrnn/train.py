"""The training loop: AdamW, warmup + cosine decay, clipping, evaluation and save cadence.

One ``train_step`` per batch; progress leaves through a typed callback and checkpoints through an
injected ``save`` function, so this module never prints and never touches the run directory.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.lr_scheduler import LambdaLR

from charrnn import dist
from charrnn.config import TrainConfig
from charrnn.data import Batch, make_batches
from charrnn.dist import SOLO, World
from charrnn.errors import CharRNNError
from charrnn.evaluate import Score, bits_per_char, evaluate, perplexity
from charrnn.graphs import GraphedStep
from charrnn.model import CharRNN, State, detach_state


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

    @property
    def perplexity(self) -> float:
        return perplexity(self.loss)

    @property
    def bpc(self) -> float:
        return bits_per_char(self.loss)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "perplexity": self.perplexity, "bpc": self.bpc}


@dataclass(frozen=True)
class Summary:
    steps: int
    elapsed: float
    final: Score | None  # None when stopped by a signal: no evaluation was run
    best_loss: float
    best_step: int
    stopped_by: Literal["steps", "time", "signal"]


def set_seed(seed: int) -> None:
    """Seed every random number generator that training touches."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharRNNError("--device cuda was asked for but no CUDA GPU is available: use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise CharRNNError("--device mps was asked for but MPS is not available: use --device cpu or auto")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training, or None for plain fp32 (TF32 on CUDA).

    ``auto`` is fp32 everywhere: measured on an H100, cuDNN's LSTM trained *slower* under bf16 autocast
    than in fp32 (bench/RESULTS.md), and on CPUs without AVX-512-BF16, bf16 is ~100x slower."""
    return torch.bfloat16 if precision == "bf16" else None


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


MAX_NONFINITE = 5  # consecutive non-finite steps before training stops


def weights_checksum(model: torch.nn.Module) -> str:
    """A hash of every weight's bytes, to check that workers' copies of the model are bit-identical."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()


class Trainer:
    """Owns the optimisation state of one run; ``fit`` runs it to the end.

    ``state_dict``/``load_state_dict`` cover everything that decides what happens next (weights aside:
    those are the model's), so that a resumed run repeats an uninterrupted one bit for bit on CPU.
    """

    def __init__(
        self,
        model: CharRNN,
        cfg: TrainConfig,
        train_tokens: np.ndarray,
        val_tokens: np.ndarray,
        device: torch.device,
        callback: Callable[[Event], None] | None = None,
        save: Callable[[Trainer, Score | None, dict[str, Any]], None] | None = None,
        world: World = SOLO,
    ) -> None:
        if device.type == "cuda":  # TF32 tensor cores for fp32 matmuls (cuDNN's RNNs already use them)
            torch.backends.cuda.matmul.allow_tf32 = True
        self.model = model.to(device)
        self.world = world
        # DistributedDataParallel all-reduces the gradients; it also makes every worker start from rank 0's weights
        self.net = DDP(self.model, device_ids=[device] if device.type == "cuda" else None) if world.enabled \
            else self.model
        self.amp = autocast_dtype(cfg.precision, device)
        self.cfg = cfg
        self.device = device
        self.val_tokens = val_tokens
        self.callback = callback or (lambda event: None)
        self.save = save
        self.batches = make_batches(train_tokens, cfg.batching, cfg.batch_size, cfg.seq_len, cfg.seed,
                                    world.rank, world.world_size)
        self.optimizer = make_optimizer(model, cfg)
        self.state: State | None = None
        self.step = 0
        self.elapsed = 0.0  # seconds of this run so far, across resumes
        self.best_loss = math.inf
        self.best_step = 0
        self.bad_run = torch.zeros((), dtype=torch.long, device=device)  # non-finite steps in a row
        self.window = self._empty_window()  # the training-loss log line being built
        self.stop_requested: int | None = None  # a signal number, set from this process's signal handler
        self.stopping: int | None = None  # the signal all workers agreed to stop for
        # replay the step as a CUDA graph (graphs.py): cuDNN cores on one GPU; CHARRNN_CUDA_GRAPHS=0 turns it off
        self.graphs = (device.type == "cuda" and not world.enabled and cfg.cell in ("rnn", "gru", "lstm")
                       and os.environ.get("CHARRNN_CUDA_GRAPHS", "1") != "0")
        self.graph: GraphedStep | None = None
        self.scheduler = LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.progress(), cfg.warmup_steps, cfg.min_lr_ratio)
        )

    def progress(self) -> float:
        done = self.step / self.cfg.steps
        if self.cfg.max_time is not None:
            done = max(done, self.elapsed / self.cfg.max_time)
        return done

    def train_step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on one batch; returns the loss and the gradient norm before clipping.

        A non-finite loss or gradient norm skips the update and zeroes the carried state, all on the
        device; ``self.bad_run`` counts such steps in a row."""
        x = batch.x.to(self.device, non_blocking=True)
        y = batch.y.to(self.device, non_blocking=True)
        if batch.reset:
            self.state = None
        loss, grad_norm, state = self._forward_backward(x, y)
        if self.world.enabled:  # the global mean loss, so that every worker takes the same decision
            loss = dist.all_sum_(self.world, loss.clone()) / self.world.world_size
        bad = ~(torch.isfinite(loss) & torch.isfinite(grad_norm))
        self.optimizer.found_inf = bad.float()
        self.optimizer.step()
        self.scheduler.step()
        self.bad_run = (self.bad_run + 1) * bad
        self.state = detach_state(state, keep=~bad)
        self.step += 1
        return loss, grad_norm

    def _compute(self, x: torch.Tensor, y: torch.Tensor, state: State | None) -> tuple[torch.Tensor, ...]:
        """Forward, backward and clipping: the part of a step that a CUDA graph captures."""
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None,
                            cache_enabled=False):
            logits, state = self.net(x, state)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        max_norm = self.cfg.clip if self.cfg.clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        return loss.detach(), grad_norm.detach(), detach_state(state)

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.graphs and self.graph is None:
            self.graph = self._capture(x, y)
        if self.graph is None or x.shape != self.graph.x.shape:
            return self._compute(x, y, self.state)
        return self.graph(x, y, self.state)

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> GraphedStep | None:
        zeros = torch.zeros(self.cfg.num_layers, x.shape[0], self.cfg.hidden_size, device=self.device)
        state = (zeros, zeros.clone()) if isinstance(self.model.rnn, torch.nn.LSTM) else zeros
        try:
            return GraphedStep(self._compute, list(self.model.parameters()), x, y, state)
        except RuntimeError as e:  # train on, eagerly
            warnings.warn(f"training without CUDA graphs: capturing the step failed ({e})", stacklevel=2)
            self.graphs = False
            return None

    def evaluate(self) -> Score:
        return evaluate(self.model, self.val_tokens, self.device, self.world)

    def _lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _validate(self) -> Score:
        score = self.evaluate()
        if score.loss < self.best_loss:
            self.best_loss, self.best_step = score.loss, self.step
        self.callback(Event("val", self.step, score.loss, self._lr(), None, None, self.elapsed, self.progress()))
        self._save(score)
        return score

    def _save(self, score: Score | None) -> None:
        """Save on rank 0, with every worker's resume state; all workers take part."""
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise CharRNNError(f"the weights are no longer finite at step {self.step}; nothing was saved: "
                               "lower --lr or --clip and resume from the last checkpoint", exit_code=4)
        local = self.state_dict()
        if not self.world.is_main:  # identical on every worker: kept once, in rank 0's part
            del local["optimizer"], local["scheduler"]
        states = dist.gather(self.world, local)
        if self.world.enabled:
            sums = dist.gather(self.world, weights_checksum(self.model))
            if self.world.is_main and len(set(sums)) != 1:
                raise CharRNNError(f"the workers' weights differ at step {self.step}: this is a bug, please "
                                   "report it", exit_code=1)
        if self.save is not None and self.world.is_main:
            self.save(self, score, {"world_size": self.world.world_size, "ranks": states})
        dist.barrier(self.world)  # nobody exits (or is killed by torchrun) while rank 0 is still writing

    def _log(self, loss: torch.Tensor, grad_norm: torch.Tensor, chars: int, window_start: float) -> bool:
        """Add a step to the log window (on the device: no synchronisation); emit the line when the
        window is full. Returns True if it emitted."""
        w = self.window
        ok = torch.isfinite(loss)
        w["steps"] = w["steps"] + ok
        w["loss"] = w["loss"] + torch.where(ok, loss.double(), 0.0)
        w["chars"] += chars
        if self.step % self.cfg.log_every and self.step != self.cfg.steps:
            return False
        steps = int(w["steps"])
        if steps:
            speed = w["chars"] / max(time.perf_counter() - window_start, 1e-9)
            self.callback(Event("train", self.step, float(w["loss"]) / steps, self._lr(), grad_norm.item(),
                                speed, self.elapsed, self.progress()))
        self.window = self._empty_window()
        return True

    def _empty_window(self) -> dict[str, Any]:
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        return {"steps": zero.clone(), "loss": zero, "chars": 0}

    def fit(self) -> Summary:
        """Train until ``steps``, ``max_time`` or a stop request, evaluating every ``eval_every`` steps and
        at the end (not after a stop request, which saves at once)."""
        cfg = self.cfg
        self.model.train()
        started = time.perf_counter() - self.elapsed
        window_start = time.perf_counter()
        stopped_by: Literal["steps", "time", "signal"] = "steps"
        while self.step < cfg.steps:
            batch = next(self.batches)
            loss, grad_norm = self.train_step(batch)
            self.elapsed = time.perf_counter() - started
            self.stopping = self.stop_requested
            if self.world.enabled:  # agree on the clock (it drives the schedule) and on stopping
                self.elapsed, stop = dist.all_max(self.world, [self.elapsed, self.stop_requested or 0], self.device)
                self.stopping = int(stop) or None
            emitted = self._log(loss, grad_norm, batch.x.numel() * self.world.world_size, window_start)
            if emitted:
                window_start = time.perf_counter()
            if (emitted or self.device.type == "cpu") and int(self.bad_run) >= MAX_NONFINITE:
                raise CharRNNError(
                    f"the loss or gradients were not finite for {int(self.bad_run)} steps in a row (step "
                    f"{self.step}); lower --lr or --clip, and resume from the last checkpoint", exit_code=4)
            if cfg.max_time is not None and self.elapsed >= cfg.max_time:
                stopped_by = "time"
                break
            if self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                self._validate()
                self.model.train()
                window_start += time.perf_counter() - started - self.elapsed  # evaluation is not training
            elif self.stopping is not None:
                self._save(None)
            if self.stopping is not None:
                return Summary(self.step, self.elapsed, None, self.best_loss, self.best_step, "signal")
        score = self._validate()
        return Summary(self.step, self.elapsed, score, self.best_loss, self.best_step, stopped_by)

    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights that a resumed run needs to continue exactly."""
        state = self.state if isinstance(self.state, tuple) else (self.state,) if self.state is not None else ()
        return {
            "step": self.step,
            "elapsed": self.elapsed,
            "best_loss": self.best_loss,
            "best_step": self.best_step,
            "bad_run": int(self.bad_run),
            "window": {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in self.window.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "batches": self.batches.state_dict(),
            "hidden": [s.cpu() for s in state],
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_resume_state(self, saved: dict[str, Any]) -> str | None:
        """Load this worker's part of a checkpoint's resume state; returns a warning if not exact."""
        ranks, world = saved["ranks"], int(saved["world_size"])
        self.load_state_dict({**ranks[0], **ranks[self.world.rank % world]})
        if world != self.world.world_size:
            return (f"the run was saved by {world} worker(s) and resumes on {self.world.world_size}: it goes on "
                    "from the same weights, optimizer and step, but not exactly as it would have")
        return None

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.step, self.elapsed = int(sd["step"]), float(sd["elapsed"])
        self.best_loss, self.best_step = float(sd["best_loss"]), int(sd["best_step"])
        self.bad_run = torch.tensor(int(sd["bad_run"]), device=self.device)
        w = sd["window"]
        self.window = {"steps": torch.tensor(float(w["steps"]), dtype=torch.float64, device=self.device),
                       "loss": torch.tensor(float(w["loss"]), dtype=torch.float64, device=self.device),
                       "chars": int(w["chars"])}
        self.optimizer.load_state_dict(sd["optimizer"])
        self.scheduler.load_state_dict(sd["scheduler"])
        self.batches.load_state_dict(sd["batches"])
        hidden = [h.to(self.device) for h in sd["hidden"]]
        if hidden and hidden[0].shape[1] != self.cfg.batch_size:
            hidden = []  # saved with another number of streams: start them from zero
        self.state = None if not hidden else hidden[0] if self.model.config.cell != "lstm" else tuple(hidden)
        torch.set_rng_state(sd["rng_cpu"])
        if sd["rng_cuda"] and torch.cuda.is_available() and len(sd["rng_cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(sd["rng_cuda"])
