"""Time of ``make book`` from a fresh clone (``make benchmark-book``): the book's 20-minute target.

Clones the current commit of this repository into a temporary folder beside it (so ``../shared``
resolves as it does for the repository), runs ``make book PROFILE=<profile>`` there — creating the
virtual environment, installing the ``[book]`` extra, generating the mock surveys and training the
models with cold caches (``SLAMLIB_CACHE`` points into the clone), running the declared sweeps —
and writes a report with the wall time and the build's own time per chapter
(``_build/build_times.json``). The clone is removed afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from report import write_report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--keep", action="store_true", help="keep the clone")
    parser.add_argument("--output", type=Path, default=HERE / "results")
    args = parser.parse_args()

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    # The clone is an (empty) folder beside the repository, so ../shared resolves from it too.
    clone = Path(tempfile.mkdtemp(prefix="slamlib-book-", dir=REPO.parent))
    try:
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        environment = {**os.environ, "SLAMLIB_CACHE": str(clone / "data" / "cache")}
        start = time.perf_counter()
        load_start = list(os.getloadavg())
        completed = subprocess.run(["make", "book", f"PROFILE={args.profile}"], cwd=clone, env=environment)
        wall_seconds = time.perf_counter() - start
        times_file = clone / "_build" / "build_times.json"
        build_times = json.loads(times_file.read_text()) if times_file.is_file() else None
        report = {"commit": commit, "profile": args.profile, "returncode": completed.returncode,
                  "wall_seconds": wall_seconds, "build_times": build_times,
                  "load_average_start": load_start, "load_average_end": list(os.getloadavg()),
                  "cold_caches": True, "target_seconds": 1200}
        print(f"make book PROFILE={args.profile} from a fresh clone: {wall_seconds / 60:.1f} min "
              f"(return code {completed.returncode}); target 20 min", flush=True)
        write_report(report, args.output, "book_build")
    finally:
        if args.keep:
            print(f"clone kept in {clone}")
        else:
            shutil.rmtree(clone, ignore_errors=True)


if __name__ == "__main__":
    main()
