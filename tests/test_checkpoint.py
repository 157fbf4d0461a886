"""Run directories and orbax checkpoints: full restores for resuming, weights-only for inference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from guppy_jax.training.checkpoints import (CheckpointError, RunCheckpoints, config_differences, load_for_inference,
                                  read_run_config)
from guppy_jax.core.config import PRESETS
from guppy_jax.export.convert_weights import abstract_params
from guppy_jax.core.model import init_params
from guppy_jax.core.steps import create_state

TINY = PRESETS["tiny"]


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def fresh_state(seed):
    return create_state(TINY.model, TINY.optim, init_params(TINY.model, jax.random.key(seed)))


def test_full_restore_and_weights_only_restore(tmp_path):
    state = fresh_state(0).replace(step=jnp.asarray(7, jnp.int32))
    ckpts = RunCheckpoints(tmp_path)
    ckpts.save(state, {"data_position": {"epoch": 1, "index": 2}, "best_eval": 1.5})
    restored, meta = ckpts.restore(fresh_state(1))
    assert int(restored.step) == 7 and meta["data_position"] == {"epoch": 1, "index": 2}
    assert leaves_equal(restored.params, state.params) and leaves_equal(restored.opt_state, state.opt_state)
    params = ckpts.restore_params(abstract_params(TINY.model))
    assert leaves_equal(params, state.params)
    ckpts.close()


def test_inference_reads_the_params_item_only(tmp_path):
    ckpts = RunCheckpoints(tmp_path)
    ckpts.save(fresh_state(0), {"data_position": {"epoch": 0, "index": 0}})
    ckpts.close()
    step_dir = tmp_path / "checkpoints" / "0"
    assert {p.name for p in step_dir.iterdir()} >= {"params", "train_state", "meta"}
    with pytest.raises(CheckpointError, match="no config.json"):
        load_for_inference(tmp_path)


def test_inference_prefers_best_and_needs_a_checkpoint(trained):
    cfg, params, tok = load_for_inference(trained.run_dir)
    _, latest, _ = load_for_inference(trained.run_dir, best=False)
    assert cfg == read_run_config(trained.run_dir).model and tok.get_vocab_size() > 3
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(latest)


def test_resume_tolerates_cadence_changes_only():
    assert config_differences(TINY, TINY.replace(eval_every=5, checkpoint_every=5)) == []
    diffs = config_differences(TINY, TINY.replace(batch_size=4, optim=TINY.optim.replace(lr=1.0)))
    assert diffs == ["optim.lr: saved 0.003, now 1.0", "batch_size: saved 8, now 4"]
