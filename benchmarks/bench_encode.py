"""Encode throughput: ``lmcli encode`` (workers=2) vs tiktoken's gpt2 (2 threads) on the bench corpus.

Both use GPT-2's vocabulary from ../shared/fixtures. lmcli runs the function the CLI calls
(``encode_file``: chunking, worker pool, .npy writing) from a cold start; tiktoken runs
``encode_ordinary_batch`` on the documents (split on <|endoftext|>, the separators added back
as their id). The ids must be identical; the script prints MB/s of each and the ratio. It also
prints the CPU seconds of one lmcli process with cold and then warm caches (what a multi-GB
corpus sees after its first few MB) next to tiktoken's on one thread: CPU time is much less
sensitive than wall time to other work on the machine.

    python benchmarks/bench_encode.py [--repeat 2] [--workers 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import lzma
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.gpt2_tiktoken import ENDOFTEXT, gpt2_tiktoken  # noqa: E402
from lmcli.tokenizer import Tokenizer  # noqa: E402
from lmcli.tokenizer.encode_file import encode_file  # noqa: E402

SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"
BENCH_XZ = SHARED / "bench" / "docs-bench.txt.xz"
BENCH_TXT = REPO / ".bench" / "docs-bench.txt"


def bench_corpus() -> Path:
    """The decompressed bench corpus under .bench/ (decompressed on first use)."""
    if not BENCH_TXT.is_file():
        BENCH_TXT.parent.mkdir(exist_ok=True)
        tmp = BENCH_TXT.with_suffix(".tmp")
        with lzma.open(BENCH_XZ) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        tmp.replace(BENCH_TXT)
    return BENCH_TXT


def run_lmcli(path: Path, workers: int) -> tuple[float, np.ndarray]:
    """Seconds and ids of a cold ``lmcli encode`` run: load the tokenizer, encode, write the .npy."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        tok = Tokenizer.from_files(FIXTURES / "gpt2_vocab.json", FIXTURES / "gpt2_merges.txt", [ENDOFTEXT])
        encode_file(tok, path, Path(tmp) / "ids.npy", workers=workers)
        seconds = time.perf_counter() - started
        return seconds, np.load(Path(tmp) / "ids.npy")


def cpu_seconds(text: str) -> tuple[float, float]:
    """CPU seconds of one process encoding ``text`` with empty caches, then again with warm ones.

    CPU time barely depends on what else the machine runs, unlike the wall-clock rates; the warm
    pass is the steady state a multi-GB corpus reaches after its first few MB.
    """
    tok = Tokenizer.from_files(FIXTURES / "gpt2_vocab.json", FIXTURES / "gpt2_merges.txt", [ENDOFTEXT])
    started = time.process_time()
    tok.encode_array(text)
    cold = time.process_time() - started
    tok.encode_array(text)
    return cold, time.process_time() - started - cold


def run_tiktoken(text: str, threads: int) -> tuple[float, list[int]]:
    """Seconds and ids of tiktoken on the documents (tokenizer construction included, as for lmcli)."""
    started = time.perf_counter()
    enc = gpt2_tiktoken(FIXTURES / "gpt2_vocab.json")
    docs = text.split(ENDOFTEXT)
    batches = enc.encode_ordinary_batch(docs, num_threads=threads)
    eot = enc.eot_token
    ids = [*batches[0]]
    for doc in batches[1:]:
        ids.append(eot)
        ids.extend(doc)
    return time.perf_counter() - started, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="lmcli workers and tiktoken threads")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; the best is reported")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not BENCH_XZ.is_file() or not FIXTURES.is_dir():
        sys.exit(f"bench corpus or fixtures missing under {SHARED}")
    path = bench_corpus()
    text = path.read_bytes().decode("utf-8")
    mb = path.stat().st_size / 1e6

    lmcli_s, tiktoken_s, identical = [], [], True
    for _ in range(args.repeat):  # alternate, so background load hits both alike
        seconds, ids = run_lmcli(path, args.workers)
        lmcli_s.append(seconds)
        seconds, ref = run_tiktoken(text, args.workers)
        tiktoken_s.append(seconds)
        identical &= ids.tolist() == ref
    cold_cpu, warm_cpu = cpu_seconds(text)
    started = time.process_time()
    single_s, _ = run_tiktoken(text, 1)
    tiktoken_cpu = time.process_time() - started
    result = {
        "lmcli_cold_1_process_cpu_s": round(cold_cpu, 3),
        "lmcli_warm_1_process_cpu_s": round(warm_cpu, 3),
        "tiktoken_1_thread_cpu_s": round(tiktoken_cpu, 3),
        "lmcli_warm_1_process_mb_per_s": round(mb / warm_cpu, 2),
        "tiktoken_1_thread_mb_per_s": round(mb / single_s, 2),
        "corpus_mb": round(mb, 2),
        "tokens": len(ref),
        "workers": args.workers,
        "identical_ids": identical,
        "lmcli_mb_per_s": round(mb / min(lmcli_s), 2),
        "tiktoken_mb_per_s": round(mb / min(tiktoken_s), 2),
        "ratio_lmcli_over_tiktoken": round(min(tiktoken_s) / min(lmcli_s), 3),
        "lmcli_runs_s": [round(s, 3) for s in lmcli_s],
        "tiktoken_runs_s": [round(s, 3) for s in tiktoken_s],
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"corpus: {mb:.1f} MB, {len(ref):,} tokens, ids identical: {identical}")
        print(f"lmcli encode (workers={args.workers}):  {result['lmcli_mb_per_s']:6.2f} MB/s")
        print(f"tiktoken (threads={args.workers}):      {result['tiktoken_mb_per_s']:6.2f} MB/s")
        print(f"ratio lmcli / tiktoken:        {result['ratio_lmcli_over_tiktoken']:.2f}x")
        print(
            f"1 process, CPU seconds: lmcli {cold_cpu:.2f} cold, {warm_cpu:.2f} warm (caches filled); "
            f"tiktoken 1 thread {tiktoken_cpu:.2f} (its construction included)"
        )
    if not identical:
        sys.exit("ids differ from tiktoken")


if __name__ == "__main__":
    main()
