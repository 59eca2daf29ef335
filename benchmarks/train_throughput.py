"""Training throughput (images/s) of each NoGAN stage, with each feature-loss network.

Runs the real stages (``colorgan.train.stages.run_training``) for a few steps at 128 px on a
folder of colour photos and prints images per second per stage. Numbers, not a test.

    python benchmarks/train_throughput.py --data ../shared/data/train/bsds500 [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from colorgan.recipe import load_recipe
from colorgan.train.stages import run_training


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--nets", default="mobilenet_v2,vgg19")
    args = ap.parse_args()
    print(f"device={args.device} threads={torch.get_num_threads()} size={args.size} batch={args.batch_size} steps={args.steps}")
    print(f"{'feature net':<14}{'stage':<14}{'img/s':>8}")
    for net in args.nets.split(","):
        s, b = args.steps, args.batch_size
        cfg = load_recipe(
            Path(__file__).parents[1] / "configs" / "default.toml",
            [
                f'data=[{{path="{args.data}"}}]', f'feature_net="{net}"', "cycles=1", "workers=1",
                f"pretrain_g.steps={s}", f"pretrain_g.sizes=[{args.size}]", f"pretrain_g.batch_size={b}",
                f"pretrain_g.eval_every={10 * s}", f"pretrain_g.checkpoint_every={10 * s}",
                f"pretrain_c.steps={s}", f"pretrain_c.size={args.size}", f"pretrain_c.batch_size={b}",
                f"gan.steps={s}", f"gan.size={args.size}", f"gan.batch_size={b}", f"gan.eval_every={10 * s}",
                f"gan.checkpoint_every={10 * s}", "val.images=8", "finetune.steps=0", "guidance.steps=0",
            ],
        ).train
        with tempfile.TemporaryDirectory() as tmp:
            run_training(cfg, Path(tmp) / "run", device=args.device, progress=False)
            done = json.loads((Path(tmp) / "run" / "progress.json").read_text())["done"]
        for stage, res in done.items():
            kind = stage.split("_", 1)[1].rsplit("_cycle", 1)[0]
            print(f"{net:<14}{kind:<14}{s * b / res['seconds']:>8.1f}")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"total {time.time() - t0:.0f} s")
