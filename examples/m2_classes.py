"""Does an M2 run's generative model know the digit classes?

For the first N validation images of a ``vaekit train --model m2`` run: L(x, y), the bound of
``M2.all_labels_bound`` for every class y (averaged over D draws of z), its spread over y
(the best class's L minus the worst's: how much the decoder uses y), and the accuracy of the
generative classifier argmax_y L(x, y) beside that of q(y|x), and how often the two agree.
The unlabelled term U(x) = sum_y q(y|x) L(x, y) + H(q) pulls q(y|x) towards the classes with
the larger L(x, y): where those are not the labels, U does not teach the classifier.

Usage:  python examples/m2_classes.py RUN [--points 1000] [--draws 20] [--data-dir DIR]
"""

from __future__ import annotations

import argparse

import torch

from vaekit.data import eval_split
from vaekit.runs import load_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--points", type=int, default=1000)
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    run = load_run(args.run, data_dir=args.data_dir)
    if run.family.name != "m2":
        raise SystemExit(f"{args.run} is not an m2 run")
    model = run.model.eval()
    x = eval_split(run.dataset, "valid", run.binarization)[:args.points].float()
    y = run.dataset.split("valid")[1][:args.points]
    torch.manual_seed(0)
    with torch.no_grad():
        bound = torch.stack([model.all_labels_bound(x) for _ in range(args.draws)]).mean(0)
        q = model.classifier_logits(x).argmax(1)
    spread = bound.max(0).values - bound.min(0).values
    generative = bound.argmax(0)
    print(f"{args.run}: {x.shape[0]} validation images, {args.draws} draws of z per class")
    print(f"  spread of L(x, y) over y: median {spread.median():.2f} nats, mean "
          f"{spread.mean():.2f}")
    print(f"  accuracy of argmax_y L(x, y) {(generative == y).float().mean():.3f}, of q(y|x) "
          f"{(q == y).float().mean():.3f}; they agree on {(generative == q).float().mean():.3f}")


if __name__ == "__main__":
    main()
