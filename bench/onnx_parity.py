"""ONNX export parity: for each cell type, train a model briefly, export it, and compare onnxruntime with PyTorch.

    python bench/onnx_parity.py [--corpus data/sample.txt] [--hidden-size 256] [--steps 200] [--cells lstm,gru]

Per cell, one JSON line: max |Δlogit| on random tokens and random states (batches of 1 and 4, 1 and 64 steps),
max |Δlogit| along 500 characters of real text (the prefix pass, then one carried step per character), and
whether 500 greedily generated characters are identical to ``charrnn.load(...).generate(greedy=True)``.
These are accuracy figures, not timings: they do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import charrnn
from charrnn import export, run
from charrnn.config import CELLS, TrainConfig

ROOT = Path(__file__).parent.parent


def train(corpus: Path, cell: str, hidden: int, steps: int, out: Path) -> charrnn.api.Model:
    cfg = TrainConfig(cell=cell, hidden_size=hidden, steps=steps, eval_every=steps, log_every=steps,
                      warmup_steps=min(50, steps // 4), device="cpu", seed=1)
    setup = run.prepare(corpus, flags=cfg.to_dict(), out=out)
    run.fit(run.build_trainer(setup), setup)
    return charrnn.load(out, device="cpu")


def feed(state_names: list[str], state: list[torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: s.numpy() for name, s in zip(state_names, state, strict=True)}


@torch.no_grad()
def random_inputs(sess: ort.InferenceSession, model: charrnn.api.Model) -> float:
    cfg, names, worst = model.network.config, export.state_names(model.network.config.cell), 0.0
    g = torch.Generator().manual_seed(0)
    for batch, steps in [(1, 1), (4, 1), (1, 64), (4, 64)]:
        tokens = torch.randint(cfg.vocab_size, (batch, steps), generator=g)
        shape = (cfg.num_layers, batch, cfg.hidden_size)
        if cfg.cell.startswith("min"):  # the scan takes log h: min* states are positive
            state = [torch.rand(shape, generator=g) + 0.05]
        else:
            state = [torch.randn(shape, generator=g) for _ in names]
        logits, _ = model.network(tokens, tuple(state) if cfg.cell == "lstm" else state[0])
        got = sess.run(["logits"], {"tokens": tokens.numpy(), **feed(names, state)})[0]
        worst = max(worst, float(np.abs(got - logits[:, -1].numpy()).max()))
    return worst


@torch.no_grad()
def real_text(sess: ort.InferenceSession, model: charrnn.api.Model, text: str) -> float:
    """The prefix pass over the first half, then one step per character of the second half, both sides carrying
    their own state; the largest difference of the logits at any position."""
    ids = torch.from_numpy(model.vocab.encode(text).astype("int64"))
    half, names = len(ids) // 2, export.state_names(model.network.config.cell)
    logits, state = model.network(ids[None, :half])
    got, *ort_state = sess.run(None, {"tokens": ids[None, :half].numpy(),
                                      **{n: np.zeros_like(s) for n, s in zip(names, _listed(state), strict=True)}})
    worst = float(np.abs(got - logits[:, -1].numpy()).max())
    for token in ids[half:]:
        logits, state = model.network(token.view(1, 1), state)
        got, *ort_state = sess.run(None, {"tokens": token.view(1, 1).numpy(), **dict(zip(names, ort_state,
                                                                                           strict=True))})
        worst = max(worst, float(np.abs(got - logits[:, -1].numpy()).max()))
    return worst


def _listed(state) -> list[np.ndarray]:
    return [s.numpy() for s in (state if isinstance(state, tuple) else (state,))]


def greedy(sess: ort.InferenceSession, prefix: str, length: int) -> str:
    meta = sess.get_modelmeta().custom_metadata_map
    chars = json.loads(meta["vocab"])
    shape = (int(meta["num_layers"]), 1, int(meta["hidden_size"]))
    state = {name: np.zeros(shape, np.float32) for name in meta["inputs"].split(",")[1:]}
    tokens, text = np.array([[chars.index(c) for c in prefix]], np.int64), prefix
    for _ in range(length):
        logits, *new = sess.run(None, {"tokens": tokens, **state})
        state = dict(zip(state, new, strict=True))
        token = int(logits[0].argmax())
        text += chars[token]
        tokens = np.array([[token]], np.int64)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "sample.txt")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--cells", default=",".join(CELLS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    text = args.corpus.read_text(encoding="utf-8")
    probe, prefix = text[len(text) // 2 :][:500], text[:20]
    for cell in args.cells.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            model = train(args.corpus, cell, args.hidden_size, args.steps, Path(tmp) / "run")
            path = export.export(model.checkpoint, model.network, Path(tmp) / "model.onnx").path
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            ours = model.generate(prefix, 500, greedy=True)
            theirs = greedy(sess, prefix, 500)
            print(json.dumps({
                "cell": cell, "hidden_size": args.hidden_size, "num_layers": model.network.config.num_layers,
                "steps": args.steps, "val_loss": model.checkpoint.val_loss, "onnx_bytes": path.stat().st_size,
                "max_dlogit_random": random_inputs(sess, model), "max_dlogit_text": real_text(sess, model, probe),
                "greedy_500_equal": ours == theirs,
                "first_difference": next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
                                         None),
                "distinct_chars_in_greedy_text": len(set(ours[len(prefix):])),
            }), flush=True)


if __name__ == "__main__":
    main()
