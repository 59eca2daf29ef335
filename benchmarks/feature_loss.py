"""Which feature-loss network pays: cost per step and validation quality after equal steps or time.

Pretrains the generator from the same ImageNet start with each feature network (and with L1
alone as a reference), for the same number of steps or, with ``NET=STEPS``, for step counts
that give each the same CPU time; then prints seconds per step and the
critic-independent validation scores on held-out photos (lower score is better; chroma_ratio
near 1 is best). Quality per CPU-hour is what picks the default in configs/default.toml.

    python benchmarks/feature_loss.py --data ../shared/data/train/bsds500 --steps 300
    python benchmarks/feature_loss.py --data DIR --nets none=1200,mobilenet_v2=500,vgg19=230   # equal time
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from colorgan.recipe import load_recipe
from colorgan.train.stages import run_training


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, type=Path, action="append")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--nets", default="none,mobilenet_v2,vgg19", help="nets, each optionally NET=STEPS (equal-time runs)")
    args = ap.parse_args()
    data = ",".join(f'{{path="{d}"}}' for d in args.data)
    print(f"device={args.device} threads={torch.get_num_threads()} steps={args.steps} size={args.size} batch={args.batch_size}")
    print(f"{'feature net':<14}{'steps':>6}{'s/step':>8}{'l1_ab':>8}{'chroma':>8}{'hist_js':>9}{'score':>8}")
    for item in args.nets.split(","):
        net, _, n = item.partition("=")
        steps = int(n) if n else args.steps
        fw = 0.0 if net == "none" else 1.0
        cfg = load_recipe(
            Path(__file__).parents[1] / "configs" / "default.toml",
            [f"data=[{data}]", f'feature_net="{net}"', "cycles=0", f"pretrain_g.steps={steps}",
             f"pretrain_g.sizes=[{args.size}]", f"pretrain_g.batch_size={args.batch_size}", f"pretrain_g.feature_weight={fw}",
             f"pretrain_g.eval_every={steps}", f"pretrain_g.checkpoint_every={steps}", "val.size=128", f"gan.feature_weight={fw}",
             f"finetune.feature_weight={fw}", "finetune.steps=0", "guidance.steps=0"],
        ).train
        with tempfile.TemporaryDirectory() as tmp:
            run_training(cfg, Path(tmp) / "run", device=args.device, progress=False)
            res = json.loads((Path(tmp) / "run" / "progress.json").read_text())["done"]["00_pretrain_g"]
        print(f"{net:<14}{steps:>6}{res['seconds'] / steps:>8.3f}{res['l1_ab']:>8.2f}{res['chroma_ratio']:>8.3f}{res['hist_js']:>9.4f}{res['score']:>8.4f}")


if __name__ == "__main__":
    main()
