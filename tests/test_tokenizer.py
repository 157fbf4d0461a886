"""The byte-level BPE tokenizer and the chat template."""
from guppy_jax.core.tokenizer import format_chat, format_prompt, lowercase_loses_nothing, reads_lowercase, train_tokenizer


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


def test_a_lowercase_tokenizer_reads_any_casing_as_lowercase_and_writes_the_same():
    texts = [format_chat(q, a) for q, a in [("hi guppy", "hello. i am swimming."), ("are you hungry", "always.")]] * 20
    low = train_tokenizer(texts, vocab_size=300, lowercase=True)
    plain = train_tokenizer(texts, vocab_size=300)
    assert reads_lowercase(low) and not reads_lowercase(plain)
    for written in ("Hi Guppy!", "HI GUPPY!", "hI gUPPY!"):
        assert low.encode(format_prompt(written)).ids == low.encode(format_prompt("hi guppy!")).ids
        assert plain.encode(format_prompt(written)).ids != plain.encode(format_prompt("hi guppy!")).ids
    ids = low.encode(texts[0]).ids
    assert ids[:1] == [1] and low.decode(ids, skip_special_tokens=False) == texts[0]


def test_lowercasing_is_chosen_only_when_every_answer_is_lowercase():
    assert lowercase_loses_nothing([format_chat("Hi Guppy!", "hello."), format_chat("WHAT?", "food.")])
    assert not lowercase_loses_nothing([format_chat("hi", "hello."), format_chat("hi", "Hello, I am Mochi.")])
    assert not lowercase_loses_nothing(["Plain text without a chat template"])
    assert lowercase_loses_nothing(["plain text, all lowercase"])
