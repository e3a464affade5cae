"""``lmcli stats``: tokenizer statistics on sampled documents, several tokenizers side by side."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from lmcli.data.demo import demo_split
from lmcli.json_output import dumps
from lmcli.parallel import available_cores
from lmcli.tokenizer import Tokenizer
from lmcli.tokenizer.stats import corpus_stats
from lmcli.tokenizer.train import check_errors_mode
from lmcli.ui.console import console
from lmcli.ui.progress import Bars
from lmcli.workspace import Workspace


def run(
    input_path: str | None,
    tokenizer_dirs: list[Path] | None,
    docs: int,
    seed: int,
    workers: int | None,
    errors: str,
    text_field: str,
    split: str,
    workspace: Path | None,
    as_json: bool,
) -> None:
    check_errors_mode(errors)
    ws = Workspace.resolve(workspace)
    dirs = tokenizer_dirs or [ws.tokenizer_dir]
    tokenizers = [(str(d), Tokenizer.from_dir(d)) for d in dirs]  # load all first: a bad directory fails fast
    with Bars(quiet=as_json) as bars:
        report = corpus_stats(input_path or demo_split(ws, "train"), tokenizers, docs, seed, workers or available_cores(), bars,
                              errors, text_field, split)
    if as_json:
        print(dumps(report))
    else:
        print_stats(report)


def _hours(h: float) -> str:
    return f"{h:,.1f} h" if h < 48 else f"{h / 24:,.1f} days"


def print_stats(report: dict) -> None:
    stats = report["tokenizers"]
    table = Table(title=f"{report['documents']:,} documents ({report['bytes']:,} bytes) of {report['input']}")
    table.add_column("")
    for s in stats:
        table.add_column(s["tokenizer"], justify="right")
    rows = [
        ("vocabulary size", lambda s: f"{s['vocab_size']:,}"),
        ("tokens", lambda s: f"{s['tokens']:,}"),
        ("bytes / token", lambda s: f"{s['bytes_per_token']:.2f}"),
        ("encode, 1 process", lambda s: f"{s['bytes_per_s_1_process'] / 1e6:.2f} MB/s"),
        (f"encode, {stats[0]['workers']} workers", lambda s: f"{s['bytes_per_s_workers'] / 1e6:.2f} MB/s"),
        ("the Pile (825 GB), 1 process", lambda s: _hours(s["pile_hours_1_process"])),
        (f"the Pile, {stats[0]['workers']} workers", lambda s: _hours(s["pile_hours_workers"])),
        ("vocabulary used", lambda s: f"{s['vocab_used']:,} ({s['vocab_used_share']:.1%})"),
        ("longest tokens", lambda s: "\n".join(repr(t) for t in s["longest_tokens"])),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(s) for s in stats))
    console.print(table)
