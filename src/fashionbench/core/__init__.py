"""The library: data, models, the training recipe and loop, checkpoints, the CPU/device runtime,
output paths. It knows nothing of DVC, MLflow, Ray or the command line; the stages and tools
build on it.
"""



