"""A run's own training set (params `val_fraction`), cut from the prepared split."""
import torch

from fashionbench.core.splits import run_splits, split_train_val


def prepared(n_train=90, n_val=10, n_test=5):
    images = torch.arange(n_train + n_val, dtype=torch.uint8).reshape(-1, 1, 1).expand(-1, 28, 28)
    labels = torch.arange(n_train + n_val) % 10
    return {"digest": "d", "train_images": images[:n_train], "train_labels": labels[:n_train],
            "val_images": images[n_train:], "val_labels": labels[n_train:],
            "test_images": torch.zeros(n_test, 28, 28, dtype=torch.uint8), "test_labels": torch.zeros(n_test).long()}


def test_null_keeps_the_prepared_split():
    data = prepared()
    assert run_splits(data, None, 0) is data


def test_the_prepared_fraction_keeps_the_prepared_split():
    data = prepared()
    assert run_splits(data, 0.1, 7) is data  # 10 of 100 held out already: the same numbers as null


def test_zero_trains_on_every_training_image_with_no_validation_split():
    data = prepared()
    split = run_splits(data, 0, 0)
    assert len(split["train_labels"]) == 100 and len(split["val_labels"]) == 0
    assert torch.equal(split["train_images"], torch.cat([data["train_images"], data["val_images"]]))
    assert split["test_images"] is data["test_images"]


def test_another_fraction_re_splits_every_training_image_with_the_split_seed():
    data = prepared()
    split = run_splits(data, 0.25, 3)
    _, val_idx = split_train_val(100, 0.25, 3)
    assert len(split["val_labels"]) == 25 and len(split["train_labels"]) == 75
    assert torch.equal(split["val_images"][:, 0, 0].long(), torch.from_numpy(val_idx))  # image i holds the value i
