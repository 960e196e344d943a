"""MLflow: where runs go (store), how the train and evaluate stages share one run (runs), which
process holds a run (holders), the model registry, and the UI link."""
