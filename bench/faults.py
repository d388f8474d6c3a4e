"""Fault injection: SIGKILL a training run at random moments, many times, and check that the run is
always left loadable (by generate/eval and by --resume) from its newest complete checkpoint.

    python bench/faults.py [--kills 50] [--seed 0]

Training saves at every step (--eval-every 1), so kills often land in the middle of a save. After each
kill the script verifies the newest checkpoint's manifest, loads its weights and its resume state, then
resumes the run (in a new process) and kills it again. Prints one JSON line per kill and a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from charrnn import checkpoint
from charrnn.errors import CharRNNError

TEXT = "the keeper mends the machine by the light of the north lamp. " * 400


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-delay", type=float, default=1.0, help="longest wait before a kill, seconds")
    args = p.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "corpus.txt").write_text(TEXT)
        env = {**os.environ, "CHARRNN_CACHE_DIR": str(work / "cache")}
        first = [sys.executable, "-m", "charrnn", "train", "corpus.txt", "--steps", "1000000", "--eval-every", "1",
                 "--log-every", "1", "--hidden-size", "32", "--embedding-size", "8", "--batch-size", "4",
                 "--seq-len", "16", "--device", "cpu", "--out", "run"]
        again = [sys.executable, "-m", "charrnn", "train", "--resume", "run"]
        unloadable, steps = 0, []
        for kill in range(args.kills):
            cmd = first if kill == 0 else again
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while kill == 0 and not checkpoint.list_checkpoints(work / "run") and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.5 + rng.uniform(0, args.max_delay))  # past start-up, then a random moment
            proc.kill()
            proc.wait()
            try:
                ckpt = checkpoint.latest_of(work / "run")
                ckpt.load_model()
                ckpt.resume_state()
                ok = True
                steps.append(ckpt.step)
            except CharRNNError as e:
                ok, unloadable = False, unloadable + 1
                print(json.dumps({"bench": "faults", "kill": kill, "error": str(e)}))
            print(json.dumps({"bench": "faults", "kill": kill, "loadable": ok, "step": steps[-1] if ok else None}))
        print(json.dumps({"bench": "faults", "summary": True, "kills": args.kills, "unloadable": unloadable,
                          "final_step": steps[-1] if steps else None}))


if __name__ == "__main__":
    main()
