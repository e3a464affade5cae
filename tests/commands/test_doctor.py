"""``lmcli doctor`` and ``lmcli --version`` through the CLI: the report must match the real environment."""

from __future__ import annotations

import importlib.metadata
import json
import platform

import numpy as np
import psutil
import torch

from lmcli import __version__
from lmcli.tokenizer.files import save_tokenizer


def doctor_json(cli, *args: str) -> dict:
    result = cli("doctor", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_version_matches_installed_package(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout == f"lmcli {__version__}\n"
    assert __version__ == importlib.metadata.version("lmcli")  # pyproject and the package agree


def test_doctor_json_reports_the_real_environment(cli, tmp_path):
    report = doctor_json(cli)
    assert report["python"]["version"] == platform.python_version()
    assert report["lmcli"] == __version__
    assert report["torch"]["version"] == torch.__version__
    assert report["torch"]["cuda"]["available"] == torch.cuda.is_available()
    assert report["torch"]["mps"]["available"] == torch.backends.mps.is_available()
    assert report["cpu"]["logical_cores"] == psutil.cpu_count()
    assert report["memory"]["total_bytes"] == psutil.virtual_memory().total
    assert 0 < report["memory"]["available_bytes"] <= report["memory"]["total_bytes"]
    for name in ("tiktoken", "tokenizers", "transformers", "gguf", "wandb", "matplotlib", "pyarrow", "huggingface_hub"):
        try:
            expected = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            expected = None
        assert report["optional_packages"][name] == expected
    assert report["workspace"] == {
        "path": str((tmp_path / "workspace").resolve()),
        "exists": False,
        "tokenizer": None,
        "text": [],
        "encoded": [],
        "runs": [],
    }


def test_doctor_sees_what_the_workspace_holds(cli, tmp_path):
    ws = tmp_path / "workspace"
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"<|endoftext|>"}
    save_tokenizer(ws / "tokenizer", vocab, [], ["<|endoftext|>"])
    (ws / "data").mkdir()
    (ws / "data" / "demo-train.txt").write_text("a story<|endoftext|>")
    np.save(ws / "data" / "train.npy", np.arange(1234, dtype=np.uint16))
    (ws / "runs" / "tiny").mkdir(parents=True)

    report = doctor_json(cli)["workspace"]
    assert report["exists"] is True
    assert report["tokenizer"] == {
        "path": str(ws / "tokenizer"),
        "vocab_size": 257,
        "special_tokens": ["<|endoftext|>"],
        "problem": None,
    }
    assert report["text"] == [{"file": "demo-train.txt", "bytes": 20}]
    assert report["encoded"] == [{"file": "train.npy", "bytes": (ws / "data" / "train.npy").stat().st_size, "tokens": 1234}]
    assert report["runs"] == ["tiny"]

    text = cli("doctor").stdout
    assert "vocab 257" in text and "train.npy (1,234 tokens)" in text and "tiny" in text


def test_doctor_table_lists_versions_and_devices(cli, tmp_path):
    result = cli("doctor")
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert platform.python_version() in lines["python"]
    assert torch.__version__ in lines["torch"]
    assert f"{psutil.cpu_count()} logical" in lines["cpu"]
    expected_cuda = "GPU(s)" if torch.cuda.is_available() else "not available"
    assert expected_cuda in lines["cuda"]
    assert str(tmp_path / "workspace") in lines["workspace"] and "does not exist yet" in lines["workspace"]
    assert "tiktoken" in lines["optional"]


def test_doctor_reports_a_broken_encoded_file(cli, tmp_path):
    data = tmp_path / "workspace" / "data"
    data.mkdir(parents=True)
    (data / "train.npy").write_bytes(b"not numpy")
    assert doctor_json(cli)["workspace"]["encoded"][0]["tokens"] is None
    assert "train.npy (unreadable)" in cli("doctor").stdout


def test_cuda_branch_with_a_stand_in_torch():
    """No GPU on the test machines: a stand-in for ``torch.cuda`` exercises the GPU half of the report."""
    from types import SimpleNamespace

    from lmcli.commands.doctor import cuda_report, describe_cuda

    props = SimpleNamespace(name="NVIDIA H100", total_memory=80 * 10**9, major=9, minor=0)
    cuda = SimpleNamespace(
        is_available=lambda: True, device_count=lambda: 2, get_device_properties=lambda i: props, is_bf16_supported=lambda: True
    )
    report = cuda_report(SimpleNamespace(cuda=cuda, version=SimpleNamespace(cuda="12.4")))
    assert report["count"] == 2 and report["bf16"] is True
    assert report["devices"][1] == {"name": "NVIDIA H100", "memory_bytes": 80 * 10**9, "capability": "9.0"}
    assert describe_cuda(report) == (
        "2 GPU(s): NVIDIA H100 (80.0 GB, sm 9.0), NVIDIA H100 (80.0 GB, sm 9.0); bf16 supported; CUDA 12.4"
    )
