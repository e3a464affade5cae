"""Download dataset files from the Hugging Face hub, through the ``huggingface_hub`` library.

What to fetch is either a named preset (the CS336 corpora: ``tinystories``, ``owt-sample``) or
any dataset repository ``OWNER/NAME``, narrowed by glob patterns (``--include "*.parquet"``).
The repository's file tree is listed once (names and sizes), the selected files are checked
against the free disk space, and each is fetched. huggingface_hub does all the talking to the
hub, so ``HF_ENDPOINT`` (a mirror), ``HF_TOKEN`` / ``hf auth login`` (gated and private data),
``HF_HOME`` / ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` work as for every other hub tool, and a
connection that drops mid-file is retried from the byte it reached.

Files go to a folder, laid out as in the repository. Each file is written to
``NAME.<etag>.part`` beside its target and renamed once whole, so a file under its final name is
complete; a run that was killed leaves the ``.part`` behind, and the next run asks the hub only
for the missing tail (an HTTP ``Range`` request). huggingface_hub's own ``hf_hub_download``
restarts a killed transfer from zero (its partial files are private to a process), which costs
hours on an 11 GB corpus; lmcli keeps the partial file and hands the rest to the library's
``http_get``. A file already there with the hub's size is kept. With ``cache=True`` the files
stay in the shared Hugging Face cache instead (``hf_hub_download``), reported by their path
there.

The OpenWebText sample is published gzipped: its text is streamed out of the archive into
``owt_*.txt`` (atomically) and the archive deleted, as the CS336 handout has it. Preset files
never change upstream, so a preset file on disk is not asked about again.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import importlib
import os
import shutil
import urllib.parse
import zlib
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator

from lmcli.atomic import atomic_open
from lmcli.errors import LmcliError
from lmcli.extras import optional_module
from lmcli.progress import SILENT, Progress, ProgressTask

ENDPOINT_ENV = "HF_ENDPOINT"
DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK_BYTES = 1 << 20
REPO_PREFIX = "hf:"


@dataclass(frozen=True)
class Preset:
    repo: str  # a dataset repository on the hub
    files: tuple[str, ...]  # names in the repository; a ``.gz`` is unpacked after download


PRESETS = {
    "tinystories": Preset("roneneldan/TinyStories", ("TinyStoriesV2-GPT4-train.txt", "TinyStoriesV2-GPT4-valid.txt")),
    "owt-sample": Preset("stanford-cs336/owt-sample", ("owt_train.txt.gz", "owt_valid.txt.gz")),
}


@dataclass(frozen=True)
class Request:
    """What one ``lmcli data download`` asks for: a repository and which of its files."""

    repo: str
    files: tuple[str, ...] = ()  # exact names (a preset); empty: every file matching ``include``
    include: tuple[str, ...] = ()  # glob patterns; empty with no ``files``: the whole repository
    unpack: bool = False  # a preset published as .gz: keep the text, not the archive


def parse_request(source: str, include: list[str] | None = None) -> Request:
    """A preset name, ``OWNER/NAME`` or ``hf:OWNER/NAME``, with optional ``--include`` patterns."""
    if source in PRESETS:
        preset = PRESETS[source]
        if include:
            raise LmcliError(f"--include selects files of a repository; {source} is a preset with fixed files ({preset.repo})")
        return Request(preset.repo, preset.files, unpack=True)
    repo = source.removeprefix(REPO_PREFIX)
    owner, _, name = repo.partition("/")
    if not owner or not name or "/" in name or any(c.isspace() for c in repo):
        raise LmcliError(f"unknown dataset {source!r}; choose a preset ({', '.join(PRESETS)}) or a hub repository OWNER/NAME")
    return Request(repo, include=tuple(include or ()))


def hub_endpoint() -> str:
    """The hub's base URL: ``$HF_ENDPOINT`` or https://huggingface.co (an http or https URL with a host)."""
    endpoint = os.environ.get(ENDPOINT_ENV, "").rstrip("/") or DEFAULT_ENDPOINT
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LmcliError(f"{ENDPOINT_ENV}={endpoint!r} is not an http:// or https:// URL with a host")
    return endpoint


class Hub:
    """The huggingface_hub calls lmcli makes, for one endpoint, with its errors turned into one line."""

    def __init__(self, endpoint: str) -> None:
        self.hf = optional_module("huggingface_hub", "data", "lmcli data download")
        self.errors, self.utils, self.constants, self.file_download = (
            importlib.import_module(f"huggingface_hub.{module}") for module in ("errors", "utils", "constants", "file_download")
        )
        self.httpx = importlib.import_module("httpx2")  # huggingface_hub's HTTP client: its transport errors
        self.utils.logging.set_verbosity_error()  # its retry warnings would tear the progress bars
        self.endpoint = endpoint
        self.api = self.hf.HfApi(endpoint=endpoint)

    def file_sizes(self, repo: str) -> dict[str, int]:
        """Every file of dataset ``repo`` with its size in bytes."""
        with self.one_line_errors(repo):
            tree = self.api.list_repo_tree(repo, repo_type="dataset", recursive=True)
            return {entry.path: entry.size for entry in tree if isinstance(entry, self.hf.RepoFile)}

    def to_cache(self, repo: str, filename: str, transfers: Transfers) -> Path:
        """``filename`` of ``repo`` in the Hugging Face cache, fetched if it is not there yet."""
        with self.one_line_errors(repo, filename):
            path = self.hf.hf_hub_download(repo, filename, repo_type="dataset", endpoint=self.endpoint, tqdm_class=transfers)
        return Path(path)

    def to_folder(self, repo: str, filename: str, target: Path, transfers: Transfers) -> str:
        """``filename`` of ``repo`` into ``target`` through a resumable ``.part``; returns how it went."""
        with self.one_line_errors(repo, filename):
            url = self.hf.hf_hub_url(repo, filename, repo_type="dataset", endpoint=self.endpoint)
            remote = self.hf.get_hf_file_metadata(url, endpoint=self.endpoint)
            if target.exists() and target.stat().st_size == remote.size:
                return "already complete"
            part = partial_path(target, remote.etag)
            offset = resumable_bytes(part, remote.size)
            if remote.size is not None:
                check_free_space(target.parent, remote.size - offset)
            with open(part, "r+b" if offset else "wb") as out:
                out.seek(offset)
                self.file_download.http_get(
                    remote.location, out, resume_size=offset, headers=self.utils.build_hf_headers(),
                    expected_size=remote.size, displayed_filename=filename, tqdm_class=transfers,
                )
        os.replace(part, target)
        return "resumed" if offset else "downloaded"

    @contextlib.contextmanager
    def one_line_errors(self, repo: str, filename: str | None = None) -> Iterator[None]:
        try:
            yield
        except LmcliError:
            raise
        except Exception as e:  # noqa: BLE001  whatever the library raises becomes one line, never a traceback
            raise LmcliError(self.explain(e, repo, filename)) from None

    def explain(self, error: Exception, repo: str, filename: str | None) -> str:
        """One line saying what went wrong, and what to do about it where something can be done."""
        errors, endpoint = self.errors, self.endpoint
        where = f"{repo}/{filename}" if filename else repo
        transport = next((e for e in causes(error) if isinstance(e, self.httpx.TransportError)), None)
        if isinstance(error, errors.GatedRepoError):
            return f"{repo} is gated on {endpoint}: accept its terms there, then set HF_TOKEN or run `hf auth login`"
        if isinstance(error, errors.RepositoryNotFoundError):
            return f"no dataset {repo} on {endpoint} (if it is private: set HF_TOKEN or run `hf auth login`)"
        if isinstance(error, errors.RemoteEntryNotFoundError):
            return f"dataset {repo} on {endpoint} has no file {filename}"
        if isinstance(error, errors.HfHubHTTPError) and error.response is not None:
            return f"{where}: HTTP {error.response.status_code} from {endpoint}"
        if isinstance(error, errors.OfflineModeIsEnabled) or self.constants.HF_HUB_OFFLINE:
            return f"{where} is not on disk and HF_HUB_OFFLINE is set"
        if isinstance(transport, (self.httpx.ConnectError, self.httpx.ConnectTimeout, self.httpx.ProxyError)):
            return f"could not reach {endpoint}: {first_line(transport)}; check your connection or set {ENDPOINT_ENV}"
        if transport is not None or "Consistency check failed" in str(error):
            return f"{where}: the transfer kept breaking off; what arrived is kept: run the command again to resume"
        if isinstance(error, OSError) and error.strerror:
            return f"{where}: {error.strerror}"
        return f"{where}: {type(error).__name__}: {first_line(error)}"


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from or during, innermost last."""
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class Transfers:
    """Draws huggingface_hub's transfers of one file on lmcli's progress bars.

    huggingface_hub creates a bar per transfer (its ``tqdm_class`` argument), with the bytes
    already on disk as ``initial``.
    """

    def __init__(self, progress: Progress, name: str) -> None:
        self.progress, self.name = progress, name
        self.started = False

    def __call__(self, *, total: int | None = None, initial: int = 0, **_: object) -> TransferBar:
        self.started = True
        return TransferBar(self.progress.task(self.name, total=total, completed=initial, unit="bytes"))


class TransferBar:
    """The part of tqdm's interface huggingface_hub uses, on one of lmcli's progress tasks."""

    def __init__(self, task: ProgressTask) -> None:
        self.task = task

    def __enter__(self) -> TransferBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: float = 1) -> None:
        self.task.advance(n)

    def close(self) -> None:
        pass


def partial_path(target: Path, etag: str | None) -> Path:
    """Where ``target`` grows while it downloads; the etag keeps bytes of another version apart."""
    return target.with_name(f"{target.name}.{(etag or 'unknown')[:16]}.part")


def resumable_bytes(part: Path, size: int | None) -> int:
    """How much of ``part`` a resume keeps: none if it is longer than the file it is part of.

    Partial files of other versions of the same target are deleted: their bytes can never be used.
    """
    for stale in part.parent.glob(f"{glob.escape(part.name.rsplit('.', 2)[0])}.*.part"):
        if stale != part:
            stale.unlink()
    offset = part.stat().st_size if part.exists() else 0
    return offset if size is None or offset <= size else 0


def check_free_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise LmcliError(f"not enough disk space in {directory}: need {needed / 1e6:,.1f} MB, {free / 1e6:,.1f} MB free")


def existing_parent(path: Path) -> Path:
    """``path``, or its nearest ancestor that exists (a cache not created yet lives on its disk)."""
    return next(p for p in (path, *path.parents) if p.exists())


def gunzip(archive: Path, target: Path, progress: Progress) -> None:
    """Stream ``archive`` through gzip into ``target`` (atomically)."""
    task = progress.task(f"unpack {archive.name}", total=archive.stat().st_size, unit="bytes")
    try:
        with open(archive, "rb") as raw, gzip.GzipFile(fileobj=raw) as unpacked, atomic_open(target, "wb") as out:
            while chunk := unpacked.read(CHUNK_BYTES):
                out.write(chunk)
                task.update(completed=raw.tell())
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise LmcliError(f"{archive} is not a valid gzip file ({e}); delete it and run the command again") from None
    except OSError as e:  # e.g. the disk filled up: the archive stays, a later run unpacks it
        raise LmcliError(f"could not unpack {archive} into {target}: {e.strerror or e}") from None


def selected_files(request: Request, sizes: dict[str, int], hub: Hub) -> list[str]:
    """The repository's files the request names or its patterns match, in the repository's order."""
    unsafe = next((name for name in sizes if Path(name).is_absolute() or ".." in Path(name).parts), None)
    if unsafe is not None:
        raise LmcliError(f"dataset {request.repo} lists a file outside its folder ({unsafe!r}); refusing to write it")
    if request.files:
        missing = [name for name in request.files if name not in sizes]
        if missing:
            raise LmcliError(f"dataset {request.repo} has no file {missing[0]}")
        return list(request.files)
    chosen = list(hub.utils.filter_repo_objects(sizes, allow_patterns=list(request.include) or None))
    if not chosen:
        what = f"matches {', '.join(request.include)}" if request.include else "exists"
        raise LmcliError(f"no file of dataset {request.repo} {what}")
    return chosen


def text_of_archive(out_dir: Path, filename: str, request: Request) -> Path | None:
    """Where a preset archive's text goes (None for a file used as it is)."""
    return out_dir / filename.removesuffix(".gz") if request.unpack and filename.endswith(".gz") else None


def kept_copy(out_dir: Path, filename: str, request: Request, cache: bool) -> Path | None:
    """A preset's file as it is used, if it is on disk: preset files never change, so it is complete."""
    if not request.files:
        return None
    path = text_of_archive(out_dir, filename, request) or (None if cache else out_dir / filename)
    return path if path is not None and path.exists() else None


def summary_row(name: str, path: Path, status: str) -> dict:
    return {"file": name, "path": str(path), "bytes": path.stat().st_size, "status": status}


def fetch_file(hub: Hub, request: Request, filename: str, out_dir: Path, cache: bool, progress: Progress) -> dict:
    """Bring one file up to date; returns its summary row."""
    transfers = Transfers(progress, Path(filename).name)
    if cache:
        path = hub.to_cache(request.repo, filename, transfers)
        status = "downloaded" if transfers.started else "already complete"
    else:
        path = out_dir / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        status = hub.to_folder(request.repo, filename, path, transfers)
    text = text_of_archive(out_dir, filename, request)
    if text is None:
        return summary_row(filename, path, status)
    gunzip(path, text, progress)
    if not cache:  # a copy in the shared cache belongs to the cache
        path.unlink()
    return summary_row(text.name, text, "unpacked" if status == "already complete" else status)


def default_folder(source: str) -> str:
    """The folder of the workspace's data/ a source goes to: a preset's files go to data/ itself."""
    return "" if source in PRESETS else parse_request(source).repo.split("/")[1]


def download_dataset(
    source: str,
    out_dir: str | os.PathLike,
    include: list[str] | None = None,
    cache: bool = False,
    progress: Progress = SILENT,
) -> dict:
    """Download (or resume, or keep) the files of ``source`` into ``out_dir``; returns a summary.

    ``source`` is a preset name or a dataset repository; ``include`` narrows a repository to the
    files matching its glob patterns. With ``cache``, files stay in the Hugging Face cache (only
    unpacked preset texts are written to ``out_dir``).
    """
    request, out_dir = parse_request(source, include), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LmcliError(f"{out_dir} is not a directory")
    endpoint = hub_endpoint()
    kept = {name: kept_copy(out_dir, name, request, cache) for name in request.files}
    rows = {name: summary_row(path.name, path, "already complete") for name, path in kept.items() if path is not None}
    if len(rows) < len(request.files) or not request.files:
        hub = Hub(endpoint)
        sizes = hub.file_sizes(request.repo)
        files = [f for f in selected_files(request, sizes, hub) if f not in rows]
        out_dir.mkdir(parents=True, exist_ok=True)
        space = existing_parent(Path(hub.constants.HF_HUB_CACHE)) if cache else out_dir
        check_free_space(space, sum(sizes[f] for f in files if cache or not (out_dir / f).exists()))
        rows |= {f: fetch_file(hub, request, f, out_dir, cache, progress) for f in files}
    ordered = [rows[name] for name in request.files] if request.files else list(rows.values())
    return {
        "dataset": source,
        "source": f"{endpoint}/datasets/{request.repo}",
        "dir": str(out_dir),
        "files": ordered,
        "bytes": sum(row["bytes"] for row in ordered),
    }
