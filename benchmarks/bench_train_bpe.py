"""BPE training speed and memory: lmcli's ``train_bpe`` against Hugging Face tokenizers' BpeTrainer.

Both train a byte-level BPE with vocabulary 10,000 and the special token ``<|endoftext|>`` on
``../shared/bench/docs-bench.txt.xz`` (20 MB of English documentation, decompressed once into
``.bench/``). HF is set up the GPT-2 way: ByteLevel pre-tokenizer with use_regex=True and
initial alphabet ByteLevel.alphabet(); it uses all cores through its own thread pool, lmcli
through ``--workers`` (default: all cores).

Each trainer runs in its own subprocess, so their peak memories are measured apart: the parent
samples the memory of the child's whole process tree (lmcli's worker processes included) every
20 ms, two ways: the sum of RSS, which counts the pages a forked worker shares with its parent
once per process (so it overstates lmcli's two processes against HF's one), and on Linux the sum
of PSS (each shared page divided among the processes that map it: what the tree really holds). Time is the wall time of the training call inside the child (interpreter start and
imports excluded for both); CPU time (user + system of the whole tree, from getrusage, imports
included) is shown too, since on a shared machine it varies less than wall time. The two runs
alternate, ``--repeat`` times; the table shows the median (and the best) of each. Ratios are
lmcli / HF: below 1.0 means lmcli is faster / smaller.

The merges are not expected to be identical (HF breaks count ties differently and does not cut
the text at special tokens), so the share of merges the two have in common is shown as a check.

Usage: python benchmarks/bench_train_bpe.py [--input FILE] [--vocab 10000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from lmcli.atomic import atomic_open
from lmcli.peak_memory import tree_rss

REPO = Path(__file__).resolve().parents[1]
BENCH_XZ = REPO.parent / "shared" / "bench" / "docs-bench.txt.xz"
BENCH_TXT = REPO / ".bench" / "docs-bench.txt"
EOT = "<|endoftext|>"

LMCLI_CHILD = """
import json, sys, time
from lmcli.tokenizer import train_bpe
from lmcli.tokenizer.files import token_to_str
start = time.perf_counter()
vocab, merges = train_bpe(sys.argv[1], int(sys.argv[2]), [sys.argv[3]])
seconds = time.perf_counter() - start
with open(sys.argv[4], "w", encoding="utf-8") as f:
    f.writelines(f"{token_to_str(a)} {token_to_str(b)}\\n" for a, b in merges)
print(json.dumps({"seconds": seconds, "vocab_size": len(vocab)}))
"""

HF_CHILD = """
import json, sys, time, os
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
start = time.perf_counter()
tokenizer = Tokenizer(models.BPE())
tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
trainer = trainers.BpeTrainer(vocab_size=int(sys.argv[2]), special_tokens=[sys.argv[3]],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
tokenizer.train([sys.argv[1]], trainer)
seconds = time.perf_counter() - start
merges = json.loads(tokenizer.to_str())["model"]["merges"]
with open(sys.argv[4], "w", encoding="utf-8") as f:
    f.writelines((m if isinstance(m, str) else " ".join(m)) + "\\n" for m in merges)
print(json.dumps({"seconds": seconds, "vocab_size": tokenizer.get_vocab_size()}))
"""


def ensure_bench_text() -> Path:
    """The benchmark corpus, decompressed into .bench/ on first use."""
    if not BENCH_TXT.is_file():
        if not BENCH_XZ.is_file():
            sys.exit(f"benchmark corpus not found: {BENCH_XZ}")
        with lzma.open(BENCH_XZ, "rb") as src, atomic_open(BENCH_TXT, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    return BENCH_TXT


def measured(argv: list[str]) -> tuple[str, dict]:
    """Run ``argv``; its stdout, and its wall seconds, CPU seconds and peak RSS of its process tree."""
    start, cpu_before = time.perf_counter(), _children_cpu()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    watched = psutil.Process(proc.pid)
    peak = peak_pss = 0
    while proc.poll() is None:
        try:
            peak = max(peak, tree_rss(watched))
            peak_pss = max(peak_pss, tree_pss(watched))
        except psutil.Error:
            pass
        time.sleep(0.02)
    out = proc.stdout.read()
    if proc.returncode:
        sys.exit(f"{' '.join(argv[:4])} ... failed (exit {proc.returncode})")
    usage = {"wall_seconds": time.perf_counter() - start, "cpu_seconds": _children_cpu() - cpu_before,
             "peak_mb": peak / 1e6, "peak_pss_mb": peak_pss / 1e6 or None}
    return out, usage


def tree_pss(process: psutil.Process) -> int:
    """PSS of a process plus all its descendants; 0 where the system does not report PSS."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += getattr(p.memory_full_info(), "pss", 0)
        except psutil.Error:
            pass
    return total


def run_child(code: str, input_path: Path, vocab: int, merges_out: Path) -> dict:
    """Run one trainer in a subprocess; its result plus the peak RSS of its process tree."""
    out, usage = measured([sys.executable, "-c", code, str(input_path), str(vocab), EOT, str(merges_out)])
    return {**json.loads(out), "peak_mb": usage["peak_mb"], "peak_pss_mb": usage["peak_pss_mb"], "cpu_seconds": usage["cpu_seconds"]}


def _children_cpu() -> float:
    """User + system CPU seconds of all finished descendants of this process."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def common_share(a: Path, b: Path) -> float:
    ours, theirs = (set(p.read_text(encoding="utf-8").splitlines()) for p in (a, b))
    return len(ours & theirs) / max(1, len(ours))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, help="corpus [default: .bench/docs-bench.txt]")
    parser.add_argument("--vocab", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    input_path = args.input or ensure_bench_text()

    runs: dict[str, list[dict]] = {"lmcli": [], "hf": []}
    with tempfile.TemporaryDirectory() as tmp:
        merges = {name: Path(tmp) / f"{name}-merges.txt" for name in runs}
        for _ in range(args.repeat):
            for name, code in (("lmcli", LMCLI_CHILD), ("hf", HF_CHILD)):
                runs[name].append(run_child(code, input_path, args.vocab, merges[name]))
        shared = common_share(merges["lmcli"], merges["hf"])

    def summary(name: str) -> dict:
        rs = runs[name]
        return {
            "seconds_median": statistics.median(r["seconds"] for r in rs),
            "seconds_best": min(r["seconds"] for r in rs),
            "cpu_seconds_median": statistics.median(r["cpu_seconds"] for r in rs),
            "peak_mb_median": statistics.median(r["peak_mb"] for r in rs),
            "peak_pss_mb_median": statistics.median(r["peak_pss_mb"] or 0 for r in rs) or None,
            "vocab_size": rs[0]["vocab_size"],
        }

    lm, hf = summary("lmcli"), summary("hf")
    result = {
        "machine": {"cores": os.cpu_count(), "cpu": cpu_name(), "python": platform.python_version()},
        "input": str(input_path),
        "input_mb": input_path.stat().st_size / 1e6,
        "vocab": args.vocab,
        "repeat": args.repeat,
        "lmcli": lm,
        "hf_tokenizers": hf,
        "time_ratio": lm["seconds_median"] / hf["seconds_median"],
        "cpu_ratio": lm["cpu_seconds_median"] / hf["cpu_seconds_median"],
        "memory_ratio": lm["peak_mb_median"] / hf["peak_mb_median"],
        "pss_ratio": lm["peak_pss_mb_median"] / hf["peak_pss_mb_median"] if lm["peak_pss_mb_median"] and hf["peak_pss_mb_median"] else None,
        "merges_in_common": shared,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"train-bpe on {input_path.name} ({result['input_mb']:.1f} MB), vocab {args.vocab}, "
          f"{result['machine']['cores']} cores ({result['machine']['cpu']}), median of {args.repeat}")
    print(f"{'':16}{'wall s':>10}{'best s':>10}{'cpu s':>10}{'peak RSS':>10}{'peak PSS':>10}")
    for name, s in (("lmcli", lm), ("hf tokenizers", hf)):
        pss = f"{s['peak_pss_mb_median']:10.0f}" if s["peak_pss_mb_median"] else f"{'-':>10}"
        print(f"{name:16}{s['seconds_median']:10.2f}{s['seconds_best']:10.2f}{s['cpu_seconds_median']:10.2f}{s['peak_mb_median']:10.0f}{pss}")
    cpu_ratio = lm["cpu_seconds_median"] / hf["cpu_seconds_median"]
    pss_ratio = f"{result['pss_ratio']:9.2f}x" if result["pss_ratio"] else f"{'-':>10}"
    print(f"{'lmcli / hf':16}{result['time_ratio']:9.2f}x{'':10}{cpu_ratio:9.2f}x{result['memory_ratio']:9.2f}x{pss_ratio}")
    print(f"merges in common: {shared:.0%} (peaks in MB: sampled sums over each trainer's process tree)")


if __name__ == "__main__":
    main()
