"""The README's main job, timed: ``mlet-compress train --compare`` (synthetic data, DLRM, single-layer and MLET).

Runs the installed CLI in a subprocess with a temporary ``--out`` and prints its wall time, the torch
thread count it sees and the machine load (target: under 2 minutes on 2 cores).

    python benchmarks/bench_main_job.py [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _common import load_line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    times = []
    before = load_line()
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "mlet_compress.cli.app", "train", "--compare", "--out", os.path.join(tmp, "run")]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
    threads = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    print(f"mlet-compress train --compare: median {statistics.median(times):.1f} s over {args.repeats} run(s) "
          f"(min {min(times):.1f}, max {max(times):.1f}); torch threads {threads}; "
          f"before: {before}; after: {load_line()}")


if __name__ == "__main__":
    main()
