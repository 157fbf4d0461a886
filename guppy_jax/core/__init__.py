"""The model and what computes with it: config, the Linen model (and its NNX twin), the
loss/optimizer/train step, the schedule, the cached sampler, the tokenizer, the precision
choice. Imports nothing else of the package."""
