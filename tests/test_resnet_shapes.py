"""benchmarks/resnet_shapes.py: each shape timed on the run's own training steps, end to end on tiny data."""
import importlib.util
import re
import sys

from conftest import REPO, set_run

sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its siblings
spec = importlib.util.spec_from_file_location("resnet_shapes", REPO / "benchmarks" / "resnet_shapes.py")
shapes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(shapes)

TINY = {"model": "resnet_fast", "width": 4, "epochs": 2, "augment": "crop_flip", "lr_schedule": "onecycle", "ema": 0.9}


def test_every_shape_gets_a_row_with_its_parameters_and_its_ratio_to_the_first(workspace, tmp_path):
    set_run(workspace, "mlp_64-fashion_mnist", **TINY)
    out = tmp_path / "s.md"
    assert shapes.main(["--run", "mlp_64-fashion_mnist", "--shapes", "1,1,1", "0,1,2", "--steps", "2",
                        "--matmul-size", "512", "--output", str(out)]) == 0
    text = out.read_text()
    assert re.search(r"^\| \[1, 1, 1\] \| 7,862 \| [\d.]+ \| [\d.]+ \| 1\.00 \| [\d.e-]+ \|$", text, re.M)
    # width 4, [0, 1, 2]: stem 1->4, 4->8 and one block of 8, 8->16 and two blocks of 16, head 16->10
    assert re.search(r"^\| \[0, 1, 2\] \| 12,230 \| ", text, re.M)


def test_a_shape_the_model_cannot_take_is_named_in_one_line(workspace, tmp_path, capsys):
    set_run(workspace, "mlp_64-fashion_mnist", **TINY)
    assert shapes.main(["--run", "mlp_64-fashion_mnist", "--shapes", "1,1,1,1,1,1", "--output", str(tmp_path / "s.md")]) == 1
    assert capsys.readouterr().err.startswith("error: runs.mlp_64-fashion_mnist.blocks: expected null or a list of 1 to 5")



def test_a_shapes_share_of_the_machine_is_its_flop_rate_over_the_multiplys():
    rows = [{"blocks": [1, 1, 1], "parameters": 10, "gflop": 20.0, "ms_per_step": 200.0},
            {"blocks": [0, 1, 2], "parameters": 20, "gflop": 20.0, "ms_per_step": 100.0}]
    text = shapes.markdown({}, [], rows, matmul=200e9)  # 20 GFLOP in 0.2 s is 100 GFLOP/s: half of 200
    assert "| [1, 1, 1] | 10 | 20.00 | 200.0 | 1.00 | 0.50 |" in text
    assert "| [0, 1, 2] | 20 | 20.00 | 100.0 | 0.50 | 1.0 |" in text
