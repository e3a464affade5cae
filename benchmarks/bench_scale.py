"""Scale: lmcli's tokenizer commands on a real corpus of more than 1 GB, against the tools people use instead.

The corpus is the Linux kernel's source tree as Debian ships it (the ``linux-source-6.1``
package, fetched with ``apt-get download``): every file that is UTF-8 text without NUL bytes
and at most 4 MB is one document (C, headers, device trees, scripts, and the kernel's English
documentation), the documents in a seeded random order, each followed by ``<|endoftext|>``.
Nobody here wrote it, and it has millions of distinct pre-tokens (identifiers). The smaller
inputs (0.25 and 0.5 GB) are prefixes cut at document ends, so every size is the same kind of
text. Everything lives under ``.bench/scale/``.

Phases (one run, nothing else on the machine; each program in its own process, with wall
time, CPU time and the peak RSS of its whole process tree sampled every 20 ms):

1. ``train-bpe --vocab 32000`` on 1 GB: lmcli (the ``lmcli train-bpe`` command) against
   Hugging Face tokenizers' BpeTrainer (GPT-2 set-up) and nanochat's ``rustbpe`` (fed the
   documents from a Python iterator, with the GPT-2 split pattern lmcli uses).
2. lmcli ``train-bpe`` and ``encode`` at 0.25, 0.5 and 1 GB (a quarter, a half and all of
   ``--gb``): peak memory against input size.
3. ``encode`` throughput at 1 GB with the 32k tokenizer of phase 1: ``lmcli encode
   --shard-tokens`` (2 workers) against tiktoken built from the same merges
   (``encode_ordinary_batch``, 2 threads, 10 MB batches of documents); the ids are compared.
4. Formats: the same documents as ``.txt``, ``.jsonl.zst`` and ``.parquet`` (pyarrow, 100,000
   rows a row group): ``encode`` and ``train-bpe`` time against the ``.txt`` (goal: at most
   1.2x), in two interleaved rounds (each format's faster one kept), and the shards' ids against
   the ``.txt``'s. ``--only formats`` runs this phase alone (after the .txt's tokenizer).
5. Estimates for OpenWebText (11 GB) and FineWeb-Edu's 10B-token sample on 2, 16 and 64 cores,
   from the rates measured here (see ``estimates`` for what scales with cores and what does not).

Usage: python benchmarks/bench_scale.py [--gb 1.0] [--only formats] [--reuse .bench/scale/report.json] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_train_bpe import HF_CHILD, cpu_name, measured  # noqa: E402
from benchmarks.gpt2_tiktoken import gpt2_tiktoken  # noqa: E402
from lmcli.atomic import atomic_open  # noqa: E402
from lmcli.tokenizer.pretokenize import GPT2_SPLIT  # noqa: E402

WORK = REPO / ".bench" / "scale"
PACKAGE = "linux-source-6.1"
EOT = "<|endoftext|>"
VOCAB = 32_000
MAX_DOCUMENT_BYTES = 4 << 20
ROWS_PER_GROUP = 100_000
FRACTIONS = (0.25, 0.5)  # of the full size: the smaller inputs
FORMAT_ROUNDS = 2  # phase 4 measures each format this many times, interleaved
OWT_BYTES = 11.9e9  # owt_train.txt of the CS336 handout
FINEWEB_TOKENS = 10e9  # FineWeb-Edu's sample-10BT, in GPT-2 tokens

RUSTBPE_CHILD = """
import json, sys, time
import rustbpe
EOT = sys.argv[3]
def documents(path):
    rest = ""
    with open(path, encoding="utf-8") as f:
        while block := f.read(1 << 24):
            *done, rest = (rest + block).split(EOT)
            yield from done
    if rest:
        yield rest
start = time.perf_counter()
tokenizer = rustbpe.Tokenizer()
tokenizer.train_from_iterator(documents(sys.argv[1]), int(sys.argv[2]), pattern=sys.argv[4])
print(json.dumps({"seconds": time.perf_counter() - start, "vocab_size": tokenizer.vocab_size}))
"""


def lmcli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmcli", *map(str, args)]


def kernel_tree() -> Path:
    """The kernel source tree, unpacked from Debian's package under .bench/scale on first use."""
    tree = WORK / PACKAGE
    if tree.is_dir():
        return tree
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", PACKAGE], cwd=WORK, check=True, capture_output=True)
    [deb] = WORK.glob(f"{PACKAGE}_*.deb")
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        unpack = f"dpkg-deb --fsys-tarfile {deb.name} | tar -x --wildcards '*.tar.xz' -O | xz -dc -T0 | tar -x -C {tmp}"
        subprocess.run(["bash", "-o", "pipefail", "-c", unpack], cwd=WORK, check=True)
        os.replace(Path(tmp) / PACKAGE, tree)
    return tree


def text_documents(tree: Path) -> list[str]:
    """Every UTF-8 text file of ``tree`` (no NUL, at most 4 MB, no special token), in a seeded random order."""
    documents = []
    for path in sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        if len(data) > MAX_DOCUMENT_BYTES or b"\0" in data or EOT.encode() in data:
            continue
        try:
            documents.append(data.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    random.Random(0).shuffle(documents)
    return documents


def write_corpora(gb: float) -> dict[str, Path]:
    """The .txt corpora (every size) and the 1 GB one as .jsonl.zst and .parquet, built once."""
    sizes = {f"{size:g}gb": size for size in (*(f * gb for f in FRACTIONS), gb)}
    paths = {name: WORK / f"kernel-{name}.txt" for name in sizes}
    full = f"{gb:g}gb"
    paths |= {"jsonl.zst": WORK / f"kernel-{full}.jsonl.zst", "parquet": WORK / f"kernel-{full}.parquet"}
    if all(p.exists() for p in paths.values()):
        return paths
    documents, used = text_documents(kernel_tree()), 0
    chosen = []
    for document in documents:
        if used >= gb * 1e9:
            break
        chosen.append(document)
        used += len(document.encode()) + len(EOT)
    if used < gb * 1e9:
        sys.exit(f"the kernel tree holds only {used / 1e9:.2f} GB of text; ask for --gb {used / 1e9:.2f} or less")
    for name, size in sizes.items():
        with atomic_open(paths[name], "w", encoding="utf-8") as out:
            written = 0
            for document in chosen:
                if written >= size * 1e9:
                    break
                out.write(document + EOT)
                written += len(document.encode()) + len(EOT)
    write_records(chosen, paths["jsonl.zst"], paths["parquet"])
    return paths


def write_records(documents: list[str], jsonl_zst: Path, parquet: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    with atomic_open(jsonl_zst, "wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False) as out:
        for document in documents:
            out.write((json.dumps({"text": document}) + "\n").encode())
    with atomic_open(parquet, "wb") as raw:
        table = pa.table({"text": documents})
        pq.write_table(table, raw, row_group_size=ROWS_PER_GROUP, compression="zstd")


def train_bpe_lmcli(corpus: Path, out: Path) -> dict:
    stdout, usage = measured(lmcli("train-bpe", corpus, "--vocab", VOCAB, "--out", out, "--force", "--json"))
    summary = json.loads(stdout)
    return usage | {"stages": summary["seconds"], "distinct_pretokens": summary["distinct_pretokens"],
                    "total_pretokens": summary["total_pretokens"], "reported_seconds": summary["seconds"]["total"]}


def train_bpe_comparator(code: str, corpus: Path, *extra: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        stdout, usage = measured([sys.executable, "-c", code, str(corpus), str(VOCAB), EOT, *extra, str(Path(tmp) / "merges")])
    return usage | json.loads(stdout.splitlines()[-1])


def encode_lmcli(corpus: Path, tokenizer: Path, out_dir: Path) -> dict:
    stdout, usage = measured(lmcli("encode", corpus, "--tokenizer", tokenizer, "--out-dir", out_dir,
                                   "--shard-tokens", 100_000_000, "--force", "--json"))
    return usage | {"tokens": json.loads(stdout)["tokens"], "mb_per_s": corpus.stat().st_size / 1e6 / usage["wall_seconds"]}


def shard_ids(out_dir: Path) -> np.ndarray:
    manifest = json.loads((out_dir / "manifest.json").read_text())
    return np.concatenate([np.load(out_dir / shard["file"], mmap_mode="r") for shard in manifest["shards"]])


def ids_digest(out_dir: Path) -> str:
    return hashlib.sha256(np.ascontiguousarray(shard_ids(out_dir), dtype=np.uint32).tobytes()).hexdigest()


def encode_tiktoken(corpus: Path, tokenizer: Path, lmcli_shards: Path) -> dict:
    """tiktoken's throughput on the corpus in 10 MB batches of documents, and whether its ids equal lmcli's."""
    encoding = gpt2_tiktoken(tokenizer / "vocab.json")
    eot = encoding.eot_token
    expected, position, seconds, equal = shard_ids(lmcli_shards), 0, 0.0, True
    with open(corpus, encoding="utf-8") as f:
        rest = ""
        while block := f.read(10 << 20):
            *documents, rest = (rest + block).split(EOT)
            start = time.perf_counter()
            batches = encoding.encode_ordinary_batch(documents, num_threads=2)
            seconds += time.perf_counter() - start
            ids = np.fromiter(itertools.chain.from_iterable(doc + [eot] for doc in batches), dtype=np.uint32)
            equal &= bool(np.array_equal(expected[position:position + len(ids)], ids))
            position += len(ids)
    return {"seconds": seconds, "mb_per_s": corpus.stat().st_size / 1e6 / seconds,
            "ids_equal": equal and position == len(expected)}


def gpt2_bytes_per_token() -> float | None:
    """GPT-2's bytes per token on English web text (the CS336 fixture corpus.en), to size FineWeb-Edu."""
    corpus = REPO.parent / "shared" / "fixtures" / "corpus.en"
    vocab = corpus.with_name("gpt2_vocab.json")
    if not (corpus.is_file() and vocab.is_file()):
        return None
    text = corpus.read_text(encoding="utf-8")
    return len(text.encode()) / len(gpt2_tiktoken(vocab).encode_ordinary(text))


def estimates(report: dict) -> dict:
    """Hours for OWT and FineWeb-Edu 10BT at 2, 16 and 64 cores, from this machine's measured rates.

    What scales with cores: pre-tokenizing and counting in train-bpe, and encode (both split the
    input over worker processes), taken as the measured 2-core rate times cores / 2. What does
    not: train-bpe's merge stage (one process), taken from the 1 GB run and grown with the
    distinct pre-tokens, whose growth with input size is fitted (a power law) over the three
    sizes measured.
    """
    cores = report["machine"]["cores"]
    full = report["train_bpe"]["lmcli"]
    memory = report["memory"]
    sizes = sorted((row["gb"], row["train_bpe"]["distinct_pretokens"]) for row in memory)
    exponent = float(np.polyfit(np.log([s for s, _ in sizes]), np.log([d for _, d in sizes]), 1)[0])
    gb = report["gb"]
    parallel_s_per_gb = (full["stages"]["pretokenize"] + full["stages"]["count"]) / gb * cores
    merge_s = full["stages"]["merge"]
    encode_s_per_gb = 1e3 / report["encode"]["lmcli"]["mb_per_s"] * cores
    corpora = {"OpenWebText (11.9 GB)": OWT_BYTES / 1e9}
    if report.get("gpt2_bytes_per_token"):
        corpora["FineWeb-Edu 10BT"] = FINEWEB_TOKENS * report["gpt2_bytes_per_token"] / 1e9
    table = {}
    for name, corpus_gb in corpora.items():
        grow = (corpus_gb / gb) ** exponent
        table[name] = {
            "gb": corpus_gb,
            **{f"{n}_cores": {"train_bpe_hours": (parallel_s_per_gb * corpus_gb / n + merge_s * grow) / 3600,
                              "encode_hours": encode_s_per_gb * corpus_gb / n / 3600} for n in (2, 16, 64)},
        }
    return {"distinct_pretokens_exponent": exponent, "corpora": table}


def run(gb: float) -> dict:
    paths = write_corpora(gb)
    full = paths[f"{gb:g}gb"]
    tokenizer = WORK / "tok32k"
    report = {
        "machine": {"cores": os.cpu_count(), "cpu": cpu_name()},
        "gb": gb,
        "corpus": {name: path.stat().st_size for name, path in paths.items()},
        "package": sorted(p.name for p in WORK.glob(f"{PACKAGE}_*.deb")),
    }
    print("phase 1: train-bpe at 1 GB (lmcli, Hugging Face, rustbpe)", flush=True)
    report["train_bpe"] = {
        "lmcli": train_bpe_lmcli(full, tokenizer),
        "hf_tokenizers": train_bpe_comparator(HF_CHILD, full),
        "rustbpe": train_bpe_comparator(RUSTBPE_CHILD, full, GPT2_SPLIT),
    }
    print("phase 3: encode at 1 GB (lmcli, tiktoken)", flush=True)
    shards = WORK / "shards-txt"
    report["encode"] = {"lmcli": encode_lmcli(full, tokenizer, shards)}
    report["encode"]["tiktoken"] = encode_tiktoken(full, tokenizer, shards)
    print("phase 2: peak memory against input size", flush=True)
    report["memory"] = [{"gb": gb, "train_bpe": report["train_bpe"]["lmcli"], "encode": report["encode"]["lmcli"]}]
    for size in (f * gb for f in FRACTIONS):
        corpus = paths[f"{size:g}gb"]
        with tempfile.TemporaryDirectory(dir=WORK) as tmp:
            report["memory"].insert(-1, {"gb": size, "train_bpe": train_bpe_lmcli(corpus, Path(tmp) / "tok"),
                                         "encode": encode_lmcli(corpus, tokenizer, Path(tmp) / "shards")})
    report["formats"] = formats(paths, full, tokenizer, shards)
    report["gpt2_bytes_per_token"] = gpt2_bytes_per_token()
    report["estimates"] = estimates(report)
    return report


def formats(paths: dict[str, Path], full: Path, tokenizer: Path, txt_shards: Path) -> dict:
    """Phase 4: encode and train-bpe of the same documents as .txt, .jsonl.zst and .parquet, in
    FORMAT_ROUNDS interleaved rounds, each format's fastest round kept: this machine's speed drifts
    by 10-20% over minutes, more than the differences measured."""
    print("phase 4: formats", flush=True)
    digest = ids_digest(txt_shards)
    inputs = {"txt": full, "jsonl.zst": paths["jsonl.zst"], "parquet": paths["parquet"]}
    rounds: dict[str, list[dict]] = {fmt: [] for fmt in inputs}
    for _ in range(FORMAT_ROUNDS):
        for fmt, corpus in inputs.items():
            with tempfile.TemporaryDirectory(dir=WORK) as tmp:
                encoded = encode_lmcli(corpus, tokenizer, Path(tmp) / "shards")
                rounds[fmt].append({"encode": encoded | {"ids_equal_txt": ids_digest(Path(tmp) / "shards") == digest},
                                    "train_bpe": train_bpe_lmcli(corpus, Path(tmp) / "tok")})
    return {fmt: {step: min((r[step] for r in measured), key=lambda row: row["wall_seconds"]) | {"rounds": len(measured)}
                  for step in ("encode", "train_bpe")} for fmt, measured in rounds.items()}


def run_formats(gb: float) -> dict:
    """Only what phase 4 needs: the .txt's train-bpe (which writes the tokenizer) and encode, then the formats."""
    paths = write_corpora(gb)
    full, tokenizer, shards = paths[f"{gb:g}gb"], WORK / "tok32k", WORK / "shards-txt"
    train_bpe_lmcli(full, tokenizer)
    encode_lmcli(full, tokenizer, shards)
    return {"machine": {"cores": os.cpu_count(), "cpu": cpu_name()}, "gb": gb,
            "corpus": {name: path.stat().st_size for name, path in paths.items()},
            "formats": formats(paths, full, tokenizer, shards)}


def print_report(r: dict) -> None:
    gb = r["gb"]
    print(f"\nscale benchmark: {r['machine']['cores']} cores ({r['machine']['cpu']}); corpus {r['corpus'][f'{gb:g}gb'] / 1e9:.2f} GB "
          f"of kernel source text ({', '.join(r['package'])})")
    tb = r["train_bpe"]
    lm = tb["lmcli"]
    print(f"\ntrain-bpe --vocab {VOCAB:,} on {gb:g} GB ({lm['distinct_pretokens']:,} distinct pre-tokens of {lm['total_pretokens']:,})")
    print(f"{'':16}{'wall s':>9}{'cpu s':>9}{'peak MB':>9}{'lmcli/it time':>15}{'lmcli/it memory':>17}")
    for name, row in tb.items():
        ratio = "" if name == "lmcli" else f"{lm['wall_seconds'] / row['wall_seconds']:14.2f}x{lm['peak_mb'] / row['peak_mb']:16.2f}x"
        print(f"{name:16}{row['wall_seconds']:9.1f}{row['cpu_seconds']:9.1f}{row['peak_mb']:9.0f}{ratio}")
    enc = r["encode"]
    print(f"\nencode {gb:g} GB: lmcli {enc['lmcli']['mb_per_s']:.2f} MB/s ({enc['lmcli']['tokens']:,} tokens), "
          f"tiktoken {enc['tiktoken']['mb_per_s']:.2f} MB/s; lmcli/tiktoken throughput {enc['lmcli']['mb_per_s'] / enc['tiktoken']['mb_per_s']:.2f}x; "
          f"ids equal: {enc['tiktoken']['ids_equal']}")
    print("\npeak memory against input size (lmcli)")
    print(f"{'GB':>6}{'train-bpe MB':>14}{'train-bpe s':>13}{'distinct':>12}{'encode MB':>11}{'encode s':>10}")
    for row in r["memory"]:
        t, e = row["train_bpe"], row["encode"]
        print(f"{row['gb']:6g}{t['peak_mb']:14.0f}{t['wall_seconds']:13.1f}{t['distinct_pretokens']:12,}{e['peak_mb']:11.0f}{e['wall_seconds']:10.1f}")
    print_formats(r)
    est = r["estimates"]
    print(f"\nestimates (distinct pre-tokens grow as size^{est['distinct_pretokens_exponent']:.2f}); hours train-bpe / encode")
    for name, row in est["corpora"].items():
        cells = "  ".join(f"{n} cores {row[f'{n}_cores']['train_bpe_hours']:.2f} / {row[f'{n}_cores']['encode_hours']:.2f}" for n in (2, 16, 64))
        print(f"{name:24} {row['gb']:5.1f} GB  {cells}")


def print_formats(r: dict) -> None:
    gb = r["gb"]
    rounds = r["formats"]["txt"]["encode"].get("rounds", 1)
    print(f"\nformats (the same documents; the fastest of {rounds} interleaved rounds; time relative to .txt, goal <= 1.2x)")
    txt = r["formats"]["txt"]
    for fmt, row in r["formats"].items():
        extra = "" if fmt == "txt" else f"  ids equal to .txt: {row['encode']['ids_equal_txt']}"
        print(f"{fmt:10} {r['corpus'].get(fmt, r['corpus'][f'{gb:g}gb']) / 1e6:8.0f} MB on disk  "
              f"encode {row['encode']['wall_seconds']:6.1f} s ({row['encode']['wall_seconds'] / txt['encode']['wall_seconds']:.2f}x)  "
              f"train-bpe {row['train_bpe']['wall_seconds']:6.1f} s ({row['train_bpe']['wall_seconds'] / txt['train_bpe']['wall_seconds']:.2f}x){extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=1.0, help="the largest input, in GB [default: 1]")
    parser.add_argument("--reuse", type=Path, help="print a saved report instead of measuring")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--only", choices=["formats"], help="only phase 4 (with the .txt rows it compares against)")
    args = parser.parse_args()
    if args.reuse:
        report = json.loads(args.reuse.read_text())
    else:
        report = run_formats(args.gb) if args.only else run(args.gb)
        with atomic_open(WORK / ("report-formats.json" if args.only else "report.json"), "w") as out:
            json.dump(report, out, indent=1)
    if args.json:
        print(json.dumps(report))
    elif "train_bpe" in report:
        print_report(report)
    else:  # a formats-only report
        print_formats(report)

if __name__ == "__main__":
    main()
