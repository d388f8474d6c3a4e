"""Serving a trained model over HTTP: ``charrnn serve``.

    lanes.py     the one-character step over many streams, each row's result independent of the others
    batcher.py   the decoding loop that owns the model: requests join and leave one shared batch
    protocol.py  what a request may ask for: parsing and checking JSON bodies, the limits, the model description
    scoring.py   per-character surprisal and the model's top guesses for a text
    app.py       the Starlette application: routes, server-sent events, JSON errors (the only web code)
    page.html    the web page served at /

Only app.py imports Starlette; the rest is plain library code that tests drive directly.
"""
