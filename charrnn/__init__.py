"""charrnn: train character-level recurrent language models on your own text."""

__version__ = "0.1.0"
