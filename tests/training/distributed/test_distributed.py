"""Training past one process, on CPU with gloo: 2 processes of 1 thread, each launch with a timeout.

The claim under test: the global batch, not the hardware, defines a step. The same 20 steps as
1 process, 1 process with 4 micro-batches, 2 processes with DDP and 2 with FSDP give the same
losses and weights (to float rounding), a run resumes on another number of processes, and a
failing, killed or interrupted rank ends the whole job with one message.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from lmcli.training.distributed import World
from lmcli.training.run import RunSpec, run_training
from lmcli.workspace import Workspace
from tests.conftest import REPO
from tests.training.test_run import byte_workspace

LAUNCH_TIMEOUT = 180  # seconds; a hung collective fails the test instead of hanging CI
STEPS = ["--set", "training.max_steps=20", "--set", "optimizer.cosine_steps=20", "--set", "training.batch_size=8"]
HALF = ["--set", "training.max_steps=10", *STEPS[2:]]  # the first 10 of the same 20 steps
MICRO = ["--set", "training.micro_batch_size=2"]
FAILING_WORKER = Path(__file__).with_name("failing_worker.py")
LOSS_RTOL, WEIGHT_RTOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return byte_workspace(tmp_path_factory.mktemp("distributed"))


def env(workspace: Path) -> dict[str, str]:
    return {**os.environ, "LMCLI_WORKSPACE": str(workspace), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def lmcli(workspace: Path, *args: str, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``python -m lmcli ARGS`` (or under ``launcher``), to its end or LAUNCH_TIMEOUT."""
    command = [sys.executable, *launcher, "-m", "lmcli", *args]
    return subprocess.run(command, env=env(workspace), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)


TORCHRUN = ("-m", "torch.distributed.run", "--nproc-per-node", "2")


def train_in_process(workspace: Path, name: str, *overrides: str) -> Path:
    spec = RunSpec(config=str(workspace.parent / "tiny.toml"), name=name, overrides=overrides)
    run_training(spec, Workspace(workspace), world=World())
    return workspace / "runs" / name


def config_args(workspace: Path, name: str) -> list[str]:
    return ["train", "--config", str(workspace.parent / "tiny.toml"), "--name", name, "--quiet"]


def losses(run_dir: Path, kind: str = "train", key: str = "loss") -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if r["kind"] == kind]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "latest.pt", weights_only=True)["model"]


def weight_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest ||a - b|| / ||a|| over the tensors."""
    assert a.keys() == b.keys()
    return max(((a[k] - b[k]).norm() / a[k].norm()).item() for k in a)


def loss_difference(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) == 20  # log_interval = 1: every step
    return max(abs(x - y) / abs(x) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def straight(workspace) -> dict[str, Path]:
    """The 20 steps four ways: 1 process, 1 process x 4 micro-batches, 2 processes (DDP) x 2, 2 with FSDP."""
    runs = {
        "one": train_in_process(workspace, "one", *STEPS[1::2]),
        "accumulated": train_in_process(workspace, "accumulated", *STEPS[1::2], *MICRO[1::2]),
    }
    ddp = lmcli(workspace, *config_args(workspace, "ddp"), *STEPS, *MICRO, "--nproc", "2")
    assert ddp.returncode == 0, ddp.stderr
    fsdp = lmcli(workspace, *config_args(workspace, "fsdp"), *STEPS, *MICRO, "--set", "training.parallel='fsdp'",
                 launcher=TORCHRUN)
    assert fsdp.returncode == 0, fsdp.stderr
    return {**runs, "ddp": workspace / "runs" / "ddp", "fsdp": workspace / "runs" / "fsdp"}


@pytest.mark.parametrize("way", ["accumulated", "ddp", "fsdp"])
def test_every_step_is_the_same_on_any_number_of_processes(straight, way):
    assert loss_difference(losses(straight["one"]), losses(straight[way])) < LOSS_RTOL
    assert weight_difference(weights(straight["one"]), weights(straight[way])) < WEIGHT_RTOL
    for kind in ("eval", "final_eval"):  # validation shared among the ranks, summed: the same loss
        one, other = losses(straight["one"], kind, "val_loss"), losses(straight[way], kind, "val_loss")
        assert len(one) == len(other) > 0 and all(abs(a - b) / a < LOSS_RTOL for a, b in zip(one, other))


def test_checkpoints_of_several_processes_are_those_of_one(straight):
    one, fsdp = (torch.load(straight[w] / "latest.pt", weights_only=True) for w in ("one", "fsdp"))
    assert one["model"].keys() == fsdp["model"].keys()  # the CS336 names, no wrapper prefixes
    moments = fsdp["optimizer"]["state"][0]["exp_avg"]
    assert type(moments) is torch.Tensor and moments.shape == one["optimizer"]["state"][0]["exp_avg"].shape  # gathered whole
    rows = [json.loads(line) for line in (straight["ddp"] / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if r["kind"] == "final_eval"]) == 1  # rank 0 alone writes


def test_resume_on_one_process_continues_two(workspace, straight):
    first = lmcli(workspace, *config_args(workspace, "two-then-one"), *HALF, *MICRO, "--nproc", "2")
    assert first.returncode == 0, first.stderr
    resumed = lmcli(workspace, "train", "--resume", "two-then-one", "--set", "training.max_steps=20", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    run_dir = workspace / "runs" / "two-then-one"
    assert loss_difference(losses(straight["one"]), losses(run_dir)) < LOSS_RTOL
    assert weight_difference(weights(straight["one"]), weights(run_dir)) < WEIGHT_RTOL


@pytest.mark.parametrize("way", ["ddp", "fsdp"])
def test_resume_on_as_many_processes_is_bit_exact(workspace, straight, way):
    mode = ["--set", f"training.parallel='{way}'"]
    first = lmcli(workspace, *config_args(workspace, f"two-then-two-{way}"), *HALF, *MICRO, *mode, "--nproc", "2")
    assert first.returncode == 0, first.stderr
    resumed = lmcli(workspace, "train", "--resume", f"two-then-two-{way}", "--set", "training.max_steps=20", "--quiet",
                    "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(straight[way]), weights(workspace / "runs" / f"two-then-two-{way}")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert losses(straight[way]) == losses(workspace / "runs" / f"two-then-two-{way}")


def test_fsdp_resumes_a_checkpoint_of_one_process(workspace, straight):
    first = lmcli(workspace, *config_args(workspace, "one-then-fsdp"), *HALF, *MICRO)
    assert first.returncode == 0, first.stderr
    resumed = lmcli(workspace, "train", "--resume", "one-then-fsdp", "--set", "training.max_steps=20", "--set",
                    "training.parallel='fsdp'", "--quiet", "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr
    run_dir = workspace / "runs" / "one-then-fsdp"
    assert loss_difference(losses(straight["one"]), losses(run_dir)) < LOSS_RTOL
    assert weight_difference(weights(straight["one"]), weights(run_dir)) < WEIGHT_RTOL


def test_a_batch_that_does_not_divide_among_processes_is_one_error(workspace):
    result = lmcli(workspace, *config_args(workspace, "odd"), "--set", "training.batch_size=6",
                   "--set", "training.micro_batch_size=2", "--nproc", "2")
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: training.batch_size (6) must be a multiple of training.micro_batch_size (2) "
                                     "x 2 processes: each optimizer step accumulates whole micro-batches")
    assert not (workspace / "runs" / "odd").exists()


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_failing_rank_ends_the_job_with_its_error_once(workspace, rank):
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *TORCHRUN, str(FAILING_WORKER), *config_args(workspace, f"fail-{rank}"), *STEPS],
                            env={**env(workspace), "FAIL_RANK": rank}, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert result.returncode != 0 and time.perf_counter() - started < 60
    lmcli_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lmcli_lines == [f"error: injected failure on rank {rank}"]
    package = str(REPO / "lmcli") + os.sep  # the checkout's own folder may be named lmcli too
    assert package not in result.stderr.split("Traceback")[0]  # no traceback of lmcli's own (torchrun prints its report)


def test_when_every_rank_fails_one_reports_and_the_others_wait_until_it_has(workspace):
    # The ranks that stay quiet must not exit first: the launcher would stop the reporter mid-message.
    result = subprocess.run([sys.executable, *TORCHRUN, str(FAILING_WORKER), *config_args(workspace, "fail-all"), *STEPS],
                            env={**env(workspace), "FAIL_RANK": "all", "SLOW_REPORT": "2"}, capture_output=True, text=True,
                            timeout=LAUNCH_TIMEOUT)
    assert result.returncode != 0
    lmcli_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lmcli_lines) == 1 and lmcli_lines[0].startswith("error: injected failure on rank "), result.stderr[-2000:]


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_rank_failing_before_the_ranks_meet_is_reported(workspace, rank):
    # Before the process group exists, rank 0 speaks for checks every rank makes; a failure of
    # rank 1 alone must still be shown, once rank 0 has had its chance.
    result = subprocess.run([sys.executable, *TORCHRUN, str(FAILING_WORKER), *config_args(workspace, f"start-{rank}"), *STEPS],
                            env={**env(workspace), "FAIL_RANK": rank, "FAIL_AT": "start"}, capture_output=True, text=True,
                            timeout=LAUNCH_TIMEOUT)
    assert result.returncode != 0
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [f"error: injected failure on rank {rank}"]


def start_nproc_run(workspace: Path, name: str) -> tuple[subprocess.Popen, Path]:
    """A long `lmcli train --nproc 2` in its own process group, returned once it has logged a step."""
    args = [*config_args(workspace, name), "--set", "training.max_steps=100000", "--set", "training.checkpoint_interval=100000",
            "--set", "training.eval_interval=100000", "--nproc", "2"]
    process = subprocess.Popen([sys.executable, "-m", "lmcli", *args], env=env(workspace), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = workspace / "runs" / name / "metrics.jsonl"
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while not (metrics.is_file() and metrics.stat().st_size) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, process.communicate()
    return process, workspace / "runs" / name


def test_a_killed_rank_ends_the_job_within_seconds(workspace):
    process, _ = start_nproc_run(workspace, "killed")
    rank1 = [p for p in psutil.Process(process.pid).children(recursive=True) if p.environ().get("RANK") == "1"]
    rank1[0].kill()
    started = time.perf_counter()
    _, stderr = process.communicate(timeout=LAUNCH_TIMEOUT)
    assert time.perf_counter() - started < 30
    assert process.returncode == 1
    assert stderr.splitlines() == [f"error: rank 1 (pid {rank1[0].pid}) was killed by SIGKILL; the other ranks were stopped"]


def test_ctrl_c_saves_once_and_every_rank_exits_130(workspace):
    process, run_dir = start_nproc_run(workspace, "interrupted")
    workers = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGINT)  # what the terminal does: every process of the job gets it
    _, stderr = process.communicate(timeout=LAUNCH_TIMEOUT)
    assert process.returncode == 130
    assert stderr.splitlines() == ["error: interrupted"]
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    stopped = [r for r in rows if r["kind"] == "interrupted"]
    assert len(stopped) == 1
    assert torch.load(run_dir / "latest.pt", weights_only=True)["iteration"] == stopped[0]["step"]


SHORT = ["--set", "training.max_steps=4", "--set", "optimizer.warmup_steps=1", "--set", "training.eval_interval=2",
         "--set", "training.checkpoint_interval=2", "--set", "training.final_eval_tokens=256"]
FINISHING_LAUNCHES = {  # how a 2-process job is started: launcher, extra arguments
    "ddp --nproc": ((), ["--nproc", "2"]),
    "fsdp --nproc": ((), ["--set", "training.parallel='fsdp'", "--nproc", "2"]),
    "ddp torchrun": (TORCHRUN, []),
    "fsdp torchrun": (TORCHRUN, ["--set", "training.parallel='fsdp'"]),
}


def test_finished_jobs_exit_0_every_time(workspace):
    """Each way of running 2 processes, two jobs at a time (a loaded machine is where a rank's shutdown
    raced its peer's): every finished job exits 0 with nothing on stderr. With the other finishing
    launches of this file, the suite starts 12 two-process jobs and requires exit 0 of each."""
    jobs = [(way, launcher, args) for way, (launcher, args) in FINISHING_LAUNCHES.items()]
    for pair in (jobs[i:i + 2] for i in range(0, len(jobs), 2)):
        started = [(label, subprocess.Popen(
            [sys.executable, *launcher, "-m", "lmcli", *config_args(workspace, f"finish-{label.replace(' ', '-')}"),
             *SHORT, *args], env=env(workspace), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            for label, launcher, args in pair]
        for label, process in started:
            _, stderr = process.communicate(timeout=LAUNCH_TIMEOUT)
            assert process.returncode == 0, (label, stderr)
            if not label.endswith("torchrun"):  # torchrun logs its own lines; --nproc says nothing more
                assert stderr == "", (label, stderr)


def test_a_diverged_job_is_one_error_and_exit_1(workspace):
    result = lmcli(workspace, *config_args(workspace, "diverged"), *SHORT, "--set", "optimizer.lr=1e9",
                   "--set", "optimizer.grad_clip=0", "--nproc", "2")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: training diverged at step ")


def test_workers_of_a_killed_launcher_save_and_stop(workspace):
    process, run_dir = start_nproc_run(workspace, "orphaned")
    workers = psutil.Process(process.pid).children(recursive=True)
    process.kill()  # kill -9: the launcher cannot stop them itself
    process.wait()
    _, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    stopped = [r for r in rows if r["kind"] == "interrupted"]
    assert len(stopped) == 1
    assert torch.load(run_dir / "latest.pt", weights_only=True)["iteration"] == stopped[0]["step"]


def test_ctrl_c_while_workers_start_is_one_line(workspace):
    """Ctrl-C at several moments of the start (importing, loading data, joining): one message, exit 130."""
    for delay in (0.5, 2.5, 3.5):
        process = subprocess.Popen([sys.executable, "-m", "lmcli", *config_args(workspace, f"early-{delay}"), "--nproc", "2"],
                                   env=env(workspace), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGINT)
        signalled = time.perf_counter()
        _, stderr = process.communicate(timeout=LAUNCH_TIMEOUT)
        if process.returncode == 0:  # the run was done before the signal came (a fast machine)
            continue
        assert (process.returncode, stderr.splitlines()) == (130, ["error: interrupted"]), (delay, stderr)
        assert time.perf_counter() - signalled < 20  # not the launcher's 60 s wait for workers that ignore it


def test_a_rendezvous_port_in_use_is_one_error(workspace):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rank0 = {**env(workspace), "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(port)}
        result = subprocess.run([sys.executable, "-m", "lmcli", *config_args(workspace, "port")], env=rank0,
                                capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: rank 0 could not join the job at 127.0.0.1:{port} (MASTER_ADDR:MASTER_PORT): ")
    assert "address already in use" in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("bf16", [False, True])
def test_fsdp_gathers_bf16_weights_under_bf16_and_keeps_float32_slices(tmp_path, bf16):
    """MixedPrecisionPolicy: a block computes with bf16 weights under bf16 (half the all-gather
    traffic), while the sharded parameters the optimizer updates stay float32."""
    import torch.distributed as dist

    from lmcli.model import ModelConfig, TransformerLM
    from lmcli.training.device import Runtime
    from lmcli.training.parallelize import DataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = TransformerLM.from_config(ModelConfig(vocab_size=64, context_length=8, d_model=16, num_layers=2,
                                                      num_heads=2, d_ff=32))
        runtime = Runtime(torch.device("cpu"), autocast=bf16, compile=False, peak_flops=None)
        parallel = DataParallel(model, "fsdp", runtime)
        seen = []
        model.layers[0].ffn.w1.register_forward_pre_hook(lambda module, args: seen.append(module.weight.dtype))
        ids = torch.randint(0, 64, (2, 8))
        with runtime.autocast_context():
            parallel.trained(ids, targets=ids).backward()
        assert seen == [torch.bfloat16 if bf16 else torch.float32]
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("way", ["ddp", "fsdp"])
def test_muon_takes_the_same_steps_on_two_processes(workspace, way):
    """DDP averages the gradients before the step, so every rank orthogonalizes the same update; FSDP
    gathers each sliced matrix's update whole, orthogonalizes it and slices it back."""
    muon = ["--set", "optimizer.name='muon'"]
    one = workspace / "runs" / "muon-one"
    if not one.exists():
        one = train_in_process(workspace, "muon-one", *STEPS[1::2], *muon[1::2])
    run = lmcli(workspace, *config_args(workspace, f"muon-{way}"), *STEPS, *MICRO, *muon, "--set",
                f"training.parallel='{way}'", "--nproc", "2")
    assert run.returncode == 0, run.stderr
    assert loss_difference(losses(one), losses(workspace / "runs" / f"muon-{way}")) < LOSS_RTOL
    assert weight_difference(weights(one), weights(workspace / "runs" / f"muon-{way}")) < WEIGHT_RTOL


def test_a_mixture_takes_the_same_steps_on_two_processes(workspace):
    """The windows (and their sources) are drawn once for the global batch, then split over the ranks."""
    data = workspace / "data"
    train = np.load(data / "train.npy")
    np.save(data / "mix-a.npy", train[: len(train) // 3])
    np.save(data / "mix-b.npy", train[len(train) // 3 :])
    mixture = ["--set", 'data.train=[{path = "data/mix-a.npy", weight = 1.0}, {path = "data/mix-b.npy", weight = 3.0}]',
               "--set", 'data.valid=[{path = "data/valid.npy", name = "v"}, {path = "data/mix-a.npy", name = "a"}]']
    one = train_in_process(workspace, "mix-one", *STEPS[1::2], *mixture[1::2])
    two = lmcli(workspace, *config_args(workspace, "mix-ddp"), *STEPS, *MICRO, *mixture, "--nproc", "2")
    assert two.returncode == 0, two.stderr
    assert loss_difference(losses(one), losses(workspace / "runs" / "mix-ddp")) < LOSS_RTOL
    for key in ("val_loss/a", "val_loss/v", "val_loss"):  # each source's validation, and both together
        ours, theirs = losses(one, "eval", key), losses(workspace / "runs" / "mix-ddp", "eval", key)
        assert len(ours) == len(theirs) == 2 and max(abs(x - y) / x for x, y in zip(ours, theirs)) < LOSS_RTOL
    assert weight_difference(weights(one), weights(workspace / "runs" / "mix-ddp")) < WEIGHT_RTOL
