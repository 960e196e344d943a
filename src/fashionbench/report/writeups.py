"""What the five write-ups (docs/writeups.md) report: each run's number and the claims of their
studies, as the report sets them beside ours.
"""
from __future__ import annotations

# (model, dataset) -> the write-up's reported test accuracy in %, its own ± where it gave one,
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


# Write-up 003's optimizer x lr table (test accuracy %, mean ± std over its repeats).
SEED003_OPTIMIZER_LR = {
    (0.1, "rmsprop"): (21.5, 2.5), (0.1, "adam"): (9.8, 2.3), (0.1, "sgd"): (88.9, 2.5),
    (0.01, "rmsprop"): (81.2, 3.1), (0.01, "adam"): (87.9, 2.8), (0.01, "sgd"): (85.2, 2.7),
    (0.001, "rmsprop"): (88.4, 2.3), (0.001, "adam"): (89.6, 2.0), (0.001, "sgd"): (76.9, 3.0),
}


OPTIMIZER_LABELS = {"rmsprop": "RMSProp", "adam": "Adam", "sgd": "SGD", "adamw": "AdamW"}


# What the other studies claimed, per cell where the write-up gave a number, else in words.
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
