#!/usr/bin/env bash
# The GPU check: on a machine with one CUDA GPU, from the repository root, in about 8 minutes.
#   1. the CUDA tests (tests/test_cuda.py: training, resume, evaluate, predict, the on-device
#      augmentation, an epoch with CUDA's sync debug mode set to error);
#   2. a smoke pipeline, `dvc repro` with every run on `device: cuda` (1 epoch, 2,000 images);
#   3. benchmarks/time_to_accuracy.py: resnet_fast-fashion_mnist's 3 seeds trained on the GPU.
#
#     bash benchmarks/gpu_check.sh            # writes into benchmarks/gpu_check/ (or $OUT where set)
#
# Python: .venv/bin/python where `make setup` made it, else $PYTHON, else python3, with src/ on
# PYTHONPATH (no install needed). It needs torch, pydantic, safetensors, pyyaml, tqdm, pillow,
# matplotlib and pytest, not DVC or MLflow (a GPU image without pydantic: carry its wheels).
# Data: data/raw/ where it is, else FASHIONBENCH_DATA_MIRROR (default ../shared/data), as the
# download stage reads it. Exits non-zero at the first part that fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [[ -x .venv/bin/python ]]; then PY=${PYTHON:-$ROOT/.venv/bin/python}; else PY=${PYTHON:-python3}; fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export FASHIONBENCH_DATA_MIRROR=${FASHIONBENCH_DATA_MIRROR:-$ROOT/../shared/data}
RESULTS=${OUT:-$ROOT/benchmarks/gpu_check}
mkdir -p "$RESULTS"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "error: no CUDA GPU visible to $PY (torch.cuda.is_available() is False): nothing to check here" >&2
    exit 2
fi
section() { echo; echo "=== $1 ($(date -u +%H:%M:%S) UTC)"; }

section "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "|", torch.cuda.get_device_name(),
"| bf16:", torch.cuda.is_bf16_supported())'

section "1. CUDA tests"
"$PY" -m pytest -p no:cacheprovider -m cuda tests/test_cuda.py -v 2>&1 | tee "$RESULTS/cuda_tests.log"

section "2. smoke pipeline on device: cuda"
# The stages in dvc.yaml's order, each as DVC runs it (python -m fashionbench.stages.<stage>), in a
# scratch copy, without MLflow: DVC's and MLflow's parts do not depend on the device and are tested
# on the CPU; this checks every stage's device path.
SMOKE=$(mktemp -d)
trap 'rm -rf "$SMOKE"' EXIT
cp -r params.yaml lab "$SMOKE/"
mkdir -p "$SMOKE/studies" "$SMOKE/tuning"
if [[ -d data/raw ]]; then mkdir -p "$SMOKE/data" && cp -r data/raw "$SMOKE/data/"; fi
(
    cd "$SMOKE"
    "$PY" -c 'import yaml
params = yaml.safe_load(open("params.yaml"))
params.update(device="cuda", max_epochs=1)
params["preprocess"].update(max_train=2000, max_test=1000)
yaml.safe_dump(params, open("params.yaml", "w"), sort_keys=False)'
    start=$(date +%s)
    stage() { echo "--- $*"; "$PY" -m "fashionbench.stages.$1" "${@:2}" 2>&1 | tail -3; }
    stage validate
    for d in $("$PY" -c 'import yaml; print(*yaml.safe_load(open("params.yaml"))["datasets"])'); do
        stage download "$d"; stage preprocess "$d"
    done
    for r in $("$PY" -c 'import yaml; print(*yaml.safe_load(open("params.yaml"))["runs"])'); do
        stage train "$r" --no-mlflow; stage evaluate "$r"
    done
    stage report
    echo "smoke pipeline: $(( $(date +%s) - start )) s"
    "$PY" -c 'import json, pathlib
for path in sorted(pathlib.Path("models").glob("*/train.json")):
    t = json.loads(path.read_text())
    m = json.loads(pathlib.Path("metrics", t["run"] + ".json").read_text())
    assert t["device"] == "cuda", path
    print("%-32s %s  %-14s %6.1f s  test %.2f%%" % (t["run"], t["device"], t["precision"], t["train_seconds"],
                                                    100 * m["test_accuracy"]))'
) 2>&1 | tee "$RESULTS/smoke_pipeline.log"

section "3. time to accuracy on the GPU"
if [[ ! -f data/prepared/fashion_mnist.safetensors ]]; then
    "$PY" -m fashionbench.stages.validate && "$PY" -m fashionbench.stages.download fashion_mnist \
        && "$PY" -m fashionbench.stages.preprocess fashion_mnist
fi
"$PY" benchmarks/time_to_accuracy.py --output "$RESULTS/TIME_TO_ACCURACY-gpu.md" 2>&1 | tail -40

section "done"
echo "results in $RESULTS"
