"""charrnn train: new runs, warm starts (--init-from) and resumed runs (--resume)."""

from __future__ import annotations

import contextlib
import shlex
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from charrnn import board, config, devices, dist, run
from charrnn.cli.common import (
    EncodingOption,
    ErrorsOption,
    ThreadsOption,
    app,
    check_errors_policy,
    leave_a_closed_terminal,
    user_errors,
)
from charrnn.cli.views import ProgressView, reading_view, say, warn
from charrnn.train import RISE, Event

DEFAULTS = config.TrainConfig()


def _setting(help: str, default: Any) -> Any:
    return typer.Option(help=f"{help} [default: {default}]", show_default=False)


@app.command()
@user_errors
def train(
    corpus: Annotated[list[Path] | None, typer.Argument(
        help="Text to learn from: a UTF-8 file, several files, or a folder (every text file under it, in sorted "
             "order). With --resume: the run directory, default the latest run.", metavar="CORPUS",
        show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run exactly.")] = False,
    init_from: Annotated[Path | None, typer.Option(help="Start from this run's or checkpoint's weights "
                                                   "(fine-tuning: fresh optimizer and step count).")] = None,
    grow_vocab: Annotated[bool, typer.Option("--grow-vocab", help="With --init-from: add characters the "
                                             "model has never seen instead of stopping.")] = False,
    config_file: Annotated[Path | None, typer.Option("--config", help="TOML file of settings (see configs/).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory. [default: runs/CORPUS-DATE-TIME]",
                                             show_default=False)] = None,
    cell: Annotated[str | None, _setting("Recurrent cell: rnn, gru, lstm, mingru or minlstm.", DEFAULTS.cell)] = None,
    hidden_size: Annotated[int | None, _setting("Hidden units per layer.", DEFAULTS.hidden_size)] = None,
    num_layers: Annotated[int | None, _setting("Stacked recurrent layers.", DEFAULTS.num_layers)] = None,
    embedding_size: Annotated[int | None, _setting("Size of the character embedding.",
                                                   DEFAULTS.embedding_size)] = None,
    dropout: Annotated[float | None, _setting("Dropout between layers and before the output, in [0, 1).",
                                              DEFAULTS.dropout)] = None,
    softmax: Annotated[str | None, _setting(f"Output layer: full, adaptive (exact, cheaper for rare characters) or "
                                            f"auto (adaptive from {config.ADAPTIVE_VOCAB:,} distinct characters).",
                                            DEFAULTS.softmax)] = None,
    batch_size: Annotated[int | None, _setting("Sequences per batch.", DEFAULTS.batch_size)] = None,
    seq_len: Annotated[int | None, _setting("Characters per sequence (backprop length).", DEFAULTS.seq_len)] = None,
    batching: Annotated[str | None, _setting("sequential (state carried across batches) or random.",
                                             DEFAULTS.batching)] = None,
    val_fraction: Annotated[float | None, _setting("Fraction at the end of the corpus held out for validation.",
                                                   DEFAULTS.val_fraction)] = None,
    val_file: Annotated[str | None, typer.Option(help="Validate on this file instead (the whole corpus then trains).",
                                                 show_default=False)] = None,
    lr: Annotated[float | None, _setting("Peak learning rate (AdamW).", DEFAULTS.lr)] = None,
    weight_decay: Annotated[float | None, _setting("AdamW weight decay on weight matrices.",
                                                   DEFAULTS.weight_decay)] = None,
    warmup_steps: Annotated[int | None, _setting("Steps of linear learning-rate warmup.",
                                                 DEFAULTS.warmup_steps)] = None,
    min_lr_ratio: Annotated[float | None, _setting("Final learning rate as a fraction of --lr (cosine decay).",
                                                   DEFAULTS.min_lr_ratio)] = None,
    lr_drop: Annotated[float | None, _setting("Multiply the learning rate by this whenever the validation loss comes "
                                              f"out more than {RISE:.0%} above its best (1 = never).",
                                              DEFAULTS.lr_drop)] = None,
    clip: Annotated[float | None, _setting("Clip gradients to this global norm (0 = off).", DEFAULTS.clip)] = None,
    steps: Annotated[int | None, _setting("Stop after this many steps.", DEFAULTS.steps)] = None,
    max_time: Annotated[float | None, _setting(
        "Train for this many seconds: the schedule fits the time, and a new run without --config, --no-auto or "
        "--init-from is sized for it (for the time --steps take, where they end it first; not under torchrun).",
        "none")] = None,
    no_auto: Annotated[bool, typer.Option("--no-auto", help="With --max-time: keep the default model instead of "
                                          "sizing it for the budget.")] = False,
    eval_every: Annotated[int | None, _setting("Evaluate on the validation split and save every N steps.",
                                               DEFAULTS.eval_every)] = None,
    eval_chars: Annotated[int | None, _setting("Validation during training scores the split's first N characters "
                                               "(0 = all of it).", DEFAULTS.eval_chars)] = None,
    log_every: Annotated[int | None, _setting("Log the training loss every N steps.", DEFAULTS.log_every)] = None,
    keep: Annotated[int | None, _setting("Keep this many newest checkpoints (plus the best).", DEFAULTS.keep)] = None,
    sample_every: Annotated[int | None, _setting("Write a sample to samples.jsonl every N steps (0 = never).",
                                                 DEFAULTS.sample_every)] = None,
    sample_prefix: Annotated[str | None, _setting("Text the samples continue.", "a newline")] = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Also log to RUN/tensorboard/ for TensorBoard "
                                              "(needs the tensorboard package).")] = False,
    seed: Annotated[int | None, _setting("Random seed (same seed, same run).", DEFAULTS.seed)] = None,
    device: Annotated[str | None, _setting("auto (CUDA, then MPS, then CPU), cpu, cuda or mps.",
                                           DEFAULTS.device)] = None,
    precision: Annotated[str | None, _setting("auto (bf16 autocast on a CPU with native bf16, else fp32: "
                                              "what measured best), fp32 or bf16 (autocast).",
                                              DEFAULTS.precision)] = None,
    encoding: EncodingOption = "utf-8",
    errors: ErrorsOption = "strict",
    threads: ThreadsOption = None,
) -> None:
    """Train a model on CORPUS and save checkpoints in a run directory."""
    flags = {k: v for k, v in locals().items() if k in config.TrainConfig.__dataclass_fields__}
    check_errors_policy(errors)
    devices.set_threads(threads)  # checked before anything is written
    if tensorboard:
        board.require()
    world = dist.from_env()
    dist.start(world, device)

    def prepare() -> run.Setup:
        with reading_view() as reading:
            # under torchrun every worker would measure its own speed and might size its model differently
            return run.prepare(corpus, config_file=config_file, flags=flags, out=out, resume=resume,
                               init_from=init_from, grow_vocab=grow_vocab, encoding=encoding, errors=errors,
                               progress=reading.update, auto=not no_auto and not world.enabled)

    try:
        _train(world, dist.rank0_first(world, prepare), threads, tensorboard)  # rank 0 fills the corpus cache first
    finally:
        dist.stop(world)


def _train(world: dist.World, setup: run.Setup, threads: int | None, tensorboard: bool) -> None:
    """Train a prepared run; only rank 0 draws progress and speaks."""
    main = world.is_main
    view = ProgressView(setup.cfg.steps, setup.cfg.max_time) if main else contextlib.nullcontext()
    contention = devices.Contention()
    # what a stop signal has to say, said by the training loop: a handler that printed could wait forever on a lock
    # of the live display that the code it interrupted holds (while the display's thread waits on that code's lock)
    notices: list[str] = []

    def tell() -> None:
        while notices:
            say(notices.pop(0))

    def on_event(e: Event) -> None:
        tell()
        view.on_event(e)
        if e.split == "train" and trainer.device.type == "cpu" and contention.slowed(e.chars_per_s or 0.0):
            warn([f"training slowed from {contention.best / 1000:.1f}k to {e.chars_per_s / 1000:.1f}k chars/s: "
                  f"another process may be competing for the CPU; give each fewer threads with --threads "
                  f"(this one uses {threads_used})"])

    trainer = run.build_trainer(setup, world, on_event=on_event if main else None,
                                on_sample=view.on_sample if main else None, tensorboard=tensorboard)
    threads_used = devices.set_threads(threads)  # again: build_trainer shares the cores among torchrun's workers

    def on_evaluate(done: int, total: int) -> None:
        tell()
        view.on_evaluate(done, total)

    if main:
        trainer.eval_progress = on_evaluate
        warn(setup.warnings)
        for note in setup.notes:
            say(note)
        if setup.resume is not None:
            say(f"resuming {setup.run_dir} at step {trainer.step}")
        say(run.describe(setup, trainer))

    def on_signal(signum: int) -> None:
        if signum == signal.SIGHUP:
            leave_a_closed_terminal()
        if main and not trainer.skip_eval:
            notices.append(f"\n{signal.Signals(signum).name}: finishing this step, scoring and saving it (again to "
                           "save without scoring)")
        elif main:
            notices.append(f"{signal.Signals(signum).name}: saving without scoring (again to quit at once)")

    with view:
        summary = run.fit(trainer, setup, on_signal)
        tell()
    quoted = shlex.quote(str(setup.run_dir))
    if summary.stopped_by == "signal":
        signum = trainer.stop_signal or signal.SIGINT
        if main:
            scored = "not scored" if summary.final is None else f"val loss {summary.final.loss:.4f}"
            say(f"stopped by {signal.Signals(signum).name} at step {summary.steps}; checkpoint saved ({scored}). "
                f"Resume with: charrnn train --resume {quoted}")
        dist.barrier(world)  # no worker exits (and makes torchrun stop the others) before rank 0 has said so
        raise typer.Exit(128 + signum)
    if main:
        final = summary.final
        why = ("validation rose again with the learning rate at its floor" if summary.stopped_by == "validation"
               else summary.stopped_by)
        say(f"done: {summary.steps} steps in {summary.elapsed:.0f}s (stopped by {why}); "
            f"val loss {final.loss:.4f} nats/char, {final.bpc:.3f} bits/char, perplexity "
            f"{final.perplexity:.3f}; best {summary.best_loss:.4f} at step {summary.best_step}")
        say(f"saved to {setup.run_dir}; try: charrnn generate --checkpoint {quoted}")
