"""Where things are by default: the repository's own data and the run directory. Pure
Python; the library reads these, and the commands' flags default to them."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RUN = Path("runs/guppy")
DEFAULT_DATA = REPO / "data" / "generated" / "guppy"
DEFAULT_PERSONA = REPO / "data" / "personas" / "guppy.toml"
DEFAULT_CASES = REPO / "data" / "personas" / "guppy_eval.toml"
