"""The report's run tables: every run beside its write-up's number, and the strong runs.
"""
from __future__ import annotations

from pathlib import Path

from fashionbench.core.files import read_json
from fashionbench.core.models import BEYOND_WRITEUPS
from fashionbench.core.paths import STUDIES_DIR
from fashionbench.core.schema import BEFORE_KEY_EXISTED
from fashionbench.core.stats import mean_std
from fashionbench.report.results import plain_configs
from fashionbench.report.verdicts import verdict
from fashionbench.report.writeups import SEED_RESULTS


def pct(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if std else "")


def setup_text(cfg: dict) -> str:
    return f"{cfg['optimizer']} {cfg['lr']:g}, {cfg['epochs']} epochs, batch {cfg['batch_size']}, {cfg['loss']}"


def status_text(m: dict) -> str:
    return "" if m.get("status") == "completed" else f" ({m.get('status')} at epoch {m.get('diverged_epoch')})"


def smoke_settings(params: dict, raw: dict | None = None) -> list[str]:
    """The settings that cut training short, as set: `preprocess.max_train`/`max_test`, and
    `max_epochs` where it is below a run's own epochs (read from the raw params.yaml `raw`:
    the validated runs hold the epochs after the cap)."""
    pre = params["preprocess"]
    found = [f"preprocess.{k}={getattr(pre, k)}" for k in ("max_train", "max_test") if getattr(pre, k) is not None]
    entries = (raw or {}).get("runs") or {}
    capped = sorted({cfg["max_epochs"] for run, cfg in plain_configs(params).items() if cfg.get("max_epochs") is not None
                     and (entries.get(run) or {}).get("epochs", (raw or {}).get("epochs", cfg["epochs"] + 1))
                     > cfg["max_epochs"]})
    if capped:
        found.insert(0, "max_epochs=" + "/".join(str(c) for c in capped))
    return found


SAME_RUN_IGNORES = ("seed", "seeds", "eval_batch_size")  # keys that do not change what a seed trains


STORED_PRECISION = {"float32": "float32", "bf16": "bf16 autocast", "auto": "float32"}


def trained_as_now(trained: dict, cfg: dict, trained_precision: str | None, precision: str | None) -> bool:
    """Whether a stored config (a study cell's) trains what params.yaml's `cfg` trains now, seeds
    aside, in the same arithmetic: precision 'auto' resolves per machine, so the precisions the two
    actually computed in (train.json's) must agree where the run's is known. A record from before
    it was kept computed in what its precision setting forces ('auto': float32, what it was on
    every CPU without native bf16)."""
    trained_precision = trained_precision or STORED_PRECISION.get(trained.get("precision", "auto"))
    return (all(trained.get(k, BEFORE_KEY_EXISTED.get(k)) == cfg.get(k)
                for k in set(trained) | set(cfg) if k not in SAME_RUN_IGNORES)
            and (precision is None or trained_precision == precision))


def extra_seed_cells(studies_dir: Path):
    """The results of the extra-seeds studies (catalogue `extra_seeds: true`), as
    (study, {run: (its stored config, its results)}) for each cell that trained and evaluated runs."""
    for path in sorted(studies_dir.glob("*.json")):
        study = read_json(path)
        for cell in study["cells"] if study.get("extra_seeds") else []:
            configs = cell.get("configs") or {}
            yield study, {run: (configs[run], entry) for run, entry in cell["runs"].items()
                          if run in configs and (entry or {}).get("metrics")}


def pooled_seeds(configs: dict[str, dict], evals: dict[str, dict | None], studies_dir: Path) -> dict[str, dict]:
    """run -> {seed: test accuracy} over the run's own seeds and those of every extra-seeds study
    whose cell trained the run as params.yaml has it now; a study that trained it otherwise is
    named in "stale" instead."""
    cells = list(extra_seed_cells(studies_dir))
    pooled = {}
    for run, cfg in configs.items():
        ev = evals.get(run) or {}
        found = dict(zip(cfg["seeds"], ev.get("test_accuracy_per_seed") or []))
        stale = []
        for study, runs in cells:
            if run not in runs:
                continue
            trained, m = runs[run][0], runs[run][1]["metrics"]
            if not trained_as_now(trained, cfg, m.get("precision"), ev.get("precision")):
                stale.append(study["study"])
                continue
            for seed, acc in zip(study["seeds"], m.get("test_accuracy_per_seed") or []):
                found.setdefault(seed, acc)
        pooled[run] = {"accuracy": found, "stale": stale}
    return pooled


def explained_by(name: str, studies: dict, studies_dir: Path) -> list[str]:
    """Lines naming the studies that test `name`'s gap (catalogue `explains`) and what they found."""
    return [f"  tested by `fashionbench study {key}` ({study.title}): "
            + (study.finding if study.finding and (studies_dir / f"{key}.json").is_file() else "not run yet.")
            for key, study in studies.items() if name in study.explains]


def best_epoch_line(history: list[dict], seed: int) -> list[str]:
    """Where the test curve of the run's first seed peaks: a seed that reported its best epoch
    rather than its last would be that far above ours (chosen on test: an explanation, not a result)."""
    rows = [r for r in history if r.get("test_accuracy") is not None]
    if not rows:
        return []
    best = max(rows, key=lambda r: r["test_accuracy"])
    return [f"  the best epoch of our seed {seed}'s test curve: {100 * best['test_accuracy']:.2f}% at epoch "
            f"{int(best['epoch'])} of {int(rows[-1]['epoch'])} (the last: {100 * rows[-1]['test_accuracy']:.2f}%)."]


def zoo_table(metrics: dict[str, dict | None], configs: dict[str, dict], smoke: bool = False,
              pooled: dict[str, dict] | None = None, studies: dict | None = None,
              studies_dir: Path = STUDIES_DIR, histories: dict[str, list[dict]] | None = None) -> list[str]:
    lines = ["| run | write-up | write-up's setup | write-up's accuracy | our setup | ours (mean ± std) | seeds | difference | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for run, cfg in configs.items():
        if cfg["model"] in BEYOND_WRITEUPS:
            continue  # their own section
        m = metrics.get(run)
        ref = SEED_RESULTS.get((cfg["model"], cfg["dataset"]))
        seed_cols = (f"{ref['seed']} | {ref['setup']} | {ref['accuracy']:.2f}" + (f" ± {ref['pm']}" if ref["pm"] else "")
                     if ref else "- | - | -")
        if m is None:
            lines.append(f"| {run} | {seed_cols} | {setup_text(cfg)} | not run yet | | | |")
            continue
        accuracies = (pooled or {}).get(run, {}).get("accuracy") or {}
        if accuracies and m.get("status") == "completed":
            ours, std = mean_std(list(accuracies.values()))
            n = len(accuracies)
        else:
            ours, std, n = m.get("test_accuracy"), m.get("test_accuracy_std") or 0.0, m.get("seeds", 1)
        for study in (pooled or {}).get(run, {}).get("stale", []):
            notes.append(f"- {run}: `fashionbench study {study}` trained it with other settings than params.yaml's "
                         "or in another precision; "
                         "its seeds are left out until the study is run again.")
        ours_text = pct(ours, std) + status_text(m)
        if ref and ours is not None:
            diff = f"{100 * ours - ref['accuracy']:+.2f}"
            word = verdict(100 * ours, ref["accuracy"], ref["pm"], 100 * std, n)
            word += " (smoke settings)" if smoke else ""
        else:
            diff, word = "n/a", ("no result" if ref else "no write-up number")
        lines.append(f"| {run} | {seed_cols} | {setup_text(cfg)} | {ours_text} | {n} | {diff} | {word} |")
        if word.startswith(("higher", "lower")) and not smoke:
            why = explained_by(run, studies or {}, studies_dir)
            notes += [f"- {run}, {word}:", *(why or ["  no study in lab/studies.yaml explains it yet."]),
                      *best_epoch_line((histories or {}).get(run) or [], cfg["seeds"][0])]
    return lines + ([""] + notes if notes else [])


# The options a fast run turns on, as the report names them (each is off by default).
FAST_OPTIONS = (("width", "width {}"), ("blocks", "blocks {}"), ("whiten", "whitened first layer"), ("normalize", "inputs {}"), ("augment", "augment {}"),
                ("random_erasing", "erasing {}"), ("label_smoothing", "label smoothing {}"),
                ("lr_schedule", "{} schedule"), ("warmup_epochs", "{} warm-up epochs"), ("ema", "EMA {}"),
                ("tta", "{} TTA"), ("weight_decay", "wd {}"), ("progressive_epochs", "{} epochs at {progressive_size} px"))


OFF = (None, False, 0, 0.0, "none", "constant")


def fast_setup_text(cfg: dict) -> str:
    optimizer = cfg["optimizer"] + (" nesterov" if cfg["nesterov"] else "")
    options = [text.format(cfg[key], **cfg) for key, text in FAST_OPTIONS if cfg.get(key) not in OFF]
    return ", ".join([f"{optimizer} {cfg['lr']:g}, {cfg['epochs']} epochs, batch {cfg['batch_size']}", *options])


def beyond_writeups_section(metrics: dict[str, dict | None], configs: dict[str, dict],
                            pooled: dict[str, dict] | None = None) -> list[str]:
    """fashionbench's own fast models beside the best write-up number on their dataset; ours pools
    the run's own seeds with an extra-seeds study's (`strong_seeds`), as the zoo table does."""
    runs = [run for run, cfg in configs.items() if cfg["model"] in BEYOND_WRITEUPS]
    if not runs:
        return []
    lines = ["## Beyond the write-ups", "",
             "fashionbench's own models (hyperparameters chosen on the validation split), beside the best number "
             "any write-up reports on the dataset. Training times: `metrics/<run>.json` and "
             "`benchmarks/TIME_TO_ACCURACY.md` (this report holds no timings).", "",
             "| run | setup | seeds | ours | validation | best seed number | difference |", "|---|---|---|---|---|---|---|"]
    for run in runs:
        cfg, m = configs[run], metrics.get(run)
        best = max((ref for (_, dataset), ref in SEED_RESULTS.items() if dataset == cfg["dataset"]),
                   key=lambda ref: ref["accuracy"], default=None)
        best_text = f"{best['accuracy']:.2f} (seed {best['seed']})" if best else "-"
        if m is None:
            lines.append(f"| {run} | {fast_setup_text(cfg)} | {len(cfg['seeds'])} | not run yet | | {best_text} | |")
            continue
        accuracies = (pooled or {}).get(run, {}).get("accuracy") or {}
        if accuracies and m.get("status") == "completed":
            (ours, std), n = mean_std(list(accuracies.values())), len(accuracies)
        else:
            ours, std, n = m.get("test_accuracy"), m.get("test_accuracy_std"), m.get("seeds", 1)
        diff = f"{100 * ours - best['accuracy']:+.2f}" if best and ours is not None else "n/a"
        lines.append(f"| {run} | {fast_setup_text(cfg)} | {n} | "
                     f"{pct(ours, std)}{status_text(m)} | {pct(m.get('val_accuracy'))} | "
                     f"{best_text} | {diff} |")
    stale = sorted({study for run in runs for study in (pooled or {}).get(run, {}).get("stale", [])})
    for study in stale:
        lines += ["", f"`fashionbench study {study}` trained these runs with other settings than params.yaml's "
                      "or in another precision; "
                      "its seeds are left out until the study is run again."]
    return lines + [""]


def history_at(history: list[dict], epoch: int, key: str = "test_accuracy") -> float | None:
    row = next((r for r in history if int(r["epoch"]) == epoch), None)
    return None if row is None or row.get(key) is None else row[key]


def extra_claims(metrics: dict, histories: dict, evals: dict) -> list[str]:
    """The seeds' other numbers that the default runs can answer (curves, losses, classes)."""
    claims = []

    def add(claim, seed_value, ours, unit="%", tolerance=1.0):
        if ours is None:
            claims.append(f"| {claim} | {seed_value}{unit} | not run yet | | |")
            return
        diff = ours - seed_value
        word = (f"reproduced (within {tolerance:g}{unit or ''})" if abs(diff) <= tolerance
                else ("higher" if diff > 0 else "lower"))
        claims.append(f"| {claim} | {seed_value}{unit} | {ours:.2f}{unit} | {diff:+.2f} | {word} |")

    def scaled(value):
        return None if value is None else 100 * value

    add("seed 000: mlp_512 after epoch 1", 83.0, scaled(history_at(histories.get("mlp_512-fashion_mnist", []), 1)))
    add("seed 000: cnn_small after 5 epochs", 88.5, scaled(history_at(histories.get("cnn_small-fashion_mnist", []), 5)))
    patch = histories.get("patch_mlp-fashion_mnist") or []
    add("seed 001: patch_mlp train accuracy", 94.1, scaled(patch[-1]["train_accuracy"]) if patch else None)
    for run, seed_loss in (("cnn_baseline-fashion_mnist", 0.8203), ("cnn_dropout-fashion_mnist", 0.25)):
        m = metrics.get(run)
        add(f"seed 004: {run.split('-')[0]} test loss", seed_loss, m and m.get("test_loss"), unit="", tolerance=0.05)
    for run in ("cnn_baseline-fashion_mnist", "cnn_dropout-fashion_mnist"):
        ev = evals.get(run)
        if ev:
            per_class = ev["per_class_accuracy"]
            worst = min(range(len(per_class)), key=lambda c: per_class[c])
            name = ev["class_names"][worst]
            word = "reproduced" if name == "Shirt" else "not reproduced"
            claims.append(f"| seed 004: {run.split('-')[0]} worst class | Shirt | {name} ({100 * per_class[worst]:.1f}%) | | {word} |")
    return ["| claim | write-up | ours | difference | verdict |", "|---|---|---|---|---|", *claims]
