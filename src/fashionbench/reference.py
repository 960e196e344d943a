"""What the seeds reported (DESIGN.md's tables), to set beside our numbers in the report."""
from __future__ import annotations

import math

from scipy.stats import t as student_t

# (model, dataset) -> the seed's reported test accuracy in %, its own ± where it gave one,
# and how it trained (so a reader sees what the comparison assumes).
SEED_RESULTS = {
    ("mlp_512", "fashion_mnist"): {"seed": "000", "accuracy": 87.6, "pm": None, "setup": "Adam 1e-3, 10 epochs, batch 64"},
    ("mlp_64", "fashion_mnist"): {"seed": "000", "accuracy": 87.1, "pm": None, "setup": "Adam 1e-3, 10 epochs, batch 64"},
    ("cnn_small", "fashion_mnist"): {"seed": "000", "accuracy": 90.7, "pm": None, "setup": "Adam 1e-3, 10 epochs, batch 64"},
    ("patch_mlp", "fashion_mnist"): {"seed": "001", "accuracy": 87.9, "pm": None, "setup": "Adam 1e-3, wd 1e-3, 30 epochs, batch 256"},
    ("lenet5_classic", "fashion_mnist"): {"seed": "002", "accuracy": 86.54, "pm": None, "setup": "Adam, 10 epochs"},
    ("lenet5_classic", "mnist"): {"seed": "002", "accuracy": 97.90, "pm": None, "setup": "Adam, 10 epochs"},
    ("lenet5_modern", "fashion_mnist"): {"seed": "002", "accuracy": 90.45, "pm": None, "setup": "Adam, 10 epochs"},
    ("lenet5_modern", "mnist"): {"seed": "002", "accuracy": 99.07, "pm": None, "setup": "Adam, 10 epochs"},
    ("fcn_400", "fashion_mnist"): {"seed": "003", "accuracy": 87.2, "pm": 2.1, "setup": "SGD 0.03, 40 epochs, batch 512"},
    ("cnn_baseline", "fashion_mnist"): {"seed": "004", "accuracy": 69.18, "pm": None, "setup": "NLL, SGD 1e-3, 20 epochs"},
    ("cnn_dropout", "fashion_mnist"): {"seed": "004", "accuracy": 90.89, "pm": None, "setup": "NLL, Adam 1e-4, dropout 0.5, 40 epochs"},
}


def t_975(df: int) -> float:
    """Student's t, two-sided 95% (the 0.975 quantile) at `df` degrees of freedom: ours is
    estimated from few seeds."""
    return float(student_t.ppf(0.975, df))


def verdict(ours: float | None, seed: float, seed_pm: float | None, ours_std: float = 0.0, seeds: int = 1) -> str:
    """Whether we reproduced the seed's number (all values in %), from both spreads.

    Ours is a mean over `seeds` seeds with sample std s. Where the seed gives a ± (its std), the gap
    is reproduced within sqrt((2 ±)² + (t s / sqrt(n))²): two of its stds, and Student's t (95%,
    n - 1 degrees of freedom) of our mean's standard error. Where it gives none, its number is one
    run, taken to vary as ours do: the gap is reproduced within our 95% prediction interval for one
    more run, t s sqrt(1 + 1/n). With one seed of ours and no ± from the seed there is no spread to
    judge by, and the verdict falls back to a rough 1 point and says so.
    """
    if ours is None or ours != ours:
        return "no result"
    diff = ours - seed
    side = "higher" if diff > 0 else "lower"
    if seeds < 2:
        if seed_pm is None:
            return ("reproduced (one seed, within 1 point)" if abs(diff) <= 1.0
                    else f"{side} than the seed (one seed, beyond 1 point)")
        margin = 2 * seed_pm
    elif seed_pm is None:
        margin = t_975(seeds - 1) * ours_std * math.sqrt(1 + 1 / seeds)
    else:
        margin = math.hypot(2 * seed_pm, t_975(seeds - 1) * ours_std / math.sqrt(seeds))
    return f"reproduced (within ±{margin:.2f})" if abs(diff) <= margin else f"{side} than the seed (beyond ±{margin:.2f})"


# Seed 003's optimizer x lr table (test accuracy %, mean ± std over its repeats).
SEED003_OPTIMIZER_LR = {
    (0.1, "rmsprop"): (21.5, 2.5), (0.1, "adam"): (9.8, 2.3), (0.1, "sgd"): (88.9, 2.5),
    (0.01, "rmsprop"): (81.2, 3.1), (0.01, "adam"): (87.9, 2.8), (0.01, "sgd"): (85.2, 2.7),
    (0.001, "rmsprop"): (88.4, 2.3), (0.001, "adam"): (89.6, 2.0), (0.001, "sgd"): (76.9, 3.0),
}
OPTIMIZER_LABELS = {"rmsprop": "RMSProp", "adam": "Adam", "sgd": "SGD", "adamw": "AdamW"}

# What the other studies claimed, per cell where the seed gave a number, else in words.
STUDY_CLAIMS = {
    "dropout": "seed 003: dropout p in {0, 0.2, 0.4} gave virtually the same accuracy as the baseline",
    "init": "seed 003: Xavier uniform ~ the default; random normal lowered validation and test accuracy",
    "epochs": "seed 000: mlp_512 83% after epoch 1, 87.6% after 10, 87.8% after 20; mlp_64 87.1% after 10",
    "optimizer_patch_mlp": "seed 001: SGD ~83%; Adam lr 0.01 83.72%, Adam lr 0.001 87.9% (30 epochs, batch 256, wd 1e-3)",
    "regularised_cnn": "seed 004: baseline 69.18% (loss 0.8203), dropout + Adam 90.89% (loss 0.25); shirt worst in both",
}
SEED_CELLS = {
    "epochs": {("mlp_512-fashion_mnist", 10): 87.6, ("mlp_512-fashion_mnist", 20): 87.8,
               ("mlp_64-fashion_mnist", 10): 87.1},
    "optimizer_patch_mlp": {("adam", 0.01): 83.72, ("adam", 0.001): 87.9},
}
