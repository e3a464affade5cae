"""Learning curves (matplotlib file and braille terminal plot) on small fake run directories."""

from __future__ import annotations

import pytest
from matplotlib.image import imread

from lmcli.errors import LmcliError
from lmcli.experiments.plot import Curve, build_curves, curve_points, legend_labels, loss_ceiling
from lmcli.experiments.runs import read_run
from lmcli.ui.braille import BrailleCanvas, braille_plot
from tests.experiments.test_runs import write_run


def test_legend_names_the_config_values_that_differ(tmp_path):
    runs = [read_run(write_run(tmp_path, "a", lr=1e-3)), read_run(write_run(tmp_path, "b", lr=3e-3, batch_size=8))]
    assert legend_labels(runs) == ["a (lr=0.001, batch_size=4)", "b (lr=0.003, batch_size=8)"]
    assert legend_labels(runs[:1]) == ["a"]  # a single run: nothing to compare


def test_val_loss_against_time_uses_the_train_row_of_the_same_step(tmp_path):
    run = read_run(write_run(tmp_path, "a", steps=40))
    assert curve_points(run, "val_loss", "step") == ([20.0, 40.0], [pytest.approx(3.1), pytest.approx(2.1)])
    assert curve_points(run, "val_loss", "time")[0] == [10.0, 20.0]  # elapsed_s = step * 0.5
    assert curve_points(run, "lr", "tokens")[0] == [640.0, 1280.0, 1920.0, 2560.0]


def test_unknown_metric_or_empty_runs_are_errors(tmp_path):
    run = read_run(write_run(tmp_path, "a"))
    with pytest.raises(LmcliError, match="unknown metric"):
        build_curves([run], "accuracy", "step")
    with pytest.raises(LmcliError, match="unknown x axis"):
        build_curves([run], "val_loss", "epoch")
    empty = read_run(write_run(tmp_path, "b", steps=10, end=None))  # one train row, no eval yet
    with pytest.raises(LmcliError, match="none of the runs has val_loss"):
        build_curves([empty], "val_loss", "step")


def test_an_exploding_loss_does_not_flatten_the_other_curves():
    calm = Curve("calm", [1, 2], [6.0, 3.0], False)
    assert loss_ceiling([calm]) is None
    assert loss_ceiling([calm, Curve("boom", [1, 2], [5.0, 80.0], True)]) == pytest.approx(6.3)


def test_braille_dots_and_lines():
    canvas = BrailleCanvas(2, 1)  # 4 x 4 pixels
    canvas.set(0, 0, "red")  # bottom-left dot of the first character
    assert canvas.rows()[0].plain == "⡀⠀"
    canvas.line(0, 3, 3, 3, "red")  # the top row across both characters
    assert canvas.rows()[0].plain == "⡉⠉"


def test_braille_plot_has_ticks_range_and_legend():
    text = braille_plot([("up", [0, 10], [1.0, 2.0]), ("nan", [0, 5], [float("nan"), 1.5])], width=20, height=4,
                        x_label="step").plain
    lines = text.splitlines()
    assert lines[0].lstrip().startswith("2 ┤") and lines[2].lstrip().startswith("1.5 ┤") and lines[3].lstrip().startswith("1 ┤")
    assert "0" in lines[5] and lines[5].rstrip().endswith("10") and "step" in lines[5]
    assert lines[6].endswith("up") and lines[7].endswith("nan")
    assert braille_plot([("x", [1], [float("inf")])]).plain == "(nothing to plot)"


def test_plot_cli_writes_a_png_of_named_runs(cli, tmp_path):
    runs_dir = tmp_path / "workspace" / "runs"
    write_run(runs_dir, "lr-small", lr=1e-3)
    write_run(runs_dir, "lr-big", lr=1e3, end="diverged", steps=20)
    out = tmp_path / "figs" / "curves.png"
    result = cli("plot", "lr-small", str(runs_dir / "lr-big"), "--x", "time", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert f"wrote {out} (2 runs, val_loss vs time)" in result.stdout
    height, width, _ = imread(out).shape
    assert (width, height) == (800, 500)
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]  # no temporary file left behind


def test_plot_cli_terminal_all_runs_of_the_workspace(cli, tmp_path):
    runs_dir = tmp_path / "workspace" / "runs"
    write_run(runs_dir, "one", lr=1e-3)
    write_run(runs_dir, "two", lr=2e-3)
    result = cli("plot", "--terminal", "--metric", "lr")
    assert result.exit_code == 0, result.stderr
    assert "learning rate" in result.stdout and "one (lr=0.001)" in result.stdout and "two (lr=0.002)" in result.stdout
    assert any("\u2800" < ch <= "\u28ff" for ch in result.stdout)  # braille dots were drawn
    assert not (tmp_path / "curves.png").exists() and "wrote" not in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--metric", "acc"], "unknown metric 'acc'"),
    (["nope"], "no run nope"),
    (["-o", "curves.xyz"], "cannot write a figure to curves.xyz"),
])
def test_plot_cli_errors_are_one_line(cli, tmp_path, args, message):
    write_run(tmp_path / "workspace" / "runs", "one")
    result = cli("plot", *args)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_plot_cli_without_runs(cli):
    result = cli("plot")
    assert result.exit_code == 1 and "no runs to plot" in result.stderr
