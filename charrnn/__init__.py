"""charrnn: train character-level recurrent language models on your own text.

``charrnn.load(path)`` loads a trained model (see api.py); the command line is charrnn.cli.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pathlib import Path

    from charrnn.api import Model


def load(path: str | Path | None = None, device: str = "auto") -> Model:
    """A trained model that generates and scores text: see ``charrnn.api.load``."""
    from charrnn.api import load as _load  # torch is imported only when a model is asked for

    return _load(path, device)
