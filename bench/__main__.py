"""`python -m bench`: the benchmark runner (bench/run.py) as a module entry point."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import main  # bench/ is put on sys.path just above

sys.exit(main())
