"""`dvc plots show` and `dvc plots diff` write a page that renders with no network: .dvc/config
names dvc_plots_template/offline.html (written by `make setup`, dvc_plots_template/build.py), which
inlines Vega, Vega-Lite and vega-embed where dvc-render's own page loads them from a CDN.

The end-to-end test renders this repository's committed plot data for two runs in headless Chromium
inside a loopback-only network namespace (`unshare -n`, then `ip link set lo up`), as tests/test_ray.py
does; it is skipped where Chromium is not installed (.ci/run installs it)."""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from browser import chromium, require_chromium
from pipeline_repo import git, run, tiny_params

REPO = Path(__file__).resolve().parents[1]
TEMPLATE_DIR = REPO / "dvc_plots_template"
BUILT_PAGE = TEMPLATE_DIR / "offline.html"
REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.IGNORECASE)
CANVAS = re.compile(r"<canvas[^>]*class=\"marks\"")
RUNS = ("mlp_64-fashion_mnist", "lenet5_modern-mnist")  # tiny_params' runs: both have committed confusion data


def load_build():
    spec = importlib.util.spec_from_file_location("dvc_plots_template_build", TEMPLATE_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def configured_template(root: Path) -> Path:
    """The page DVC fills, found as `dvc plots` finds it (dvc/commands/plots.py: a relative
    plots.html_template is taken from the .dvc directory)."""
    from dvc.config import Config

    dvc_dir = root / ".dvc"
    path = Config(dvc_dir=str(dvc_dir)).get("plots", {}).get("html_template")
    assert path, ".dvc/config names no plots.html_template"
    return Path(os.path.normpath(os.path.join(dvc_dir, path)))


def built_page() -> str:
    if not BUILT_PAGE.is_file():
        pytest.fail(f"{BUILT_PAGE} is missing: `make setup` writes it (dvc_plots_template/build.py)")
    return BUILT_PAGE.read_text(encoding="utf-8")


def test_the_page_dvc_fills_inlines_vega_and_loads_no_remote_script():
    assert configured_template(REPO) == BUILT_PAGE
    page = built_page()
    assert "{plot_divs}" in page and "{refresh_tag}" in page
    assert "{scripts}" not in page, "dvc-render would put its CDN <script> tags there"
    assert not REMOTE_SCRIPT.search(page)
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.IGNORECASE), "every script is inline"
    for name, version, *_ in load_build().PINS:
        assert f"<script>/* {name}@{version}," in page


def test_the_pins_are_the_versions_dvc_render_loads():
    from dvc_render.vega import VegaRenderer

    cdn = dict(re.findall(r"npm/([a-z-]+)@([0-9.]+)", VegaRenderer.SCRIPTS))
    assert cdn == {name: version for name, version, *_ in load_build().PINS}


def test_the_builder_checks_what_it_inlines():
    build = load_build()
    skeleton = (TEMPLATE_DIR / "page.html").read_text(encoding="utf-8")
    assert "{scripts}" not in skeleton and not REMOTE_SCRIPT.search(skeleton)
    page = build.page(skeleton, [build.script_tag("x", "1.0.0", "var x = 1;\n//# sourceMappingURL=x.min.js.map\n")])
    assert "<script>/* x@1.0.0, BSD-3-Clause, from its npm tarball */\nvar x = 1;\n</script>" in page
    assert build.MARKER not in page and "sourceMappingURL" not in page
    for bad in ("a = '</script>';", "a = '{plot_divs}';"):
        with pytest.raises(ValueError):
            build.script_tag("x", "1.0.0", bad)
    data = b"tarball bytes"
    good = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    build.check_integrity(data, good, "x")
    with pytest.raises(ValueError, match="sha512 mismatch"):
        build.check_integrity(data + b"!", good, "x")


def write_history(path: Path, epochs: int = 10) -> None:
    """A learning curve in train's CSV layout: accuracies rising towards 0.9 (train) and 0.85 (test)."""
    rows = ["epoch,train_loss,train_accuracy,test_loss,test_accuracy,seconds"]
    for epoch in range(1, epochs + 1):
        rows.append(f"{epoch},{1 / epoch:.4f},{0.9 - 0.3 / epoch:.4f},{1.2 / epoch:.4f},{0.85 - 0.3 / epoch:.4f},{epoch:.1f}")
    path.write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_dvc_plots_show_and_diff_render_with_no_network(tmp_path):
    require_chromium()
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("`unshare -n` is refused here (needs root or user namespaces)")
    built_page()

    # A repository with this project's dvc.yaml, plot templates and .dvc/config, and two runs'
    # committed plot data: `dvc plots` reads the plots' definitions and files, no stage runs.
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    git(root, "init", "-q")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "test")
    run(root, "dvc", "init", "-q")
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    (root / "dvc_plots_template").mkdir()
    shutil.copy(BUILT_PAGE, root / "dvc_plots_template" / "offline.html")
    for kind in ("history", "confusion"):
        (root / "plots" / kind).mkdir(parents=True)
    for name in RUNS:  # the curves as train writes them (they live in DVC's cache, not git); the committed confusions
        write_history(root / "plots" / "history" / f"{name}.csv")
        shutil.copy(REPO / "plots" / "confusion" / f"{name}.csv", root / "plots" / "confusion" / f"{name}.csv")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "plots")
    assert configured_template(root) == root / "dvc_plots_template" / "offline.html"

    run(root, "dvc", "plots", "show")
    # The workspace's last epoch dropped from one run's curve: `dvc plots diff` draws HEAD and workspace.
    history = root / "plots" / "history" / f"{RUNS[0]}.csv"
    history.write_text("".join(history.read_text().splitlines(keepends=True)[:-1]))
    run(root, "dvc", "plots", "diff", "HEAD", "-o", "dvc_plots_diff")

    plots = 2 * len(RUNS)  # a learning curve and a confusion matrix per run
    for n, (out, revisions) in enumerate((("dvc_plots", ["workspace"]), ("dvc_plots_diff", ["HEAD", "workspace"]))):
        index = root / out / "index.html"
        html = index.read_text(encoding="utf-8")
        assert not REMOTE_SCRIPT.search(html) and "cdn." not in html
        assert html.count("vegaEmbed('#") == plots
        for name in RUNS:
            assert f'"title": "{name}"' in html
        for rev in revisions:
            assert f'"rev": "{rev}"' in html
        dom = chromium(tmp_path / f"profile-dom-{n}", "--dump-dom", index.as_uri()).stdout
        assert len(CANVAS.findall(dom)) == plots, f"{out}: {len(CANVAS.findall(dom))} of {plots} plots rendered"

    # The curves are drawn: the screenshot has the template's train (blue) and test (orange) lines.
    import numpy as np
    from PIL import Image

    png = tmp_path / "plots.png"
    chromium(tmp_path / "profile-shot", f"--screenshot={png}", (root / "dvc_plots" / "index.html").as_uri())
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=int)

    def near(rgb) -> int:
        return int((np.abs(pixels - rgb).sum(axis=-1) < 30).sum())

    blue, orange = near((76, 120, 168)), near((245, 133, 24))  # Vega's first two category colours
    assert blue > 500 and orange > 500, f"train (blue) {blue} and test (orange) {orange} pixels"
