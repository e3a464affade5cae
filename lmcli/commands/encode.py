"""``lmcli encode``: text (files, compressed, JSON lines, parquet, datasets) to ``.npy`` token ids, with the workspace's defaults and a summary."""

from __future__ import annotations

from pathlib import Path

from lmcli.atomic import check_apart
from lmcli.data.demo import demo_split
from lmcli.data.token_files import is_npy
from lmcli.errors import LmcliError
from lmcli.json_output import dumps
from lmcli.parallel import available_cores
from lmcli.tokenizer import Tokenizer
from lmcli.tokenizer.encode_file import choose_dtype, encode_files
from lmcli.tokenizer.encode_shards import DEFAULT_SHARD_TOKENS, MANIFEST, encode_to_shards, parse_part, shard_directory
from lmcli.tokenizer.sources import TextSource, expand_inputs
from lmcli.tokenizer.train import check_errors_mode
from lmcli.ui.console import console
from lmcli.ui.progress import Bars
from lmcli.workspace import DEMO_SPLITS, Workspace


def run(
    input_names: list[str],
    tokenizer_dir: Path | None,
    special_tokens: list[str] | None,
    out: Path | None,
    out_dir: Path | None,
    workers: int | None,
    dtype: str,
    errors: str,
    text_field: str,
    split: str,
    shard_tokens: int | None,
    part_text: str | None,
    force: bool,
    workspace: Path | None,
    as_json: bool,
) -> None:
    """Encode the inputs (default: both demo splits) with the workspace's tokenizer; print a line per file (or JSON)."""
    workers = workers or available_cores()
    ws = Workspace.resolve(workspace)
    tokenizer_dir = tokenizer_dir or ws.tokenizer_dir
    tokenizer = Tokenizer.from_dir(tokenizer_dir, special_tokens or None)
    if out is not None and out_dir is not None:
        raise LmcliError("give --out (one output file) or --out-dir (a directory for several), not both")
    if not input_names:
        if out is not None or out_dir is not None:
            raise LmcliError("--out and --out-dir need INPUT files (without them, both demo splits are encoded into the workspace)")
        input_names = [str(demo_split(ws, name)) for name in DEMO_SPLITS]
    # Check everything before the progress bar starts, so bad input fails with one clear line.
    inputs = expand_inputs(input_names)
    if out is not None and len(inputs) != 1:
        raise LmcliError("--out names one output: give exactly one INPUT, or --out-dir DIR for several")
    check_errors_mode(errors)
    choose_dtype(tokenizer, dtype)
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise LmcliError(f"--out-dir {out_dir} is a file, not a directory")
    part = parse_part(part_text)
    if shard_tokens is not None or part is not None:
        if out_dir is None:
            raise LmcliError("--shard-tokens and --part write a dataset of shards: give its --out-dir")
        for source in inputs:
            if source.kind != "hub":
                check_apart(out_dir, {"input": source.path}, "--out-dir")
        return encode_shards(tokenizer, tokenizer_dir, inputs, out_dir, shard_tokens or DEFAULT_SHARD_TOKENS, workers, dtype,
                             errors, text_field, split, part, force, as_json)
    jobs = [(source, out or default_output(source, out_dir, ws)) for source in inputs]
    check_outputs(jobs)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    with Bars(quiet=as_json) as bars:
        results = encode_files(tokenizer, jobs, workers, dtype, errors, progress=bars, tokenizer_dir=tokenizer_dir,
                               text_field=text_field, split=split)
    if as_json:
        print(dumps({"tokenizer": str(tokenizer_dir), "files": [r.as_dict() for r in results]}))
        return
    for r in results:
        console.print(
            f"[bold]{r.input}[/] -> [bold]{r.output}[/]: {r.tokens:,} tokens ({r.dtype}), "
            f"{r.bytes_per_token:.2f} bytes/token, {r.mb_per_s:.1f} MB/s, {r.seconds:.2f} s "
            f"({r.workers} worker{'s' if r.workers != 1 else ''})",
            highlight=False, soft_wrap=True,  # one line per file, however long its paths: scripts read it
        )


def encode_shards(tokenizer: Tokenizer, tokenizer_dir: Path, inputs: list[TextSource], out_dir: Path, shard_tokens: int,
                  workers: int, dtype: str, errors: str, text_field: str, split: str, part: tuple[int, int] | None,
                  force: bool, as_json: bool) -> None:
    """Encode into shards with a manifest (resuming an interrupted run); print a summary line (or JSON)."""
    with Bars(quiet=as_json) as bars:
        def on_source(source: TextSource):
            return bars.task(f"encode {source.path.name}", total=source.size or None, unit="bytes").advance

        manifest = encode_to_shards(tokenizer, tokenizer_dir, inputs, out_dir, shard_tokens, workers, dtype, errors, text_field,
                                    split, part, force, on_source)
    directory = shard_directory(out_dir, part)
    tokens = sum(shard["tokens"] for shard in manifest["shards"])
    summary = {"out_dir": str(directory), "manifest": str(directory / MANIFEST), "shards": len(manifest["shards"]),
               "tokens": tokens, "documents": sum(shard["documents"] for shard in manifest["shards"]),
               "inputs": len(manifest["sources"]), "resumed_shards": manifest["resumed_shards"], "dtype": manifest["dtype"]}
    if as_json:
        print(dumps(summary))
        return
    kept = f", {summary['resumed_shards']} kept from an earlier run" if summary["resumed_shards"] else ""
    console.print(f"[bold]{summary['inputs']} input(s)[/] -> [bold]{directory}[/]: {summary['shards']} shard(s), {tokens:,} tokens "
                  f"({summary['dtype']}), {summary['documents']:,} documents{kept}; manifest {summary['manifest']}",
                  highlight=False, soft_wrap=True)


def default_output(source: TextSource, out_dir: Path | None, ws: Workspace) -> Path:
    """OUT_DIR/NAME.npy, or the workspace's data/NAME.npy (NAME: the input's name without its suffixes)."""
    if out_dir is not None:
        return out_dir / f"{source.stem}.npy"
    return ws.encoded_path(source.path) if source.plain else ws.data_dir / f"{source.stem}.npy"


def check_outputs(jobs: list[tuple[TextSource, Path]]) -> None:
    """No output may be a directory, overwrite an input, or be written twice."""
    inputs = {source.path.resolve() for source, _ in jobs}
    seen: set[Path] = set()
    for _, output in jobs:
        resolved = output.resolve()
        if output.is_dir():
            raise LmcliError(f"output {output} is a directory; give a .npy file name")
        if resolved in inputs:
            raise LmcliError(f"output {output} is an input file: encoding it would replace the text (choose another --out)")
        if output.is_file() and not is_npy(output):  # a checkpoint, a tokenizer file, a text: not ours to replace
            raise LmcliError(f"output {output} exists and is not a .npy of token ids: choose another --out")
        if resolved in seen:
            raise LmcliError(f"two inputs would be encoded to the same {output}")
        seen.add(resolved)

