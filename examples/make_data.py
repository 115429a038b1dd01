"""Write the small datasets of the README's results that are not built into vaekit.

    python examples/make_data.py DIR

writes into DIR (needs scikit-learn: ``pip install scikit-learn``):

``diabetes.csv``  scikit-learn's bundled diabetes table (Efron et al. 2004), unscaled: 442
                  patients, age, sex (two values), BMI, blood pressure, six serum
                  measurements and the disease progression a year later (``target``);
``gauss10.npy``   5,000 draws of a 10-D Gaussian with a random covariance (seed 0);
``moons.npy``     3,000 points of scikit-learn's two moons, noise 0.1 (seed 0).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(out: Path) -> None:
    from sklearn.datasets import load_diabetes, make_moons

    out.mkdir(parents=True, exist_ok=True)
    frame = load_diabetes(as_frame=True, scaled=False).frame
    frame.to_csv(out / "diabetes.csv", index=False)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, 10))
    x = rng.normal(size=(5000, 10)) @ a.T + rng.normal(0, 3, 10)
    np.save(out / "gauss10.npy", x.astype(np.float32))
    moons, _ = make_moons(3000, noise=0.1, random_state=0)
    np.save(out / "moons.npy", moons.astype(np.float32))
    for name in ("diabetes.csv", "gauss10.npy", "moons.npy"):
        print(out / name)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "data"))
