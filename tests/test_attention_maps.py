"""attention_maps: both frameworks' attention probabilities of one prompt, from the same weights."""
import numpy as np
import pytest

from guppy_jax.analysis.attention_maps import (PARITY_TOL, PromptError, check_prompt, inspect_prompt, jax_attention,
                                      top_candidates)
from guppy_jax.core.config import PARITY_MODELS

from .helpers import random_params

MICRO = PARITY_MODELS["micro"]


@pytest.fixture(scope="module")
def params():
    return random_params(MICRO, seed=3)


def test_jax_and_reference_maps_agree_within_the_parity_tolerance(params):
    pytest.importorskip("torch")
    ids = [1, 17, 200, 42, 9, 2, 5]
    maps = inspect_prompt(MICRO, params, ids, [str(i) for i in ids])
    L, H, T = MICRO.n_layers, MICRO.n_heads, len(ids)
    assert maps.jax_LHTT.shape == maps.torch_LHTT.shape == (L, H, T, T)
    assert maps.max_diff <= PARITY_TOL
    assert maps.max_diff == pytest.approx(np.abs(maps.jax_LHTT - maps.torch_LHTT).max(), rel=1e-6)


def test_every_map_is_causal_and_each_row_sums_to_one(params):
    _, probs_LHTT = jax_attention(MICRO, params, [5, 6, 7, 8, 9])
    np.testing.assert_allclose(probs_LHTT.sum(-1), 1.0, atol=1e-6)
    assert np.all(np.triu(probs_LHTT, k=1) == 0)


def test_a_disagreeing_reference_shows_in_max_diff(params):
    pytest.importorskip("torch")
    maps = inspect_prompt(MICRO, params, [1, 2, 3], ["a", "b", "c"])
    maps.torch_LHTT = maps.torch_LHTT.copy()
    maps.torch_LHTT[1, 2, 2, 0] += 0.25
    assert maps.max_diff == pytest.approx(0.25, abs=1e-6)


def test_top_candidates_are_the_likeliest_tokens_with_their_probabilities():
    probs_TV = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    assert top_candidates(probs_TV, 2) == [[(1, 0.6), (2, 0.3)], [(0, 0.5), (2, 0.3)]]


def test_next_token_probabilities_sum_to_one_at_every_position(params):
    maps = inspect_prompt(MICRO, params, [1, 2, 3, 4], list("abcd"))
    np.testing.assert_allclose(maps.probs_TV.sum(-1), 1.0, atol=1e-9)


@pytest.mark.parametrize("ids, words", [([], "empty"), (list(range(3, 3 + MICRO.max_seq_len + 1)), "context"),
                                        ([1, MICRO.vocab_size], "vocab")])
def test_prompts_the_model_cannot_take_are_refused_with_the_reason(ids, words):
    with pytest.raises(PromptError, match=words):
        check_prompt(ids, MICRO)


def test_next_token_probabilities_are_a_float64_softmax_of_the_logits(params):
    from guppy_jax.analysis.attention_maps import softmax_float64
    ids = [1, 2, 3, 4]
    maps = inspect_prompt(MICRO, params, ids, list("abcd"))
    logits_TV, _ = jax_attention(MICRO, params, ids)
    z_TV = logits_TV.astype(np.float64)
    expected_TV = np.exp(z_TV) / np.exp(z_TV).sum(-1, keepdims=True)
    assert maps.probs_TV.dtype == np.float64
    np.testing.assert_allclose(maps.probs_TV, expected_TV, rtol=1e-12)
    # large logits: the max is subtracted first, so nothing overflows
    np.testing.assert_allclose(softmax_float64(np.array([[1000.0, 1000.0, -np.inf]])), [[0.5, 0.5, 0.0]])
