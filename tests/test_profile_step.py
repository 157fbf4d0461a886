"""scripts/profile_step.py: the op-by-op profile of the train step's gradient, on the tiny preset."""
import re

from guppy_jax.core import model


def test_op_sources_name_each_instruction_by_the_code_that_made_it(script):
    hlo = ('  %dot.7 = f32[4,8]{1,0} dot(%a, %b), metadata={op_name="jit(f)/transpose(jvp(GuppyLM))'
           '/blocks_3/attn/qkv/dot_general" stack_frame_id=1}\n  %copy.2 = f32[8]{0} copy(%c)\n')
    assert script("profile_step").op_sources(hlo) == {"dot.7": "transpose(jvp(GuppyLM))/blocks_i/attn/qkv/dot_general"}


def test_profile_lists_the_model_ops_with_and_without_the_fence(script, capsys):
    script("profile_step").main(["--preset", "tiny", "--seq-len", "16", "--batch-size", "4", "--calls", "2",
                        "--profile-calls", "1", "--top", "40", "--without-fence"])
    assert model.GRADIENT_FENCE is True  # put back
    out = capsys.readouterr().out
    with_fence, without = out.split("without the fence")
    for part in (with_fence, without):
        assert re.search(r"loss and gradient, median of 2 calls: \d+\.\d ms", part)
        ops = re.findall(r"^\s+(\d+\.\d+) ms  (\S+)\s+(\S+)$", part, re.M)
        assert ops and any("blocks_i/" in source for _, _, source in ops), part
        assert any(source.startswith("transpose(jvp") for _, _, source in ops), part  # the backward pass
