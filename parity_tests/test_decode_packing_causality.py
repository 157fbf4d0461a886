"""Greedy decoding, packed rows, and causality."""
from parity_tests.conftest import assert_all
from parity_tests.measure import check_causality, check_greedy, check_packing


def test_greedy_tokens_identical(cfg):
    checks, info = check_greedy(cfg)
    # the weights are trained so that decoding is not a constant token: the test can see a flip
    assert info["distinct_tokens"] >= 8, info
    assert_all(checks)


def test_packed_rows_equal_conversations_alone(cfg):
    assert_all(check_packing(cfg))


def test_loss_at_t_ignores_later_tokens(cfg):
    assert_all(check_causality(cfg))


def test_the_reference_cache_gives_the_logits_of_the_whole_sequence(cfg):
    """reference_torch's key/value cache: a prefill of 5 tokens, then one token per call,
    against one forward pass over the whole sequence."""
    import numpy as np
    import torch

    from parity_tests.measure import pair
    model, _ = pair(cfg.replace(dropout=0.0), "torch")
    model.eval()
    tokens = torch.from_numpy(np.random.RandomState(4).randint(3, cfg.vocab_size, (2, 12)))
    with torch.no_grad():
        whole_BTV = model(tokens)
        cache = [{} for _ in model.blocks]
        steps = [model(tokens[:, :5], cache=cache)] + [model(tokens[:, t:t + 1], cache=cache) for t in range(5, 12)]
    diff = float((torch.cat(steps, dim=1) - whole_BTV).abs().max())
    assert diff <= 1e-5, f"cached logits differ from the whole sequence's by {diff:.2e}"
    assert cache[0]["k"].shape[2] == 12
