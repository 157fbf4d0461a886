"""The byte-level BPE tokenizer and the chat template."""
from guppy_jax.tokenizer import format_chat, format_prompt


def test_special_ids_and_round_trip(tok, records):
    assert [tok.token_to_id(t) for t in ("<pad>", "<|im_start|>", "<|im_end|>")] == [0, 1, 2]
    assert tok.get_vocab_size() <= 4096
    for r in records[:200]:
        text = format_chat(r["input"], r["output"])
        ids = tok.encode(text).ids
        assert ids[0] == 1 and ids[-1] == 2
        assert tok.decode(ids, skip_special_tokens=False) == text
    assert format_chat("hi", "blub") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nblub<|im_end|>"
    assert format_chat("hi", "blub").startswith(format_prompt("hi"))
