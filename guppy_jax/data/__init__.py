"""Conversations to batches: personas (persona.py, writing.py), your own files (owndata.py),
prepared data directories (datadir.py) and fixed-shape padded or packed batches (batches.py)."""
