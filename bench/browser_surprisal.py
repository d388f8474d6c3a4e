"""Check a surprisal page (``charrnn eval FILE --html PAGE``) in a real browser: headless Chromium opens it, the
mouse moves onto one character (a real hover, through the DevTools protocol), and a screenshot is saved.

    python bench/browser_surprisal.py PAGE.html OUT.png [--char N] [--width 900] [--height 560]

--char N hovers the N-th character (counted from 1); by default the most surprising character on the first
screen. Prints one JSON line: the character hovered, the tooltip's text, and any request the page made for
something other than itself (there must be none: the page is self-contained). Exits 1 if the tooltip did not
show or the page asked for anything.

Needs Chromium (Debian: ``apt-get install chromium``; or set CHROMIUM to its path) and nothing else: it speaks
the DevTools protocol over a pipe (--remote-debugging-pipe: JSON messages ended by a NUL byte on fds 3 and 4).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIND = """(() => {
  const spans = [...document.querySelectorAll('#text span')];
  const top = document.querySelector('header').getBoundingClientRect().bottom;
  let pick = %d - 1;
  if (pick < 0) {  // the most surprising character in the upper part of the text on screen (room for the tip)
    let best = -1;
    spans.forEach((s, i) => {
      const r = s.getBoundingClientRect();
      const bits = s.dataset.d ? parseFloat(s.dataset.d) : -1;
      if (r.top > top && r.bottom < top + (innerHeight - top) * 0.4 && bits > best) { best = bits; pick = i; }
    });
    if (pick < 0) pick = Math.min(1, spans.length - 1);
  }
  spans[pick].scrollIntoView({block: 'nearest'});
  const r = spans[pick].getBoundingClientRect();
  return JSON.stringify({index: pick, x: r.left + r.width / 2, y: r.top + r.height / 2, char: spans[pick].textContent});
})()"""


class DevTools:
    """A Chromium started with --remote-debugging-pipe, and one page in it."""

    def __init__(self, binary: str, profile: str) -> None:
        self.to_browser_r, self.to_browser_w = os.pipe()
        self.from_browser_r, self.from_browser_w = os.pipe()
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
                "--hide-scrollbars", f"--user-data-dir={profile}", "about:blank"]
        self.proc = subprocess.Popen(args, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=self._fds)
        os.close(self.to_browser_r)
        os.close(self.from_browser_w)
        self.next_id, self.buffer, self.events, self.session = 0, b"", [], None

    def _fds(self) -> None:  # in the child: fd 3 reads commands, fd 4 writes replies
        r, w = os.dup(self.to_browser_r), os.dup(self.from_browser_w)  # above 4, so that neither is overwritten
        os.dup2(r, 3)
        os.dup2(w, 4)

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self.from_browser_r, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, timeout: float = 20.0, **params: object) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self.to_browser_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            event = self._message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return self.events.pop()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--char", type=int, default=0, help="character to hover, from 1 (default: most surprising)")
    parser.add_argument("--width", type=int, default=900)
    parser.add_argument("--height", type=int, default=560)
    a = parser.parse_args()
    binary = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        sys.exit("no Chromium found: apt-get install chromium, or set CHROMIUM to its path")
    with tempfile.TemporaryDirectory() as profile:
        browser = DevTools(binary, profile)
        try:
            target = browser.call("Target.createTarget", url="about:blank")["targetId"]
            browser.session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            browser.call("Page.enable")
            browser.call("Network.enable")
            browser.call("Emulation.setDeviceMetricsOverride", width=a.width, height=a.height, deviceScaleFactor=1,
                         mobile=False)
            url = a.page.resolve().as_uri()
            browser.call("Page.navigate", url=url)
            browser.wait_for("Page.loadEventFired")
            found = browser.call("Runtime.evaluate", expression=FIND % a.char, returnByValue=True)
            if "exceptionDetails" in found:
                sys.exit(f"the page did not render as expected: {found['exceptionDetails']}")
            found = json.loads(found["result"]["value"])
            for kind in ("mouseMoved",):  # a real pointer move: the page sees mouseover, :hover applies
                browser.call("Input.dispatchMouseEvent", type=kind, x=found["x"], y=found["y"])
            time.sleep(0.3)
            tip = browser.call("Runtime.evaluate", returnByValue=True, expression=(
                "JSON.stringify({shown: getComputedStyle(tip).display !== 'none', text: tip.innerText})"))
            tip = json.loads(tip["result"]["value"])
            shot = browser.call("Page.captureScreenshot", format="png")
            a.png.write_bytes(base64.b64decode(shot["data"]))
            requests = [e["params"]["request"]["url"] for e in browser.events
                        if e.get("method") == "Network.requestWillBeSent"
                        and e["params"]["request"]["url"] not in (url, "about:blank")]
        finally:
            browser.close()
    print(json.dumps({"page": str(a.page), "png": str(a.png), "hovered": found["index"] + 1, "char": found["char"],
                      "tooltip_shown": tip["shown"], "tooltip": tip["text"], "other_requests": requests},
                     ensure_ascii=False))
    return 0 if tip["shown"] and not requests else 1


if __name__ == "__main__":
    sys.exit(main())
