"""``lmcli doctor``: one report of the environment, to paste into a bug report.

It gathers the versions that matter (Python, lmcli, torch), the compute torch can see (CUDA GPUs
with their memory and bf16 support, Apple MPS, CPU cores and threads), system memory, what the
workspace holds (tokenizer, text and encoded data, runs) and which optional comparator packages
are installed. Optional packages are looked up in the installed metadata, not imported, so the
report is quick and a broken package cannot break it; a torch that fails to import is reported
rather than raised, since that is exactly when a report is needed.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from pathlib import Path

import psutil
from rich.filesize import decimal
from rich.table import Table
from rich.text import Text

from lmcli import __version__
from lmcli.data.token_files import open_token_ids
from lmcli.errors import LmcliError
from lmcli.json_output import dumps
from lmcli.tokenizer.files import read_meta, tokenizer_paths
from lmcli.ui.console import console
from lmcli.workspace import Workspace

OPTIONAL_PACKAGES = (  # gguf: export --format gguf; the data extra: formats, datasets and the hub
    "tiktoken", "tokenizers", "transformers", "gguf", "wandb", "matplotlib", "pyarrow", "zstandard", "datasets", "huggingface_hub",
)


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cuda_report(torch) -> dict:
    if not torch.cuda.is_available():
        return {"available": False}
    devices = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        devices.append({"name": props.name, "memory_bytes": props.total_memory, "capability": f"{props.major}.{props.minor}"})
    return {
        "available": True,
        "count": len(devices),
        "devices": devices,
        "bf16": torch.cuda.is_bf16_supported(),
        "cuda_version": torch.version.cuda,
    }


def torch_report() -> dict:
    """torch's version and the accelerators it sees; an import failure is reported, not raised."""
    try:
        import torch  # here, not at the top: a torch that fails to import is what the report must show
    except (ImportError, OSError) as e:
        return {"version": None, "error": str(e)}
    return {
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": cuda_report(torch),
        "mps": {"available": torch.backends.mps.is_available()},
    }


def tokenizer_report(tokenizer_dir: Path) -> dict | None:
    """The workspace's tokenizer (None if there is none); a damaged one is reported with its problem."""
    if not tokenizer_dir.is_dir():
        return None
    try:
        tokenizer_paths(tokenizer_dir)
        meta = read_meta(tokenizer_dir)
    except LmcliError as e:
        return {"path": str(tokenizer_dir), "vocab_size": None, "special_tokens": [], "problem": str(e)}
    return {"path": str(tokenizer_dir), "vocab_size": meta.get("vocab_size"), "special_tokens": meta.get("special_tokens", []),
            "problem": None}


def token_count(npy_path: Path) -> int | None:
    """Number of token ids in an encoded ``.npy`` (reads only its header, via a memory map)."""
    try:
        return len(open_token_ids(npy_path))
    except LmcliError:
        return None


def workspace_report(workspace: Workspace) -> dict:
    data_dir, runs_dir = workspace.data_dir, workspace.runs_dir
    text = sorted(data_dir.glob("*.txt")) if data_dir.is_dir() else []
    encoded = sorted(data_dir.glob("*.npy")) if data_dir.is_dir() else []
    return {
        "path": str(workspace.root.resolve()),
        "exists": workspace.root.is_dir(),
        "tokenizer": tokenizer_report(workspace.tokenizer_dir),
        "text": [{"file": p.name, "bytes": p.stat().st_size} for p in text],
        "encoded": [{"file": p.name, "bytes": p.stat().st_size, "tokens": token_count(p)} for p in encoded],
        "runs": sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else [],
    }


def collect_report(workspace: Workspace) -> dict:
    """Everything ``lmcli doctor`` shows, as one JSON-ready dict."""
    memory = psutil.virtual_memory()
    return {
        "python": {"version": platform.python_version(), "executable": sys.executable, "platform": platform.platform()},
        "lmcli": __version__,
        "torch": torch_report(),
        "cpu": {"logical_cores": psutil.cpu_count(logical=True), "physical_cores": psutil.cpu_count(logical=False)},
        "memory": {"total_bytes": memory.total, "available_bytes": memory.available},
        "workspace": workspace_report(workspace),
        "optional_packages": {name: installed_version(name) for name in OPTIONAL_PACKAGES},
    }


def describe_cuda(cuda: dict) -> str:
    if not cuda["available"]:
        return "not available"
    gpus = ", ".join(f"{d['name']} ({decimal(d['memory_bytes'])}, sm {d['capability']})" for d in cuda["devices"])
    bf16 = "bf16 supported" if cuda["bf16"] else "no bf16"
    return f"{cuda['count']} GPU(s): {gpus}; {bf16}; CUDA {cuda['cuda_version']}"


def describe_workspace(ws: dict) -> list[tuple[str, str]]:
    tok = ws["tokenizer"]
    tokenizer = "none (run `lmcli train-bpe`)"
    if tok and tok["problem"]:
        tokenizer = f"{tok['path']}: damaged ({tok['problem']})"
    elif tok:
        tokenizer = f"{tok['path']}: vocab {tok['vocab_size'] or '?'}, special tokens {', '.join(tok['special_tokens']) or 'none'}"
    text = ", ".join(f"{f['file']} ({decimal(f['bytes'])})" for f in ws["text"]) or "none"
    encoded = ", ".join(
        f"{f['file']} ({f['tokens']:,} tokens)" if f["tokens"] is not None else f"{f['file']} (unreadable)"
        for f in ws["encoded"]
    )
    return [
        ("workspace", ws["path"] + ("" if ws["exists"] else " (does not exist yet)")),
        ("  tokenizer", tokenizer),
        ("  text data", text),
        ("  encoded data", encoded or "none (run `lmcli encode`)"),
        ("  runs", ", ".join(ws["runs"]) or "none"),
    ]


def report_rows(report: dict) -> list[tuple[str, str]]:
    """The report as (label, value) lines for the terminal."""
    py, tch, cpu, mem = report["python"], report["torch"], report["cpu"], report["memory"]
    if tch["version"] is None:
        torch_rows = [("torch", f"failed to import: {tch['error']}")]
    else:
        torch_rows = [
            ("torch", tch["version"]),
            ("cuda", describe_cuda(tch["cuda"])),
            ("mps", "available" if tch["mps"]["available"] else "not available"),
        ]
    threads = f", torch uses {tch['threads']} threads" if tch["version"] else ""
    optional = ", ".join(f"{name} {version or 'not installed'}" for name, version in report["optional_packages"].items())
    return [
        ("python", f"{py['version']} ({py['executable']})"),
        ("platform", py["platform"]),
        ("lmcli", report["lmcli"]),
        *torch_rows,
        ("cpu", f"{cpu['logical_cores']} logical / {cpu['physical_cores'] or '?'} physical cores{threads}"),
        ("memory", f"{decimal(mem['total_bytes'])} total, {decimal(mem['available_bytes'])} available"),
        *describe_workspace(report["workspace"]),
        ("optional", optional),
    ]


def run(workspace: Path | None, as_json: bool) -> None:
    """``lmcli doctor``: print the environment report (a table, or one JSON object)."""
    report = collect_report(Workspace.resolve(workspace))
    if as_json:
        print(dumps(report))
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for label, value in report_rows(report):
        table.add_row(label, Text(value))  # Text: paths and versions are not rich markup
    console.print(table)
