"""The ``lmcli`` command line. This file only parses options and delegates: every subcommand
calls one function of an internal module, which does the work and raises ``LmcliError`` for
bad input. ``command`` turns those errors into a one-line message and a non-zero exit."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer

from lmcli import __version__
from lmcli.console import err_console
from lmcli.errors import LmcliError

app = typer.Typer(
    name="lmcli",
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


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


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
            except KeyboardInterrupt:
                fail("interrupted", code=130)

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
app.add_typer(data_app, name="data", help="Get the CS336 corpora (TinyStories, the OpenWebText sample).")


@command("download", group=data_app)
def data_download(
    dataset: Annotated[str, typer.Argument(help="tinystories (TinyStoriesV2-GPT4 train/valid) or owt-sample (owt_train/owt_valid).", show_default=False)],
    out_dir: Annotated[Optional[Path], typer.Option("--dir", help="Where to put the files \\[default: the workspace's data/].", show_default=False)] = None,
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Download a CS336 corpus from the Hugging Face hub (base URL: $LMCLI_HF_ENDPOINT or https://huggingface.co).

    Interrupted downloads resume from their .part file on the next run; complete files are skipped.
    owt-sample is unpacked from .gz to .txt and the .gz is deleted.
    """
    from lmcli.data.download import download_command

    download_command(dataset, out_dir, workspace, json_)


@command("doctor")
def doctor(workspace: WorkspaceOption = None, json_: JsonOption = False) -> None:
    """Report Python, lmcli and torch versions, devices (CUDA, MPS, CPU), memory, the workspace's contents
    and optional packages: paste it into a bug report."""
    from lmcli.doctor import doctor_command

    doctor_command(workspace, json_)
