"""The surprisal page: a self-contained HTML file (inline CSS and script, nothing fetched) that shows a text with
every character coloured by the model's surprisal; hovering a character shows its probability and the model's
top guesses there.

The page is written as the surprisal blocks arrive (memory stays bounded; the file takes about 60-90 bytes per
character), into a temporary file beside the target that is renamed over it at the end, so the target is the
old file or the whole new page, never half of one. Every piece of text (the characters, the guesses, the title)
is HTML-escaped; the vocabulary goes into the script as JSON with ``<``, ``>`` and ``&`` escaped, so no text can
close the script or open a tag.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
from pathlib import Path
from types import TracebackType

import numpy as np

from charrnn.errors import CharRNNError
from charrnn.surprisal import PALETTE, SCALE_MAX, Block, colour_bin
from charrnn.vocab import Vocab

_CSS = """
body{margin:0;font:15px/1.6 'DejaVu Sans Mono',ui-monospace,Menlo,Consolas,monospace;color:#111;background:#fff;
 display:flex;flex-direction:column}
header{position:sticky;top:0;order:-2;background:#f8fafc;border-bottom:1px solid #cbd5e1;padding:8px 16px;
 font:13px/1.5 'DejaVu Sans',system-ui,sans-serif}
header h1{font-size:15px;margin:0 0 4px}
#summary{order:-1;padding:4px 16px;font:13px 'DejaVu Sans',system-ui,sans-serif;color:#334155}
header #summary{padding:2px 0 0}
.legend span{display:inline-block;padding:0 6px;margin-right:2px;border-radius:3px}
#text{white-space:pre-wrap;overflow-wrap:anywhere;padding:12px 16px}
#text span{cursor:default;border-radius:2px}
#text span:hover,#text span.on{outline:2px solid #111}
#text .nl::before{content:'\\21b5';color:#64748b}
#text .f{outline:1px dashed #94a3b8}
#tip{position:fixed;display:none;z-index:9;background:#0f172a;color:#f8fafc;padding:8px 10px;border-radius:6px;
 font:13px/1.45 'DejaVu Sans Mono',monospace;box-shadow:0 4px 14px rgba(0,0,0,.3);pointer-events:none}
#tip table{border-collapse:collapse;margin-top:4px}#tip td{padding:0 6px 0 0}
#tip .bar{display:inline-block;height:9px;background:#38bdf8;vertical-align:middle}
#tip .hit td{color:#fde047;font-weight:bold}
"""

_SCRIPT = """
const V=JSON.parse(document.getElementById('vocab').textContent);
const text=document.getElementById('text'),tip=document.getElementById('tip');
const spans=text.getElementsByTagName('span');
for(let i=0;i<spans.length;i++)spans[i].dataset.i=i;
document.querySelector('header').appendChild(document.getElementById('summary'));
function show(c){if(c==='\\n')return'\\u21b5 newline';if(c===' ')return'\\u2423 space';if(c==='\\t')return'\\u21e5 tab';
 const u='U+'+c.codePointAt(0).toString(16).toUpperCase().padStart(4,'0');
 return (c.codePointAt(0)<32||c.codePointAt(0)===127)?u:c+' '+u;}
function esc(s){return s.replace(/&/g,'&amp;').replace(/</g,'&lt;').replace(/>/g,'&gt;');}
let on=null;
text.addEventListener('mouseover',e=>{
 const s=e.target.closest('#text span');if(!s)return;
 if(on)on.classList.remove('on');on=s;s.classList.add('on');
 const c=s.textContent,i=+s.dataset.i;let h='<b>'+esc(show(c))+'</b>, character '+(i+1);
 if(!s.dataset.d){h+='<br>the first character: nothing before it to predict it from';}
 else{const d=s.dataset.d.split(' ');const bits=parseFloat(d[0]);
  h+='<br>p = '+Math.pow(2,-bits).toPrecision(3)+' ('+bits.toFixed(2)+' bits)<br>the model\\'s top guesses:<table>';
  for(let k=1;k+1<d.length;k+=2){const g=V[+d[k]],p=parseFloat(d[k+1]);
   h+='<tr'+(g===c?' class="hit"':'')+'><td>'+esc(show(g))+'</td><td>'+(100*p).toFixed(1)+
      '%</td><td><span class="bar" style="width:'+Math.round(80*p)+'px"></span></td></tr>';}
  h+='</table>';}
 tip.innerHTML=h;tip.style.display='block';
 const r=s.getBoundingClientRect(),w=tip.offsetWidth,t=tip.offsetHeight;
 tip.style.left=Math.max(4,Math.min(r.left,innerWidth-w-8))+'px';
 tip.style.top=(r.bottom+t+8<innerHeight?r.bottom+6:Math.max(4,r.top-t-6))+'px';});
text.addEventListener('mouseleave',()=>{tip.style.display='none';if(on)on.classList.remove('on');on=null;});
"""


# characters an HTML parser would change: a carriage return becomes a line feed (a CRLF text would be double-spaced),
# a NUL is dropped; a character reference keeps the one, the symbol for null stands for the other
_AS_WRITTEN = {"\r": "&#13;", "\0": "\u2400"}


def check_target(path: Path) -> None:
    """An error now, before any work, if the page could not be written to ``path``."""
    if path.is_dir():
        raise CharRNNError(f"cannot write the page to {path}: it is a directory; give a file name, e.g. page.html")
    parent = path.parent
    if not parent.is_dir():
        raise CharRNNError(f"cannot write the page to {path}: the directory {parent} does not exist; create it "
                           "first or choose another path")


def _json_for_script(value: object) -> str:
    return json.dumps(value, ensure_ascii=True).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def legend_html() -> str:
    cells = "".join(f'<span style="background:{c}">{b}{"+" if b == SCALE_MAX else ""}</span>'
                    for b, c in enumerate(PALETTE))
    return f'<div class="legend">surprisal, bits (−log₂ p): {cells}</div>'


class Page:
    """The page being written: ``add`` each block in text order, then ``finish``; leaving the ``with`` block
    without finishing (an error, Ctrl-C) removes the temporary file and leaves ``path`` as it was."""

    def __init__(self, path: Path, vocab: Vocab, title: str) -> None:
        check_target(path)
        self.path, self.chars = path, vocab.chars
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            self.file = self.tmp.open("w", encoding="utf-8", newline="\n")
        except OSError as e:
            raise CharRNNError(f"cannot write the page to {path}: {e.strerror or e}") from None
        self.done = False
        styles = "".join(f".b{b}{{background:{c}}}" for b, c in enumerate(PALETTE))
        self._header(f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
                        f"<title>{html.escape(title)}</title><style>{_CSS}{styles}</style></head><body>\n"
                        f"<header><h1>{html.escape(title)}</h1>{legend_html()}"
                        "hover over a character to see its probability and the model's top guesses</header>\n"
                        '<div id="text">')

    def add(self, block: Block) -> None:
        out = []
        for k in range(len(block)):
            char = self.chars[int(block.tokens[k])]
            bits = float(block.bits[k])
            b = colour_bin(bits)
            cls = "f" if b < 0 else f"b{b}"
            if char == "\n":
                cls += " nl"
            data = "" if b < 0 else ' data-d="' + " ".join(
                [f"{bits:.3g}", *(f"{int(g)} {p:.3g}" for g, p in zip(block.guesses[k], block.probs[k], strict=True)
                                  if g >= 0 and np.isfinite(p))]) + '"'
            out.append(f'<span class="{cls}"{data}>{_AS_WRITTEN.get(char) or html.escape(char)}</span>')
        self._write("".join(out))

    def finish(self, summary: str) -> None:
        """Write the end of the page and put it in place."""
        self._write(f'</div>\n<div id="summary">{html.escape(summary)}</div>\n<div id="tip"></div>\n'
                        f'<script type="application/json" id="vocab">{_json_for_script(self.chars)}</script>\n'
                        f"<script>{_SCRIPT}</script>\n</body></html>\n")
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            raise CharRNNError(f"cannot write the page to {self.path}: {e.strerror or e}") from None
        self.done = True

    def _header(self, text: str) -> None:
        try:
            self._write(text)
        except BaseException:  # the with block that would clean up has not begun
            self.__exit__(None, None, None)
            raise

    def _write(self, text: str) -> None:
        try:
            self.file.write(text)
        except OSError as e:  # a full disk: the page is many times the text's size
            raise CharRNNError(f"cannot write the page to {self.path}: {e.strerror or e}") from None

    def __enter__(self) -> Page:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if not self.done:
            with contextlib.suppress(OSError):  # close flushes what is buffered: on a full disk that fails again
                self.file.close()
            self.tmp.unlink(missing_ok=True)
