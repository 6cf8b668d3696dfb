"""Peak RSS of a simulation with 100 clients against 10 clients, as a ratio from one run.

    python benchmarks/memory_clients.py [--rounds 2]

Target (engine issue): <= 1.5x, because per-client state is only adapters and residuals; the
base model is loaded once. Each size runs in a fresh subprocess so peaks do not mix.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = """
import resource, sys
from ecolora.config import RunConfig, merge
from ecolora.runtime.setup import build
from ecolora.runtime.sim import simulate
k, rounds = int(sys.argv[1]), int(sys.argv[2])
cfg = merge(RunConfig(), {"fed": {"clients": k, "rounds": rounds, "local_steps": 1,
                                  "eval_every": rounds}, "data": {"train_examples": 4000}})
simulate(build(cfg))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_kib(clients: int, rounds: int) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, str(clients), str(rounds)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    small, large = peak_kib(10, args.rounds), peak_kib(100, args.rounds)
    print(f"peak RSS 10 clients {small / 1024:.0f} MiB, 100 clients {large / 1024:.0f} MiB, "
          f"ratio {large / small:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
