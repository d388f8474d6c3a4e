"""The command line: parse, call the library, render with Rich. No tensor math lives here.

Only the product goes to stdout (generated text, evaluation results); progress, notes and errors go
to stderr. Every CharRNNError becomes one ``Error: ...`` line and a non-zero exit code.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import torch
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from charrnn import __version__, checkpoint, config, data, dist, run
from charrnn.corpus import load_corpus
from charrnn.errors import CharRNNError
from charrnn.evaluate import evaluate
from charrnn.model import CharRNN, num_parameters
from charrnn.sample import Sampling, generate
from charrnn.train import Event, Trainer, resolve_device

app = typer.Typer(
    help="Train character-level recurrent language models on your own text.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
err = Console(stderr=True, highlight=False)
D = config.TrainConfig()
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn the library's errors (and Ctrl-C, and running out of memory) into one line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CharRNNError as e:
            err.print(f"Error: {e}", markup=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except (torch.OutOfMemoryError, MemoryError) as e:
            _out_of_memory(e)
        except RuntimeError as e:  # the CPU allocator reports running out as a plain RuntimeError
            if "can't allocate memory" not in str(e) and "out of memory" not in str(e):
                raise
            _out_of_memory(e)
        except KeyboardInterrupt:
            err.print("Interrupted.")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _out_of_memory(e: BaseException) -> None:
    err.print("Error: out of memory: the model or batch does not fit; lower --batch-size, --seq-len or "
              "--hidden-size", soft_wrap=True)
    raise typer.Exit(3) from None


def _version(value: bool) -> None:
    if value:
        print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


def _opt(help: str, default: Any) -> Any:
    return typer.Option(help=f"{help} [default: {default}]", show_default=False)


class ReadingView:
    """A progress bar for reading and encoding a large corpus (small ones are done before it would show)."""

    SHOW_FROM = 64 << 20  # bytes

    def __init__(self) -> None:
        self.progress: Progress | None = None

    def update(self, done: int, total: int) -> None:
        if total < self.SHOW_FROM:
            return
        if self.progress is None:
            self.progress = Progress(TextColumn("reading corpus"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(), console=err)
            self.task = self.progress.add_task("read", total=total)
            self.progress.start()
        self.progress.update(self.task, completed=done)

    def __enter__(self) -> ReadingView:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class ProgressView:
    """Draws training progress on stderr: a live bar on a terminal, plain lines otherwise."""

    PLAIN_EVERY = 5.0  # seconds between plain lines for train windows

    def __init__(self, total_steps: int, max_time: float | None) -> None:
        self.live = err.is_terminal
        self.total_steps = total_steps
        self.max_time = max_time
        self.last_plain = 0.0
        self.val = "val -"
        self.progress = Progress(
            TextColumn("step {task.fields[step]:>6}"),
            BarColumn(bar_width=24),
            TextColumn("loss {task.fields[loss]}  {task.fields[val]}  {task.fields[speed]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self.task = self.progress.add_task("train", total=1.0, step=0, loss="-", val=self.val, speed="")

    def __enter__(self) -> ProgressView:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def on_event(self, e: Event) -> None:
        if e.split == "val":
            self.val = f"val {e.loss:.4f} ppl {e.perplexity:.2f} bpc {e.bpc:.3f}"
        fields: dict[str, Any] = {"step": e.step, "val": self.val}
        if e.split == "train":
            fields.update(loss=f"{e.loss:.4f}", speed=f"{e.chars_per_s / 1000:.1f}k chars/s")
        self.progress.update(self.task, completed=min(1.0, e.progress), **fields)
        if not self.live and (e.split == "val" or e.elapsed - self.last_plain >= self.PLAIN_EVERY):
            self.last_plain = e.elapsed
            if e.split == "val":
                line = f"step {e.step} {self.val}"
            else:
                line = f"step {e.step} loss {e.loss:.4f} lr {e.lr:.2e} {fields['speed']}"
            err.print(f"{line} [{e.elapsed:.0f}s, {100 * min(1.0, e.progress):.0f}%]", soft_wrap=True)


@app.command()
@user_errors
def train(
    corpus: Annotated[Path | None, typer.Argument(
        help="UTF-8 text file to learn from (with --resume: the run directory, default the latest run).",
        show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run exactly.")] = False,
    init_from: Annotated[Path | None, typer.Option(help="Start from this run's or checkpoint's weights "
                                                   "(fine-tuning: fresh optimizer and step count).")] = None,
    grow_vocab: Annotated[bool, typer.Option("--grow-vocab", help="With --init-from: add characters the "
                                             "model has never seen instead of stopping.")] = False,
    config_file: Annotated[Path | None, typer.Option("--config", help="TOML file of settings (see configs/).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory. [default: runs/CORPUS-DATE-TIME]",
                                             show_default=False)] = None,
    cell: Annotated[str | None, _opt("Recurrent cell: rnn, gru, lstm, mingru or minlstm.", D.cell)] = None,
    hidden_size: Annotated[int | None, _opt("Hidden units per layer.", D.hidden_size)] = None,
    num_layers: Annotated[int | None, _opt("Stacked recurrent layers.", D.num_layers)] = None,
    embedding_size: Annotated[int | None, _opt("Size of the character embedding.", D.embedding_size)] = None,
    dropout: Annotated[float | None, _opt("Dropout between layers and before the output, in [0, 1).",
                                          D.dropout)] = None,
    batch_size: Annotated[int | None, _opt("Sequences per batch.", D.batch_size)] = None,
    seq_len: Annotated[int | None, _opt("Characters per sequence (backprop length).", D.seq_len)] = None,
    batching: Annotated[str | None, _opt("sequential (state carried across batches) or random.",
                                         D.batching)] = None,
    val_fraction: Annotated[float | None, _opt("Fraction at the end of the corpus held out for validation.",
                                               D.val_fraction)] = None,
    lr: Annotated[float | None, _opt("Peak learning rate (AdamW).", D.lr)] = None,
    weight_decay: Annotated[float | None, _opt("AdamW weight decay on weight matrices.", D.weight_decay)] = None,
    warmup_steps: Annotated[int | None, _opt("Steps of linear learning-rate warmup.", D.warmup_steps)] = None,
    min_lr_ratio: Annotated[float | None, _opt("Final learning rate as a fraction of --lr (cosine decay).",
                                               D.min_lr_ratio)] = None,
    clip: Annotated[float | None, _opt("Clip gradients to this global norm (0 = off).", D.clip)] = None,
    steps: Annotated[int | None, _opt("Stop after this many steps.", D.steps)] = None,
    max_time: Annotated[float | None, _opt("Stop after this many seconds (the schedule fits the time).",
                                           "none")] = None,
    eval_every: Annotated[int | None, _opt("Evaluate on the validation split and save every N steps.",
                                           D.eval_every)] = None,
    log_every: Annotated[int | None, _opt("Log the training loss every N steps.", D.log_every)] = None,
    keep: Annotated[int | None, _opt("Keep this many newest checkpoints (plus the best).", D.keep)] = None,
    seed: Annotated[int | None, _opt("Random seed (same seed, same run).", D.seed)] = None,
    device: Annotated[str | None, _opt("auto, cpu, cuda or mps.", D.device)] = None,
    precision: Annotated[str | None, _opt("auto (= fp32, the fastest measured), fp32 or bf16 (autocast).",
                                          D.precision)] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the corpus.")] = "utf-8",
    errors: Annotated[str, typer.Option(help="On undecodable bytes: strict, replace or ignore.")] = "strict",
) -> None:
    """Train a model on CORPUS and save checkpoints in a run directory."""
    flags = {k: v for k, v in locals().items() if k in config.TrainConfig.__dataclass_fields__}
    _check_errors_policy(errors)
    world = dist.from_env()
    dist.start(world)
    warnings: list[str] = []

    def prepare() -> run.Setup:
        with ReadingView() as reading:
            if resume:
                if init_from is not None or out is not None:
                    raise CharRNNError("--resume continues a run in place: it takes neither --init-from nor --out")
                return run.resume(corpus, config_file, flags, warnings, reading.update)
            if corpus is None:
                raise CharRNNError("give the corpus to train on: charrnn train CORPUS (or --resume to continue a run)")
            if init_from is not None:
                return run.warm_start(corpus, config_file, flags, out, init_from, grow_vocab, encoding, errors,
                                      warnings, reading.update)
            return run.new_run(corpus, config.resolve(config_file, flags), out, encoding, errors, warnings,
                               reading.update)

    try:
        _train(world, dist.rank0_first(world, prepare), warnings)  # rank 0 fills the corpus cache first
    finally:
        dist.stop(world)


def _train(world: dist.World, setup: run.Setup, warnings: list[str]) -> None:
    """Train a prepared run; only rank 0 draws progress and writes files."""
    main = world.is_main
    setup.run_dir = dist.broadcast(world, setup.run_dir)  # rank 0 named it
    cfg, text = setup.cfg, setup.corpus
    train_tokens, val_tokens = data.split(text.tokens, cfg.val_fraction)
    dev = dist.device(world, resolve_device(cfg.device))
    writer = run.RunWriter(setup.run_dir, cfg, text) if main else None
    trainer = Trainer(setup.model, cfg, train_tokens, val_tokens, dev, save=writer.save if writer else None,
                      world=world)
    if setup.trainer_state is not None:
        warning = trainer.load_resume_state(setup.trainer_state)
        warnings += [warning] if warning else []
        if main:
            run.rewind_metrics(setup.run_dir, trainer.step)
    if main:
        _warn(warnings)
        if setup.trainer_state is not None:
            err.print(f"resuming {setup.run_dir} at step {trainer.step}", soft_wrap=True)
        scale = f"batch {cfg.batch_size}"
        if world.enabled:
            scale = f"{world.world_size} workers x {scale} = global batch {world.world_size * cfg.batch_size}"
        err.print(f"corpus {text.path}: {len(text.tokens):,} characters, {len(text.vocab)} distinct; model {cfg.cell} "
                  f"{cfg.num_layers}x{cfg.hidden_size}, {num_parameters(trainer.model):,} parameters on {dev}; "
                  f"{scale}, lr {cfg.lr:g}; run {setup.run_dir}", soft_wrap=True)
    view = ProgressView(cfg.steps, cfg.max_time) if main else contextlib.nullcontext()
    with view, _stop_on_signals(trainer, main):
        if writer is not None:
            def on_event(event: Event) -> None:
                writer.on_event(event)
                view.on_event(event)

            trainer.callback = on_event
        try:
            summary = trainer.fit()
        finally:
            if writer is not None:
                writer.close()
    if summary.final is None:
        signum = trainer.stopping or signal.SIGINT
        if main:
            err.print(f"stopped by {signal.Signals(signum).name} at step {summary.steps}; checkpoint saved. "
                      f"Resume with: charrnn train --resume {setup.run_dir}", soft_wrap=True)
        dist.barrier(world)  # no worker exits (and makes torchrun stop the others) before rank 0 has said so
        raise typer.Exit(128 + signum)
    if main:
        final = summary.final
        err.print(f"done: {summary.steps} steps in {summary.elapsed:.0f}s (stopped by {summary.stopped_by}); "
                  f"val loss {final.loss:.4f} nats/char, {final.bpc:.3f} bits/char, perplexity "
                  f"{final.perplexity:.3f}; best {summary.best_loss:.4f} at step {summary.best_step}", soft_wrap=True)
        err.print(f"saved to {setup.run_dir}; try: charrnn generate --checkpoint {setup.run_dir}", soft_wrap=True)


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer, loud: bool = True) -> Iterator[None]:
    """First SIGINT/SIGTERM: finish the step, save, exit 130/143. A second one: stop at once."""

    def handler(signum: int, frame: object) -> None:
        if trainer.stop_requested is not None:
            raise KeyboardInterrupt
        trainer.stop_requested = signum
        if loud:
            err.print(f"\n{signal.Signals(signum).name}: finishing this step and saving (again to quit at once)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        err.print(f"Warning: {w}", markup=False, soft_wrap=True)


def _check_errors_policy(errors: str) -> None:
    if errors not in ("strict", "replace", "ignore"):
        raise CharRNNError(f"--errors must be strict, replace or ignore, not {errors!r}")


def _load(checkpoint_path: Path | None, device: str) -> tuple[checkpoint.Checkpoint, CharRNN, torch.device]:
    warnings: list[str] = []
    ckpt = checkpoint.resolve(checkpoint_path, run.RUNS_ROOT, warnings)
    _warn([f"{w}; using an older checkpoint" for w in warnings])
    dev = resolve_device(device)
    return ckpt, ckpt.load_model(dev), dev


@app.command(name="generate")
@user_errors
def generate_cmd(
    prefix: Annotated[str, typer.Option(help="Text to continue (printed first). [default: a newline]",
                                        show_default=False)] = "",
    length: Annotated[int, typer.Option(help="Characters to generate after the prefix.")] = 500,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (> 0); lower is more conservative.")] = 1.0,
    greedy: Annotated[bool, typer.Option("--greedy", help="Always take the most likely character.")] = False,
    top_k: Annotated[int | None, typer.Option(help="Sample only from the k most likely characters.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Sample from the smallest set reaching this probability.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; the same seed gives the same text.")] = None,
    num_samples: Annotated[int, typer.Option(help="Independent samples, generated as one batch.")] = 1,
    checkpoint_path: Annotated[Path | None, typer.Option("--checkpoint", help="Run directory or checkpoint. "
                                                         "[default: best checkpoint of the latest run]",
                                                         show_default=False)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "cpu",
) -> None:
    """Continue PREFIX with a trained model; only the text goes to stdout."""
    how = Sampling(temperature, top_k, top_p, greedy)
    if length < 0:
        raise CharRNNError(f"--length must be >= 0, not {length}")
    if num_samples < 1:
        raise CharRNNError(f"--num-samples must be at least 1, not {num_samples}")
    ckpt, model, dev = _load(checkpoint_path, device)
    vocab = ckpt.vocab
    start = prefix or ("\n" if "\n" in vocab else vocab.chars[0])
    ids = torch.from_numpy(vocab.encode(start, "the prefix").astype("int64"))
    generator = torch.Generator(dev)
    generator.manual_seed(seed if seed is not None else int(time.time_ns() % 2**63))
    out = sys.stdout
    if num_samples == 1:
        out.write(prefix)
        last_flush = time.monotonic()
        for token in generate(model, ids, length, how, generator):
            out.write(vocab.chars[int(token)])
            if time.monotonic() - last_flush > 0.05:
                out.flush()
                last_flush = time.monotonic()
        out.write("\n")
    else:
        steps = torch.stack(list(generate(model, ids, length, how, generator, num_samples)), dim=1)  # (N, length)
        out.write("\n".join(prefix + vocab.decode(row.tolist()) + "\n" for row in steps))
    out.flush()


@app.command(name="eval")
@user_errors
def eval_cmd(
    corpus: Annotated[Path | None, typer.Argument(help="Text to score. [default: the run's validation split]",
                                                  show_default=False)] = None,
    checkpoint_path: Annotated[Path | None, typer.Option("--checkpoint", help="Run directory or checkpoint. "
                                                         "[default: best checkpoint of the latest run]",
                                                         show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    encoding: Annotated[str, typer.Option(help="Text encoding of CORPUS.")] = "utf-8",
    errors: Annotated[str, typer.Option(help="On undecodable bytes: strict, replace or ignore.")] = "strict",
) -> None:
    """Print loss (nats/char), bits per character and perplexity of a model on a text."""
    _check_errors_policy(errors)
    ckpt, model, dev = _load(checkpoint_path, device)
    if corpus is None:
        tokens, source = _validation_split(ckpt)
    else:
        with ReadingView() as reading:
            tokens, source = load_corpus(corpus, encoding, errors, ckpt.vocab, reading.update).tokens, str(corpus)
    if len(tokens) < 2:
        raise CharRNNError(f"{source} needs at least two characters to score")
    score = evaluate(model, tokens, dev)
    if as_json:
        print(json.dumps({**score.to_dict(), "text": source, "checkpoint": str(ckpt.path), "step": ckpt.step}))
        return
    print(f"text        {source}\ncheckpoint  {ckpt.path} (step {ckpt.step})\n"
          f"loss        {score.loss:.4f} nats/char\nbpc         {score.bpc:.4f} bits/char\n"
          f"perplexity  {score.perplexity:.4f}\nchars       {score.chars:,}")


def _validation_split(ckpt: checkpoint.Checkpoint) -> tuple[Any, str]:
    """Re-create the validation split a checkpoint was scored on, refusing a changed corpus."""
    source = ckpt.meta.get("corpus", {})
    path = Path(source.get("path", ""))
    if not path.is_file():
        raise CharRNNError(f"the run's corpus {path} is gone: pass the text to score, `charrnn eval FILE`")
    corpus = run.training_corpus(ckpt)
    if corpus is None:
        raise CharRNNError(f"the run's corpus {path} has changed since training: pass the text to score")
    _, val = data.split(corpus.tokens, ckpt.meta["config"]["val_fraction"])
    return val, f"{path} (validation split)"


def main() -> None:
    app(prog_name="charrnn")
