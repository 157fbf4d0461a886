"""Writing variants: how people type the same prompt."""
import random

import pytest

from guppy_jax.data.writing import EVAL_VARIANTS, bare, capitalise, shout, typo, vary, write_as


def test_the_eval_variants_of_a_prompt():
    got = [write_as("what is the purpose of existence", v) for v in EVAL_VARIANTS]
    assert got == ["what is the purpose of existence", "What is the purpose of existence?",
                   "WHAT IS THE PURPOSE OF EXISTENCE!", "what is the purpose of eixstence"]
    assert write_as("can i come in", "capitalised?") == "Can I come in?"
    with pytest.raises(ValueError, match="unknown writing variant"):
        write_as("hi", "pirate")


def test_bare_undoes_case_and_end_marks():
    assert bare("  What is THAT?!  ") == "what is that"
    assert bare(capitalise("is it food time", "?")) == bare(shout("is it food time")) == "is it food time"


def one_slip(a: str, b: str) -> bool:
    """b is a with two neighbouring letters swapped, one letter dropped or one doubled."""
    if len(b) == len(a):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    if len(b) == len(a) - 1:
        return any(a[:i] + a[i + 1:] == b for i in range(len(a)))
    return len(b) == len(a) + 1 and any(b[:i] + b[i + 1:] == a and b[i] == b[i - 1] for i in range(1, len(b)))


def test_a_typo_changes_one_word_by_one_slip():
    rng = random.Random(0)
    text = "do you like the little castle"
    for _ in range(300):
        slipped = typo(text, rng)
        changed = [(a, b) for a, b in zip(text.split(), slipped.split()) if a != b]
        assert len(changed) == 1 and len(changed[0][0]) >= 4 and one_slip(*changed[0]), slipped
    assert typo("hi you") == "hi you"  # no word long enough to slip
    assert typo("WHERE IS IT") == "WEHRE IS IT" and typo("LOOK AT THAT") == "LOK AT THAT"  # capitals too


def test_a_longer_word_slips_more_often():
    rng = random.Random(1)
    slipped_long = sum(typo("fish aquarium", rng).split()[1] != "aquarium" for _ in range(2000))
    assert 0.62 < slipped_long / 2000 < 0.72  # 8 letters of 12: two thirds (one half if picked evenly)


def test_vary_keeps_the_words_and_is_seeded():
    def texts(seed):
        rng = random.Random(seed)
        return [vary("are you hungry", rng) for _ in range(300)]
    got = texts(1)
    assert got == texts(1) and got != texts(2)
    assert any(t[0].isupper() and t[1:].islower() for t in got)  # capitalised
    assert any(t.replace("!", "").replace("?", "").isupper() for t in got)  # shouted
    assert any(bare(t) != "are you hungry" for t in got)  # a typo
    assert sum(bare(t) == "are you hungry" for t in got) > 150  # mostly the same words


def test_names_are_capitalised_as_people_write_them():
    assert capitalise("hi guppy how are you guppy", "!", names=("guppy",)) == "Hi Guppy how are you Guppy!"
    assert capitalise("guppyish", names=("guppy",)) == "Guppyish"  # only the first letter: not the name
