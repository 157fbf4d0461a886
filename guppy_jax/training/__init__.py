"""Training: the loop (loop.py), the run directory's files and checks (run_dir.py), and what
a run prints and how it is stopped (report.py)."""
