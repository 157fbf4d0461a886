"""Looking at a model and at the frameworks: the personality eval (personality.py),
attention maps, and the timings behind bench and compare (timing.py, decode.py,
devices.py, comparison.py)."""
