"""`fashionbench tune <run>`: search a run's hyperparameters with Ray Tune.

The search is data: the run's entry in lab/search_spaces.yaml (a distribution per training key, the
number of trials, the validation metric, the scheduler, trials at once, CPUs per trial),
validated like params.yaml. Each trial trains the run as the pipeline does (params.yaml's entry,
its first seed, the prepared data) with the sampled keys set, reports its validation metric after
every epoch (ASHA stops the worst trials early on it) and is one MLflow run nested under the
session's run. The result, tuning/<run>.json, holds every trial's config with its validation and
test accuracy, the best config (chosen on validation only) and the `dvc exp run -S ...` command
that reproduces it through the pipeline; the report reads it.

With no --address the command starts an embedded Ray on this machine and shuts it down at the
end; --address joins a running cluster (`ray start`), whose trials then need a tracking server and
--storage every node reaches. Each trial checkpoints every epoch there, and a trial Ray retries
(its node died) continues from its last checkpoint (checkpoints.py).
"""
