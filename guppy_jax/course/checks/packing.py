"""Chapter 10's exercise: the attention mask of packed rows, against the model's."""
from __future__ import annotations

import numpy as np

from .. import Wrong


def packed_attention_mask(fn) -> str:
    segment_ids_BT = np.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]], np.int32)
    T = segment_ids_BT.shape[1]
    causal_TT = np.arange(T)[None, :] <= np.arange(T)[:, None]
    want_BTT = causal_TT[None] & (segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :])
    got_BTT = np.asarray(fn(segment_ids_BT))
    if got_BTT.shape != want_BTT.shape:
        raise Wrong(f"The mask has shape {got_BTT.shape}; it should be (B, T, T) = {want_BTT.shape}: "
                    "[b, query t, key s].")
    got_BTT = got_BTT.astype(bool)
    if np.array_equal(got_BTT, np.broadcast_to(causal_TT, want_BTT.shape)):
        raise Wrong("That is the causal mask alone: a token also must not see another conversation's tokens.")
    if np.array_equal(got_BTT, segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :]):
        raise Wrong("That mask lets a token see later tokens of its conversation: combine it with the causal "
                    "mask (key position <= query position).")
    if np.array_equal(got_BTT, want_BTT.transpose(0, 2, 1)):
        raise Wrong("The mask is transposed: index it [b, query, key].")
    if not np.array_equal(got_BTT, want_BTT):
        raise Wrong(f"{int((got_BTT != want_BTT).sum())} entries differ from the model's mask.")
    return "the model's mask: causal, and only within a conversation."


CHECKS = {"packed_attention_mask": packed_attention_mask}
