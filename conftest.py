"""The suite's one marker rule: `pytest -m "not slow"` is the contributor's fast subset (unit
tests of single modules), and CI runs everything. A test is slow when its module trains runs,
starts processes, drives a browser or a notebook, or compares the 9M model; those modules are
listed here rather than marked one by one, so that the rule is in one place."""
import pytest

SLOW_MODULES = {
    "tests/test_bench.py", "tests/test_chat.py", "tests/test_compare.py", "tests/test_compiled_sampler.py",
    "tests/test_convert.py", "tests/test_distributed.py", "tests/test_eval.py", "tests/test_faults.py",
    "tests/test_faults_data.py", "tests/test_faults_readers.py", "tests/test_mesh.py", "tests/test_notebooks.py",
    "tests/test_onnx_model.py", "tests/test_prepare.py", "tests/test_profile_step.py",
    "tests/test_reference_chat.py", "tests/test_time_generation.py", "tests/test_train.py",
    "tests/test_trainer.py", "tests/test_web.py", "tests/test_inspect.py", "tests/test_owndata.py",
    "tests/test_weight_files.py", "tests/test_nnx_model.py", "tests/test_bench_data.py",
    "tests/test_walkthrough_notebook.py",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = item.nodeid.split("::")[0]
        if path in SLOW_MODULES or path.startswith(("parity_tests/", "docs/")):
            item.add_marker(pytest.mark.slow)
