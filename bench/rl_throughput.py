"""RL rollout throughput on CPU: trajectories/s of the two-stage rollout and the share of a GRPO
step spent in generation vs optimization, for thinking and non-thinking mode, on a run that has
an SFT model (default runs/demo). Runs in a temporary copy of the output folder; nothing of the
run is changed.

    python bench/rl_throughput.py [--run-dir runs/demo] [--steps 8] [--prompts 16] [--group 4] [--candidates 16]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
from pathlib import Path

from onereason.protocol import Decoding
from onereason.rl import grpo
from onereason.rl.grpo import GrpoConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=16)
    a = ap.parse_args()
    print("| mode | G | M | prompts/step | trajectories/s (rollout) | s/step | generation share | optimization share |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("thinking", "non-thinking"):
        out = Path(tempfile.mkdtemp(dir=a.run_dir, prefix=".bench_rl_"))
        try:
            cfg = GrpoConfig(out=out.name, mode=mode, steps=a.steps, prompts_per_step=a.prompts, group=a.group,
                             decoding=Decoding(beams=a.candidates, temperature=1.0, top_p=1.0))
            s = grpo.run(cfg, a.run_dir, progress=False)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        g = a.group if mode == "thinking" else 1
        print(f"| {mode} | {g} | {a.candidates} | {a.prompts} | {s['trajectories_per_s']:.1f} | "
              f"{s['seconds'] / s['steps']:.2f} | {s['generation_share']:.2f} | {1 - s['generation_share']:.2f} |")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
