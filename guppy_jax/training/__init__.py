"""Training: the loop (loop.py), the run directory's files and checks (run_dir.py), what a
run prints and how it is stopped (report.py), orbax checkpoints (checkpoints.py), devices and
processes (mesh.py, distributed.py) and the loss curve (plots.py)."""
