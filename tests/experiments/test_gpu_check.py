"""benchmarks/gpu_check.py, the script to run first on a GPU machine, runs its every step: here on the
CPU, tiny (its numbers mean nothing here; the test is that the day a GPU comes, the script works)."""

from __future__ import annotations

import json

from benchmarks.gpu_check import main


def test_gpu_check_runs_every_step_and_writes_its_summary(tmp_path, capsys):
    out = tmp_path / "gpu-check.json"
    report = main(["--device", "cpu", "--quick", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert [(r["shape"], r["kernels"]) for r in report["throughput"]] == [("tiny", "fast"), ("tiny", "torch")]
    for r in report["throughput"]:
        assert r["lmcli"]["tokens_per_s"] > 0 and r["pytorch"]["tokens_per_s"] > 0
    train = report["train"]
    assert train["steps"] == 20 and train["first_step_s"] > 0 and train["graph_breaks"] == 0 and train["tokens_per_s"] > 0
    assert report["generate"]["tokens_per_s"] > 0
    assert "gpu_check on cpu" in capsys.readouterr().out
