"""Check the web page of `charrnn serve` in a real browser, and screenshot it.

    python bench/browser_serve.py OUT.png [--checkpoint PATH] [--chromium PATH] [--train-seconds 30]

Starts `charrnn serve` on a tiny model (without --checkpoint it first trains one on data/sample.txt for
--train-seconds), opens the page in headless Chromium (Debian's `chromium` package, driven by Playwright:
`pip install playwright`, no browser download), types a prefix, watches the text stream in (its length at a few
moments while the cursor blinks), stops a long generation with the Stop button, generates again to the end, scores
a pasted text, hovers a character for its tooltip, and saves OUT.png (and OUT-streaming.png, taken mid-stream).
Prints what it saw as JSON lines; exits non-zero if anything is missing. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "The machine"
SCORED = "The river was quiet, and the machine kept the bread and the salt for the keeper."


def find_chromium(given: str | None) -> str:
    for candidate in (given, "/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit("no Chromium found: sudo apt-get install chromium, or pass --chromium PATH")


def train_tiny(out: Path, seconds: int) -> Path:
    subprocess.run([sys.executable, "-m", "charrnn", "train", "data/sample.txt", "--hidden-size", "128",
                    "--embedding-size", "32", "--batch-size", "16", "--seq-len", "64", "--lr", "0.006",
                    "--max-time", str(seconds), "--out", str(out), "--device", "cpu"], cwd=ROOT, check=True,
                   stderr=subprocess.DEVNULL)
    return out


def serve(ckpt: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", "--checkpoint", str(ckpt), "--port", "0"],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("serving on "):
            return proc, line.split()[2]
    raise SystemExit(f"the server did not start (exit {proc.wait()})")


def say(**what: object) -> None:
    print(json.dumps(what, ensure_ascii=False), flush=True)


def check_page(url: str, chromium: str, out: Path, prefix: str, scored: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        # the page's policy forbids eval, which Playwright's waiting uses: let the driver (not the page) bypass it
        page = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 860}).new_page()
        failed = []  # requests to anywhere but the server, and requests that failed (but the one Stop aborts)
        page.on("request", lambda r: r.url.startswith(url) or failed.append(r.url))
        page.on("requestfailed", lambda r: "ABORTED" in (r.failure or "") or failed.append(r.url))
        page.goto(url)
        page.wait_for_function("!document.getElementById('model').textContent.startsWith('loading')")
        say(model_line=page.text_content("#model"))

        # a long generation: watch it stream, screenshot it mid-stream, then stop it
        page.fill("#prefix", prefix)
        page.fill("#length", "10000")
        page.click("#go")
        page.wait_for_selector("#output .generated:not(:empty)")
        lengths = []
        for _ in range(5):
            lengths.append(len(page.text_content("#output .generated")))
            page.wait_for_timeout(100)
        page.screenshot(path=str(out.with_name(out.stem + "-streaming.png")))
        streaming = "running" in (page.get_attribute("#output", "class") or "") or lengths[-1] == 10_000
        if page.is_enabled("#halt"):  # a small model may already have finished all 10,000 characters
            page.click("#halt")
            page.wait_for_function("document.getElementById('generate-status').textContent.startsWith('stopped')")
        say(streamed_lengths=lengths, cursor_while_streaming=streaming,
            after_stop=page.text_content("#generate-status"))
        if len({n for n in lengths if n}) < 3 or not streaming:  # it grew, several times, while the cursor blinked
            raise SystemExit("the text did not stream in")

        # a short one, to the end
        page.fill("#length", "300")
        page.fill("#seed", "7")
        page.click("#go")
        page.wait_for_function("document.getElementById('generate-status').textContent.includes('seed 7')")
        say(generated=prefix + page.text_content("#output .generated"), status=page.text_content("#generate-status"))

        # scoring: colours and a tooltip
        page.fill("#score-text", scored)
        page.click("#score-go")
        page.wait_for_selector("#scored span[data-i]")
        colours = page.eval_on_selector_all("#scored span[data-i]", "s => s.map(e => e.style.background)")
        page.hover("#scored span[data-i='12']")
        page.wait_for_selector("#tip:not([hidden])")
        say(score_status=page.text_content("#score-status"), coloured_spans=len(colours),
            distinct_colours=len(set(colours)), tooltip=page.text_content("#tip"))
        page.screenshot(path=str(out))
        browser.close()
        if failed:
            raise SystemExit(f"requests that failed or left the server: {failed}")
        if len(colours) != len(scored) or len(set(colours)) < 3:
            raise SystemExit("the scored text is not coloured by surprisal")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to save the screenshot (PNG)")
    parser.add_argument("--checkpoint", type=Path, help="a run or checkpoint [default: train a tiny one]")
    parser.add_argument("--chromium", help="the Chromium binary [default: Debian's]")
    parser.add_argument("--train-seconds", type=int, default=40)
    parser.add_argument("--prefix", default=PREFIX, help="the text to continue")
    parser.add_argument("--score-text", default=SCORED, help="the text to score")
    args = parser.parse_args()
    chromium = find_chromium(args.chromium)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        ckpt = args.checkpoint or train_tiny(Path(tmp) / "run", args.train_seconds)
        say(checkpoint=str(ckpt), ready_after_s=round(time.monotonic() - start, 1), chromium=chromium)
        proc, url = serve(ckpt)
        try:
            check_page(url, chromium, args.out.resolve(), args.prefix, args.score_text)
        finally:
            proc.terminate()
            say(server_exit_code=proc.wait(30), screenshot=str(args.out))


if __name__ == "__main__":
    main()
