"""lmcli as a user gets it: the wheel, installed into a fresh virtual environment outside the
repository, trains the bundled demo config and runs the accounting, from another directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.conftest import REPO


def run(*args, cwd: Path, timeout: int = 300) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}: {result.stderr[-2000:]}"
    return result.stdout


def test_the_wheel_works_outside_the_repository(tmp_path):
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    source = tmp_path / "source"
    shutil.copytree(REPO / "lmcli", source / "lmcli", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", source,
        cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("lmcli-*.whl")

    env = tmp_path / "env"
    run(sys.executable, "-m", "venv", "--without-pip", env, cwd=tmp_path)
    run(sys.executable, "-m", "pip", "--python", env / "bin" / "python", "install", "--no-deps", "-q", wheel, cwd=tmp_path)
    # The dependencies (torch, typer, ...) come from this environment, whose editable lmcli a
    # path entry does not bring along (its .pth files are only read in site directories).
    env_site = Path(run(env / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                        cwd=tmp_path).strip())
    (env_site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    installed = run(env / "bin" / "python", "-c", "import lmcli; print(lmcli.__file__)", cwd=elsewhere)
    assert installed.startswith(str(env)), installed

    lmcli = env / "bin" / "lmcli"
    accounting = json.loads(run(lmcli, "accounting", "--model", "gpt2-xl", "--json", cwd=elsewhere))
    assert accounting["params"]["total"] == 2_127_057_600
    ws = ("--workspace", elsewhere / "ws")
    run(lmcli, "train-bpe", "--vocab", "1024", *ws, cwd=elsewhere)  # writes the demo corpus first
    run(lmcli, "encode", *ws, cwd=elsewhere)
    summary = json.loads(run(
        lmcli, "train", "--config", "demo", "--name", "from-wheel", "--set", "training.max_steps=3",
        "--set", "optimizer.warmup_steps=1", "--set", "training.final_eval_tokens=2048", *ws, "--json", cwd=elsewhere,
    ))
    assert summary["steps"] == 3 and (elsewhere / "ws" / "runs" / "from-wheel" / "latest.pt").is_file()
