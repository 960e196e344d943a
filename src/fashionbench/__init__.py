"""fashionbench: classic image classifiers on Fashion-MNIST and MNIST, rebuilt by `dvc repro`."""
