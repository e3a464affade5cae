"""The ``lmcli`` command line. This file only parses options and delegates: every subcommand
calls ``run`` of its module in ``lmcli.commands``, which does the work and raises ``LmcliError``
for bad input. ``command`` turns those errors into a one-line message and a non-zero exit, and
``OneLineErrors`` does the same for usage errors (an unknown option, a value of the wrong type
or size), so no input ever ends in a traceback."""

from __future__ import annotations

import functools
import importlib
import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from lmcli import __version__
from lmcli.config_values import INT64  # the largest integer an option takes: counts, sizes and seeds beyond fit no tensor
from lmcli.errors import LmcliError
from lmcli.job import INTERRUPTED, interrupts_held, reports_interruption
from lmcli.tokenizer.special_tokens import END_OF_TEXT
from lmcli.ui.console import print_error


class OneLineErrors(TyperGroup):
    """The app's command group: usage errors print as one ``error:`` line naming the command's help."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as e:  # what click raises for bad usage
            if type(e).__name__ == "NoArgsIsHelpError":  # bare `lmcli`: the help is already printed
                sys.exit(e.exit_code)
            where = f" (see `{e.ctx.command_path} --help`)" if getattr(e, "ctx", None) else ""
            print_error(" ".join(e.format_message().split()) + where)
            sys.exit(e.exit_code)
        except typer.Abort:  # end of input at a prompt
            if reports_interruption():
                print_error("interrupted")
            sys.exit(INTERRUPTED)
        if result == INTERRUPTED and reports_interruption():  # typer's answer to Ctrl-C (KeyboardInterrupt)
            print_error("interrupted")
        sys.exit(result if isinstance(result, int) else 0)


def finite_float(text: str) -> float:
    """A float option's value, which must be a finite number (``nan`` and ``inf`` parse as floats)."""
    try:
        number = float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number") from None
    if not math.isfinite(number):
        raise typer.BadParameter(f"{text!r} is not a finite number")
    return number


app = typer.Typer(
    name="lmcli",
    cls=OneLineErrors,
    help="Build and train small Transformer language models from scratch: "
    "BPE tokenizer, Transformer LM, AdamW training and text generation (CS336 assignment 1 as a tool).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

WorkspaceOption = Annotated[
    Optional[Path],
    typer.Option(
        "--workspace",
        envvar="LMCLI_WORKSPACE",
        help="Directory where commands find each other's outputs \\[default: ./workspace].",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object instead of tables.")]
TextFieldOption = Annotated[str, typer.Option("--text-field", help="The field holding each record's text, in JSON lines, parquet and datasets.")]
SplitOption = Annotated[str, typer.Option("--split", help="The split of an hf:OWNER/NAME dataset.")]


def fail(message: str, code: int = 1) -> None:
    print_error(message)
    raise typer.Exit(code)


def run(name: str):
    """The ``run`` function of ``lmcli.commands.<name>``."""
    # Imported when the command runs: the commands import torch and numpy, which `lmcli --help` should not wait
    # for; a Ctrl-C while they load is raised after.
    with interrupts_held():
        return importlib.import_module(f"lmcli.commands.{name}").run


def command(*args, group: typer.Typer = app, **kwargs):
    """``group.command`` (default: the top-level app) that reports user errors in one line instead of a traceback."""

    def register(fn):
        @functools.wraps(fn)
        def run(*a, **kw):
            try:
                return fn(*a, **kw)
            except LmcliError as e:
                fail(str(e))
            except OSError as e:  # missing/unreadable files, full disk...: the OS message is the clearest
                fail(f"{e.strerror}: {e.filename}" if e.filename and e.strerror else str(e))

        return group.command(*args, **kwargs)(run)

    return register


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lmcli {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Build and train small Transformer language models from scratch."""


data_app = typer.Typer(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(data_app, name="data", help="Get data: the CS336 corpora, any Hugging Face dataset's files, the demo corpus.")


@command("download", group=data_app)
def data_download(
    dataset: Annotated[str, typer.Argument(metavar="DATASET", help="A preset, tinystories (TinyStoriesV2-GPT4 train/valid) or owt-sample (owt_train/owt_valid), or a hub dataset repository OWNER/NAME.", show_default=False)],
    include: Annotated[Optional[list[str]], typer.Option("--include", help="Only a repository's files matching this glob pattern (repeatable), e.g. 'sample/10BT/*.parquet' \\[default: every file].", show_default=False)] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--dir", help="Where to put the files, laid out as in the repository \\[default: the workspace's data/ for a preset, data/NAME for a repository].", show_default=False)] = None,
    cache: Annotated[bool, typer.Option("--cache", help="Keep the files in the Hugging Face cache ($HF_HOME), shared with other tools, and print their paths there, instead of copying them into --dir.")] = False,
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Download a dataset's files from the Hugging Face hub, with huggingface_hub (needs lmcli\\[data]).

    Interrupted transfers resume on the next run; complete files are kept. HF_ENDPOINT (a mirror), HF_TOKEN, HF_HOME and HF_HUB_OFFLINE work as for every hub tool. owt-sample is unpacked from .gz to .txt and the .gz deleted.

    Example: lmcli data download tinystories    |    lmcli data download HuggingFaceFW/fineweb-edu --include 'sample/10BT/00*.parquet'
    """
    run("data_download")(dataset, include, out_dir, cache, workspace, json_)


@command("demo", group=data_app)
def data_demo(workspace: WorkspaceOption = None, json_: JsonOption = False) -> None:
    """Write the embedded demo corpus (synthetic TinyStories-style stories, train and valid splits) into the workspace's data/ and show where it is. Other commands create it on first use anyway."""
    run("data_demo")(workspace, json_)


@command("doctor")
def doctor(workspace: WorkspaceOption = None, json_: JsonOption = False) -> None:
    """Report Python, lmcli and torch versions, devices (CUDA, MPS, CPU), memory, the workspace's contents and optional packages: paste it into a bug report."""
    run("doctor")(workspace, json_)


@command("train-bpe")
def train_bpe(
    inputs: Annotated[Optional[list[str]], typer.Argument(metavar="[INPUT]...", help="Text to train on, counted together: text files (.txt, .gz, .zst, .xz), JSON lines, .parquet, a dataset directory or hf:OWNER/NAME; glob patterns work \\[default: the workspace's demo train split].", show_default=False)] = None,
    vocab: Annotated[int, typer.Option("--vocab", max=2**31 - 1, help="Vocabulary size, counting the 256 bytes and the special tokens.")] = 10000,
    special_tokens: Annotated[Optional[list[str]], typer.Option("--special-token", help="Special token: never split, never merged across (repeatable) \\[default: <|endoftext|>].", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output directory for vocab.json, merges.txt, tokenizer-meta.json \\[default: the workspace's tokenizer/].", show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, max=1024, help="Processes that pre-tokenize in parallel, this one included \\[default: all cores].", show_default=False)] = None,
    errors: Annotated[str, typer.Option("--errors", help="Invalid UTF-8 in the input: strict (stop, naming the byte offset) or replace (use U+FFFD).")] = "strict",
    text_field: TextFieldOption = "text",
    split: SplitOption = "train",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an output directory that holds a different tokenizer.")] = False,
    profile: Annotated[Optional[Path], typer.Option("--profile", help="Write cProfile stats of the main process to this file (view: python -m pstats FILE).", show_default=False)] = None,
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Train a byte-level BPE tokenizer (GPT-2 pre-tokenization) and write it in GPT-2's file format.

    The input is read in chunks cut at special tokens and pre-tokenized by a pool of workers, so memory is bounded by the chunk size and the number of distinct pre-tokens, not by the file size. The files load in lmcli, Hugging Face tokenizers and tiktoken. Re-running the same command overwrites its own output; a directory holding a different tokenizer needs --force.

    Example: lmcli train-bpe data/TinyStoriesV2-GPT4-train.txt --vocab 10000 --out tok-ts
    """
    run("train_bpe")(inputs or [], vocab, special_tokens or [END_OF_TEXT], out, workers, errors, text_field, split, force, profile,
                     workspace, json_)


@command("encode")
def encode(
    inputs: Annotated[Optional[list[str]], typer.Argument(metavar="[INPUT]...", help="Inputs to encode, one .npy each: text files (.txt, .gz, .zst, .xz), JSON lines (.jsonl[.gz|.zst]), .parquet, a dataset directory or hf:OWNER/NAME; glob patterns work \\[default: both demo splits of the workspace, to data/train.npy and data/valid.npy].", show_default=False)] = None,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="Tokenizer directory (vocab.json, merges.txt) \\[default: the workspace's tokenizer/].", show_default=False)] = None,
    special_tokens: Annotated[Optional[list[str]], typer.Option("--special-token", help="Special token, never split (repeatable) \\[default: the tokenizer's, else <|endoftext|>].", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output .npy of a single INPUT \\[default: the workspace's data/INPUT-NAME.npy].", show_default=False)] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", help="Directory for the outputs, one INPUT-NAME.npy per input \\[default: the workspace's data/].", show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, max=1024, help="Processes encoding chunks in parallel \\[default: all cores].", show_default=False)] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="auto: uint16 when every id is below 65,536 (half the size of uint32), else uint32; or force uint16 / uint32.")] = "auto",
    errors: Annotated[str, typer.Option("--errors", help="Invalid UTF-8 in the input: strict (stop, naming the byte offset) or replace (use U+FFFD).")] = "strict",
    text_field: TextFieldOption = "text",
    split: SplitOption = "train",
    shard_tokens: Annotated[Optional[int], typer.Option("--shard-tokens", min=1, max=INT64, help="Write all INPUTs as one dataset of shards of about this many tokens, with a manifest, into --out-dir (resumable: run the same command again after an interruption) \\[default without it: one .npy per input; with --part: 100,000,000].", show_default=False)] = None,
    part: Annotated[Optional[str], typer.Option("--part", help="i/n: encode every n-th INPUT from the i-th (from 0) into --out-dir/part-i-of-n, for n machines; training reads --out-dir as the whole.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="With --shard-tokens: start over when --out-dir holds shards of other inputs or another tokenizer.")] = False,
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Encode text of any size to a .npy array of token ids (np.load(path, mmap_mode="r")).

    The file is streamed in chunks cut where tokenization cannot change, encoded by a pool of workers and written atomically: the ids equal encoding the whole file in one piece, and an interrupted run leaves no partial .npy behind. With GPT-2's files the ids are exactly tiktoken's gpt2 ids.

    Records (JSON lines, parquet, datasets) are documents: each is followed by <|endoftext|>, so records t1, t2 give the ids of the text t1<|endoftext|>t2<|endoftext|>. Compressed inputs are streamed.

    With --shard-tokens, all inputs become one dataset of shards and a manifest in --out-dir, which a training config names as data.train = "DIR"; the same command resumes an interrupted run.

    Example: lmcli encode data/TinyStoriesV2-GPT4-valid.txt --tokenizer tok-ts --out data/ts-valid.npy    |    lmcli encode 'shards/*.parquet' --out-dir data/web --shard-tokens 100000000
    """
    run("encode")(inputs or [], tokenizer, special_tokens, out, out_dir, workers, dtype, errors, text_field, split, shard_tokens, part,
                  force, workspace, json_)


@command("decode")
def decode(
    ids_path: Annotated[Path, typer.Argument(metavar="IDS", help="A .npy array of token ids written by lmcli encode.", show_default=False)],
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="Tokenizer directory \\[default: the one that encoded IDS, as recorded beside it, else the workspace's tokenizer/]; another tokenizer than the recorded one is refused.", show_default=False)] = None,
    start: Annotated[int, typer.Option("--start", max=INT64, help="Index of the first id to decode.")] = 0,
    count: Annotated[Optional[int], typer.Option("--count", max=INT64, help="How many ids to decode \\[default: all from --start].", show_default=False)] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Print the text of (a slice of) an encoded dataset, to check what a model is trained on.

    Example: lmcli decode workspace/data/valid.npy --start 1000 --count 200
    """
    run("decode")(ids_path, tokenizer, start, count, workspace)


@command("stats")
def stats(
    input_path: Annotated[Optional[str], typer.Argument(metavar="[INPUT]", help="Corpus: a text file, documents separated by the special token (also .gz, .zst, .xz), or records, one document each (JSON lines, .parquet, a dataset directory, hf:OWNER/NAME) \\[default: the workspace's demo train split].", show_default=False)] = None,
    tokenizers: Annotated[Optional[list[Path]], typer.Option("--tokenizer", help="Tokenizer directory; repeat to compare several side by side \\[default: the workspace's tokenizer/].", show_default=False)] = None,
    docs: Annotated[int, typer.Option("--docs", max=INT64, help="Number of documents to sample.")] = 500,
    seed: Annotated[int, typer.Option("--seed", min=0, max=INT64, help="Seed of the document sample.")] = 0,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, max=1024, help="Processes for the parallel throughput \\[default: all cores].", show_default=False)] = None,
    errors: Annotated[str, typer.Option("--errors", help="Invalid UTF-8 in the input: strict (stop, naming the byte offset) or replace (use U+FFFD).")] = "strict",
    text_field: TextFieldOption = "text",
    split: SplitOption = "train",
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Tokenizer statistics on sampled documents: compression (bytes/token), encode throughput with 1 process and all workers, time to tokenize the Pile (825 GB), vocabulary size, longest tokens and the share of the vocabulary the sample uses. Several --tokenizer options print side by side.

    Example: lmcli stats data/owt_valid.txt --tokenizer tok-ts --tokenizer tok-owt --docs 10
    """
    run("stats")(input_path, tokenizers, docs, seed, workers, errors, text_field, split, workspace, json_)


@command("train")
def train(
    config: Annotated[Optional[str], typer.Option("--config", "-c", help="TOML config: a path, or the name of a config bundled with lmcli (demo, tinystories, tinystories-cpu, owt, ablations).", show_default=False)] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="Override one config value, e.g. --set optimizer.lr=3e-4 --set training.max_steps=200 (repeatable; value read as TOML).", show_default=False)] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue the run in this directory (a path, or a name under the workspace's runs/) from its latest.pt.", show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Run directory name under runs/ \\[default: config name + timestamp].", show_default=False)] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda or mps \\[default: system.device of the config].", show_default=False)] = None,
    wandb: Annotated[bool, typer.Option("--wandb", help="Also log metrics to Weights & Biases (needs the wandb package).")] = False,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Also write the metrics as TensorBoard event files into the run's tensorboard/ (needs lmcli\\[tensorboard]).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live panel or progress bars; only the summary.")] = False,
    init_from: Annotated[Optional[str], typer.Option("--init-from", help="Start a new run from the weights of this checkpoint (a file, run directory or run name, e.g. one from `lmcli import`): its model, a fresh optimizer.", show_default=False)] = None,
    nproc: Annotated[int, typer.Option("--nproc", min=1, max=1024, help="Train in this many processes on this machine (one per GPU; on a CPU they share the cores), launched as torchrun does.")] = 1,
    peak_flops: Annotated[Optional[float], typer.Option("--peak-flops", min=0, help="The device's peak FLOP/s for MFU, e.g. 989e12 (same as --set training.peak_flops) \\[default: the table of known GPUs].", show_default=False)] = None,
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Train a Transformer LM with AdamW on token ids from `lmcli encode`.

    Each run gets runs/<name>/ with config.toml, metrics.jsonl, train.log and checkpoints (latest.pt, best.pt). Ctrl-C saves a checkpoint and stops; --resume continues exactly.

    Example: lmcli train --config demo --set training.max_steps=500
    """
    overrides = [*(overrides or []), *([f"training.peak_flops={peak_flops!r}"] if peak_flops is not None else [])]
    run("train")(config, overrides, resume, name, device, wandb, quiet, workspace, json_, nproc, init_from, tensorboard)


@command("export")
def export(
    checkpoint: Annotated[Optional[str], typer.Argument(metavar="[CHECKPOINT]", help="A checkpoint .pt file, a run directory or a run name \\[default: the workspace's most recent run].", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The directory (hf: transformers' from_pretrained reads it) or .gguf file to write.")] = Path("hf-model"),
    fmt: Annotated[str, typer.Option("--format", help="hf: a Hugging Face Llama directory (config.json, model.safetensors, tokenizer.json); gguf: one file for llama.cpp (needs the gguf package).")] = "hf",
    dtype: Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16 weights (gguf: float32 or float16).")] = "float32",
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Export a checkpoint as a Hugging Face Llama: transformers' AutoModelForCausalLM and AutoTokenizer load it with no custom code.

    Example: lmcli export demo --out hf-demo    |    lmcli export demo --format gguf --out demo.gguf
    """
    run("export")(checkpoint, out, fmt, dtype, force, workspace, json_)


@command("import")
def import_(
    src: Annotated[Path, typer.Argument(metavar="HF_DIR", help="A local Hugging Face Llama directory (config.json, safetensors, tokenizer.json or vocab.json + merges.txt).", show_default=False)],
    name: Annotated[Optional[str], typer.Option("--name", help="Run name under runs/ \\[default: the directory's name].", show_default=False)] = None,
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Import a Hugging Face Llama from disk as a run (checkpoint and tokenizer) for generate, eval and train --init-from.

    Example: lmcli import ./TinyLlama-dir --name tinyllama
    """
    run("import_hf")(src, name, workspace, json_)


@command("plot")
def plot(
    runs: Annotated[Optional[list[str]], typer.Argument(help="Run directories or run names in the workspace's runs/ \\[default: every run].", show_default=False)] = None,
    metric: Annotated[str, typer.Option("--metric", "-m", help="val_loss, train_loss, lr, grad_norm, val_bpb, or val_loss/NAME (val_bpb/NAME) of a mixture's source.")] = "val_loss",
    x: Annotated[str, typer.Option("--x", help="x axis: step, tokens or time (wall-clock).")] = "step",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Image to write (.png, .pdf, .svg) \\[default: curves.png, or none with --terminal].", show_default=False)] = None,
    terminal: Annotated[bool, typer.Option("--terminal", "-t", help="Draw the curves in the terminal (braille characters).")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Learning curves of several runs on one figure; the legend shows the config values that differ.

    Example: lmcli plot lr-1e-3 lr-3e-3 --metric val_loss --x time -o curves.png
    """
    run("plot")(runs or [], metric, x, out, terminal, workspace)


@command("runs")
def runs(workspace: WorkspaceOption = None, json_: JsonOption = False) -> None:
    """The runs of the workspace: steps, best and final validation loss, tokens/s, wall time and status (running, finished, diverged, interrupted or failed, read from each run directory)."""
    run("runs")(workspace, json_)


@command("generate")
def generate(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Text to continue; - reads it from stdin; an empty prompt starts a new document.", show_default=False)],
    checkpoint: Annotated[Optional[str], typer.Option("--checkpoint", "-c", help="A checkpoint .pt file, a run directory or a run name (its best.pt, else latest.pt) \\[default: the workspace's most recent run].", show_default=False)] = None,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="Tokenizer directory \\[default: the one the checkpoint was trained with].", show_default=False)] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", max=INT64, help="Stop after this many new tokens (or at <|endoftext|>).")] = 256,
    temperature: Annotated[float, typer.Option("--temperature", "-t", parser=finite_float, help="Softmax temperature; 0 = greedy (argmax).")] = 0.8,
    top_p: Annotated[float, typer.Option("--top-p", parser=finite_float, help="Nucleus sampling: draw from the smallest set of tokens whose probability reaches p, in (0, 1].")] = 0.95,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, max=INT64, help="Seed for reproducible sampling (on a given device).", show_default=False)] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", max=INT64, help="Completions to draw together (one batched forward pass per token).")] = 1,
    device: Annotated[str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda or mps.")] = "auto",
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Continue a prompt with a trained model, printing the text as it is generated (KV cache; past the context length the model keeps going on the latest tokens). A summary (tokens, tokens/s) goes to stderr.

    Example: lmcli generate --prompt "Once upon a time" --temperature 0.7 --seed 1
    """
    run("generate")(prompt, checkpoint, tokenizer, max_tokens, temperature, top_p, seed, num_samples, device, workspace, json_)


@command("accounting")
def accounting(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="gpt2-small, gpt2-medium, gpt2-large, gpt2-xl, tinystories or a CONFIG.toml with a \\[model] table \\[default: tinystories].", show_default=False)] = None,
    compare: Annotated[Optional[str], typer.Option("--compare", help="Comma-separated models to put side by side, e.g. gpt2-small,gpt2-medium,gpt2-large,gpt2-xl.", show_default=False)] = None,
    context_length: Annotated[Optional[int], typer.Option("--context-length", max=INT64, help="Tokens per sequence \\[default: the model's context length].", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", max=INT64, help="Sequences per optimizer step, for the training time.")] = 1024,
    micro_batch_size: Annotated[Optional[int], typer.Option("--micro-batch-size", max=INT64, help="Sequences per forward pass (gradient accumulation), for memory \\[default: --batch-size].", show_default=False)] = None,
    shards: Annotated[int, typer.Option("--fsdp", max=INT64, help="Devices FSDP shards the weights, gradients and AdamW state over (1: no sharding).")] = 1,
    memory: Annotated[float, typer.Option("--memory", parser=finite_float, help="Memory budget in GiB per device, for the largest micro-batch that fits.")] = 80.0,
    dtype: Annotated[str, typer.Option("--dtype", help="fp32, or bf16 (autocast: bf16 activations and peak FLOP/s; weights and AdamW state stay fp32).")] = "fp32",
    hardware: Annotated[str, typer.Option("--hardware", help="a100 or h100 (peak dense FLOP/s from NVIDIA's datasheets).")] = "a100",
    mfu: Annotated[float, typer.Option("--mfu", parser=finite_float, help="Model FLOPs utilization: the fraction of peak FLOP/s the run achieves.")] = 0.5,
    steps: Annotated[int, typer.Option("--steps", max=INT64, help="Training steps for the time estimate.")] = 400_000,
    json_: JsonOption = False,
) -> None:
    """Parameters, forward FLOPs by component (matmuls; backward = 2x), peak AdamW training memory per device (a·micro-batch + b, largest micro-batch for --memory) and training time at an MFU: where a Transformer's cost goes.

    Defaults are the CS336 exercise: fp32 on one 80 GB A100 at 50% MFU, 400K steps of batch 1,024.

    Example: lmcli accounting --model gpt2-xl    |    lmcli accounting --compare gpt2-small,gpt2-medium,gpt2-large,gpt2-xl
    """
    run("accounting")(model, compare, context_length, batch_size, micro_batch_size, shards, memory, dtype, hardware, mfu,
                      steps, json_)


@command("eval")
def eval_(
    checkpoint: Annotated[Optional[str], typer.Option("--checkpoint", "-c", help="A checkpoint .pt file, a run directory or a run name (its best.pt, else latest.pt) \\[default: the workspace's most recent run].", show_default=False)] = None,
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Token ids (.npy from `lmcli encode`), a path or relative to the workspace \\[default: the run's validation file].", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", max=INT64, help="Windows per forward pass.")] = 32,
    max_tokens: Annotated[int, typer.Option("--max-tokens", max=INT64, help="Evaluate only the first N tokens (0 = the whole file).")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda or mps.")] = "auto",
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Loss and perplexity of a checkpoint over a whole token file, in non-overlapping context-length windows.

    Example: lmcli eval --checkpoint workspace/runs/demo/best.pt --data data/valid.npy
    """
    run("eval")(checkpoint, data, batch_size, max_tokens, device, workspace, json_)


@command("sweep")
def sweep(
    config: Annotated[Optional[str], typer.Option("--config", "-c", help="TOML config every trial starts from: a path, or a bundled config name.", show_default=False)] = None,
    settings: Annotated[Optional[list[str]], typer.Option("--set", help="section.key=v1,v2,... (or choice:v1,v2) is an axis of listed values; uniform:LO:HI, loguniform:LO:HI and int:LO:HI are ranges (random, tpe); a single value is a fixed override (repeatable).", show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Sweep name, the study's name: runs are runs/<name>-..., results sweeps/<name>/ \\[default: sweep-<config>-<timestamp>].", show_default=False)] = None,
    search: Annotated[str, typer.Option("--search", help="grid (every combination of listed values), random or tpe (Optuna's samplers; need --trials).")] = "grid",
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="Trials of a random or tpe search, shared by every worker of the study.", show_default=False)] = None,
    prune: Annotated[str, typer.Option("--prune", help="Stop trials that cannot win at an evaluation: none, median, asha or hyperband (Optuna's pruners).")] = "none",
    parallel: Annotated[int, typer.Option("--parallel", min=1, max=1024, help="Slots for trials: one per GPU, or cores/N threads each on a CPU; a trial takes --nproc of them.")] = 1,
    nproc: Annotated[int, typer.Option("--nproc", min=1, max=1024, help="Each trial trains in this many processes (lmcli train --nproc), taking as many slots.")] = 1,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage shared by workers: journal:PATH, sqlite:///PATH, postgresql://... \\[default: journal:sweeps/<name>/study.log].", show_default=False)] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue (or join) the sweep NAME as it was created.", show_default=False)] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or mps \\[default: system.device of the config].", show_default=False)] = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Each trial also writes TensorBoard event files (tensorboard --logdir workspace/runs; needs lmcli\\[tensorboard]).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live table; one line per finished trial and the final table.")] = False,
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Search hyperparameters: trials are lmcli train runs, in parallel, on an Optuna study that survives being killed.

    Running the same command again (or --resume NAME) skips finished trials, resumes interrupted ones from their checkpoints and starts the rest; workers on other machines join with the same --storage and --name. A run that diverges is recorded and the sweep goes on. The sweep ends with a table (and importance, for random and tpe); sweeps/<name>/ gets sweep.json and the learning curves.

    Example: lmcli sweep --config demo --set optimizer.lr=1e-3,3e-3,1e-2 --name lr    |    lmcli sweep --config demo --set optimizer.lr=loguniform:1e-4:3e-2 --search tpe --trials 12 --prune asha --parallel 2 --name lr-tpe
    """
    run("sweep")(config, settings, name, search, trials, prune, parallel, storage, resume, device, tensorboard, workspace, quiet, json_,
                 nproc)
