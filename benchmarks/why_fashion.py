"""Why does H8 + L2 collapse W1 on MNIST but not on Fashion-MNIST? (docs/findings.md, Scope)

    python -m benchmarks.why_fashion outputs/sweeps/scope

For every finished `experiment=pair_h8_bce` run of the scope sweep at the seed width with
Adam, and for the same configuration at initialisation, prints the lab's own measurements on
the probe set (the first 1000 validation images):

- the fraction of standardised target pixels above 1 and below 0, where BCE from logits is
  unbounded below (t > 1: the loss falls without end as the logit grows; t < 0: as it falls);
- the norm of the data term's gradient at W1 and of the coupled L2 penalty's (2 lambda W1),
  and their ratio (the penalty wins where it is above 1);
- each hidden layer's and the output layer's saturation (|pre-activation| > 4.6), and the
  mean |logit|.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf

from aelab.config import compose_config
from aelab.diagnostics import metrics as dg
from aelab.training.build import build

PROBE = 1000


def measure(folder: Path, trained: bool) -> dict[str, float]:
    """The measurements of one run folder, at its last.ckpt (`trained`) or at its init."""
    overrides = [o for o in OmegaConf.load(folder / ".hydra" / "overrides.yaml")
                 if not o.startswith("resume=")]  # composed anew: today's config targets
    cfg = compose_config(overrides, Path(tempfile.gettempdir()) / "why_fashion")
    import lightning as L

    L.seed_everything(int(cfg.seed), verbose=False)
    parts = build(cfg)
    if trained:
        state = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
        parts.module.load_state_dict(state["state_dict"])
    x = parts.data.probe(PROBE)
    with torch.no_grad():
        pre, _ = parts.net.trace(x)
    w1 = parts.net.weight_layers()[0].weight
    logits, recon = parts.module(x)
    data = parts.loss.reduce(parts.loss.per_pixel(logits, recon, x))
    (grad,) = torch.autograd.grad(data, [w1])
    lam = float(cfg.l2_penalty)
    penalty = 2 * lam * w1.detach().norm()
    train = parts.data.splits["train"]
    return {
        "targets>1": (train > 1).float().mean().item(),
        "targets<0": (train < 0).float().mean().item(),
        "data_grad_W1": grad.norm().item(),
        "penalty_grad_W1": penalty.item(),
        "penalty/data": (penalty / grad.norm()).item() if lam else 0.0,
        **{f"h{i + 1}_saturation": dg.saturation_fraction(z).item()
           for i, z in enumerate(pre[:-1])},
        "out_saturation": dg.saturation_fraction(logits.detach()).item(),
        "mean_abs_logit": logits.detach().abs().mean().item(),
        "W1_ratio": json.loads((folder / "metrics.json").read_text())["diagnostics"][
            "collapse/norm_ratio/W1"] if trained else 1.0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    pattern = re.compile(r"^data=(\w+),experiment=pair_h8_bce,seed=(\d+),shrink=(\S+)$")
    rows = []
    for folder in sorted(args.sweep.iterdir()):
        match = pattern.match(folder.name)
        if not match or int(match.group(2)) >= args.seeds:
            continue
        data, seed, shrink = match.groups()
        for trained in (False, True):
            if not trained and shrink != "l2_1e-5":
                continue  # the init does not depend on the penalty
            rows.append({"data": data, "shrink": shrink, "seed": int(seed),
                         "at": "end" if trained else "init", **measure(folder, trained)})
    keys = list(rows[0]) if rows else []
    print("| " + " | ".join(keys) + " |")
    print("| " + " | ".join("---" for _ in keys) + " |")
    for row in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v)
                                for v in row.values()) + " |")


if __name__ == "__main__":
    main()
