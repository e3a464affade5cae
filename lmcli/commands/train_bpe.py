"""``lmcli train-bpe``: train a tokenizer on a file, write it in GPT-2's format, report the run.

Around ``train_bpe`` this adds what a command-line run needs: defaults from the workspace (the
demo corpus, the workspace's tokenizer directory), a refusal to overwrite a directory holding a
*different* tokenizer (decided before any work, from its tokenizer-meta.json), progress bars on
stderr, the files written atomically, and a summary (stage times, peak memory of the process
tree, the longest tokens) as a table or as one JSON object. ``--profile`` saves cProfile stats
of the main process for ``python -m pstats``.
"""

from __future__ import annotations

import contextlib
import cProfile
import time
from pathlib import Path

from rich.table import Table

from lmcli.atomic import atomic_path
from lmcli.data.demo import demo_split
from lmcli.errors import LmcliError
from lmcli.json_output import dumps
from lmcli.parallel import available_cores
from lmcli.peak_memory import PeakMemory
from lmcli.tokenizer.files import MERGES_FILE, META_FILE, VOCAB_FILE, read_meta, save_tokenizer, token_text
from lmcli.tokenizer.special_tokens import check_special_tokens
from lmcli.tokenizer.train import TrainStats, check_errors_mode, check_inputs, check_vocab_size, train_bpe
from lmcli.ui.console import console, print_warning
from lmcli.ui.progress import Bars
from lmcli.workspace import Workspace

LONGEST_SHOWN = 5


def run(
    input_names: list[str],
    vocab_size: int,
    special_tokens: list[str],
    out_dir: Path | None,
    workers: int | None,
    errors: str,
    text_field: str,
    split: str,
    force: bool,
    profile_path: Path | None,
    workspace: Path | None,
    as_json: bool,
) -> None:
    """Validate everything that can be checked before training, train, write, report."""
    ws = Workspace.resolve(workspace)
    sources = check_inputs(input_names or [str(demo_split(ws, "train"))])
    special_tokens = check_special_tokens(special_tokens)
    check_vocab_size(vocab_size, special_tokens)
    check_errors_mode(errors)
    out = Path(out_dir).expanduser() if out_dir is not None else ws.tokenizer_dir
    workers = workers or available_cores()
    names = [source.name if source.kind == "hub" else str(source.path.resolve()) for source in sources]
    recipe = {
        "input": names[0] if len(names) == 1 else names,
        "input_bytes": sum(source.size for source in sources),
        "requested_vocab_size": vocab_size,
        "special_tokens": special_tokens,
        "errors": errors,
        **({"text_field": text_field} if any(not source.plain for source in sources) else {}),
    }
    check_output_dir(out, recipe, force)

    stats = TrainStats()
    started = time.perf_counter()
    with PeakMemory() as peak, _profiling(profile_path):
        vocab, merges = _train_with_progress(sources, vocab_size, special_tokens, workers, errors, text_field, split, stats)
        with stats.timed("write"):
            save_tokenizer(out, vocab, merges, special_tokens, {**recipe, "trainer": "lmcli train-bpe", "workers": workers})
    stats.seconds["total"] = time.perf_counter() - started

    summary = {
        "input": ", ".join(source.name for source in sources),
        "out": str(out),
        "vocab_size": len(vocab),
        **{k: recipe[k] for k in ("requested_vocab_size", "special_tokens", "input_bytes")},
        "merges": stats.merges,
        "ran_out_of_pairs": stats.merges < stats.requested_merges,
        "distinct_pretokens": stats.distinct_pretokens,
        "total_pretokens": stats.total_pretokens,
        "workers": workers,
        "seconds": {k: round(v, 3) for k, v in stats.seconds.items()},
        "peak_memory_mb": round(peak.bytes / 1e6, 1),
        "peak_memory_method": PeakMemory.METHOD,
        "longest_tokens": [token_text(t) for t in longest_tokens(merges, LONGEST_SHOWN)],
        "profile": str(profile_path) if profile_path else None,
    }
    report(summary, as_json)


def report(summary: dict, as_json: bool) -> None:
    """The warning for a short vocabulary (stderr), then the summary as JSON or a table (stdout)."""
    if summary["ran_out_of_pairs"]:
        print_warning(
            f"the corpus ran out of pairs to merge after {summary['merges']} merges; "
            f"wrote a vocabulary of {summary['vocab_size']} tokens instead of {summary['requested_vocab_size']}"
        )
    if as_json:
        print(dumps(summary))
    else:
        print_summary(summary)


def check_output_dir(out: Path, recipe: dict, force: bool) -> None:
    """Refuse (unless ``force``) to overwrite a tokenizer that this run would not reproduce."""
    if out.exists() and not out.is_dir():
        raise LmcliError(f"output {out} exists and is not a directory")
    if force or not any((out / name).exists() for name in (VOCAB_FILE, MERGES_FILE)):
        return
    try:
        meta = read_meta(out)
    except LmcliError:  # unreadable or damaged: not ours to overwrite silently
        meta = {}
    if not meta:
        raise LmcliError(
            f"{out} already holds a tokenizer without a readable {META_FILE}; "
            "pass --force to overwrite it or choose another --out"
        )
    different = {k: (meta.get(k), v) for k, v in recipe.items() if meta.get(k) != v}
    if different:
        what = ", ".join(f"{k} {old!r} (this run: {new!r})" for k, (old, new) in different.items())
        raise LmcliError(
            f"{out} already holds a different tokenizer ({what}); pass --force to overwrite it or choose another --out"
        )


def _train_with_progress(sources, vocab_size, special_tokens, workers, errors, text_field, split, stats):
    """train_bpe with a byte bar while pre-tokenizing, then a merge bar."""
    with Bars() as bars:
        size = sum(source.size for source in sources)
        reading = bars.task("pre-tokenize", total=size if all(source.kind != "hub" for source in sources) else None, unit="bytes")
        merging = None

        def on_merge(done: int) -> None:
            nonlocal merging
            if merging is None:  # the merge bar appears once pre-tokenizing is done
                merging = bars.task("merge", total=check_vocab_size(vocab_size, special_tokens))
            merging.update(completed=done)

        return train_bpe(
            [source.name for source in sources], vocab_size, special_tokens, workers=workers, errors=errors, stats=stats,
            on_bytes=reading.advance, on_merge=on_merge, text_field=text_field, split=split,
        )


@contextlib.contextmanager
def _profiling(profile_path: Path | None):
    """cProfile the block and save its stats atomically to ``profile_path`` (if given)."""
    if profile_path is None:
        yield
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
    with atomic_path(profile_path) as tmp:
        profiler.dump_stats(tmp)


def longest_tokens(merges: list[tuple[bytes, bytes]], n: int) -> list[bytes]:
    """The n longest learned tokens (by bytes), longest first; among equal lengths, the earliest."""
    return sorted((a + b for a, b in merges), key=len, reverse=True)[:n]


def print_summary(s: dict) -> None:
    console.print(
        f"[bold green]Trained[/] a {s['vocab_size']:,}-token BPE tokenizer ({s['merges']:,} merges, "
        f"{len(s['special_tokens'])} special) on {s['input']} ({s['input_bytes'] / 1e6:.1f} MB) -> {s['out']}",
        highlight=False,
        soft_wrap=True,
    )
    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, seconds in s["seconds"].items():
        table.add_row(stage, f"{seconds:.2f}")
    console.print(table)
    console.print(
        f"pre-tokens: {s['distinct_pretokens']:,} distinct of {s['total_pretokens']:,}; workers: {s['workers']}\n"
        f"peak memory: {s['peak_memory_mb']:.0f} MB ({s['peak_memory_method']})\n"
        f"longest tokens: {', '.join(repr(t) for t in s['longest_tokens']) or 'none (no merges: only bytes and special tokens)'}",
        highlight=False,
        soft_wrap=True,
    )
    if s["profile"]:
        console.print(f"profile: {s['profile']} (view with: python -m pstats {s['profile']})", highlight=False)
