"""Writing a benchmark's report: one timestamped JSON file per run under ``benchmarks/results/``."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any


def write_report(report: dict[str, Any], directory: Path, prefix: str) -> Path:
    """Write ``report`` as ``<directory>/<prefix>_<YYYYmmdd_HHMMSS>.json``, say where, return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{prefix}_{datetime.now().strftime('%Y%m%d_%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2, default=float))
    print(f"results written to {path}")
    return path
