"""Download the CS336 corpora from the Hugging Face hub: TinyStories and the OpenWebText sample.

Each file is streamed into ``<name>.part`` beside its target. An interrupted transfer leaves
the ``.part`` behind; the next run asks the server only for the missing tail (an HTTP ``Range``
request) and appends to it. The ``.part`` is renamed onto the real name only once its size
matches the size the server announced (``Content-Length``, or the total of ``Content-Range``),
so a file under its final name is always complete, and a later run skips it.

The OpenWebText sample is published gzipped: once downloaded, the ``.gz`` is streamed through
``gzip`` into a temporary file that is renamed atomically onto ``owt_*.txt``, and the ``.gz``
is then deleted (every command reads the text; keeping the archive would only cost disk).

Only the standard library is used. ``LMCLI_HF_ENDPOINT`` replaces ``https://huggingface.co``
(a mirror, or a local server in the tests).
"""

from __future__ import annotations

import gzip
import http.client
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from lmcli import __version__
from lmcli.atomic import atomic_open
from lmcli.errors import LmcliError
from lmcli.progress import SILENT, Progress, ProgressTask

ENDPOINT_ENV = "LMCLI_HF_ENDPOINT"
DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60


@dataclass(frozen=True)
class Dataset:
    repo: str  # a dataset repository on the hub
    files: tuple[str, ...]  # names in the repository; a ``.gz`` is unpacked after download


DATASETS = {
    "tinystories": Dataset("roneneldan/TinyStories", ("TinyStoriesV2-GPT4-train.txt", "TinyStoriesV2-GPT4-valid.txt")),
    "owt-sample": Dataset("stanford-cs336/owt-sample", ("owt_train.txt.gz", "owt_valid.txt.gz")),
}


def hub_endpoint() -> str:
    """The hub's base URL: ``$LMCLI_HF_ENDPOINT`` or https://huggingface.co (an http or https URL with a host)."""
    endpoint = os.environ.get(ENDPOINT_ENV, "").rstrip("/") or DEFAULT_ENDPOINT
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LmcliError(f"{ENDPOINT_ENV}={endpoint!r} is not an http:// or https:// URL with a host")
    return endpoint


def file_url(endpoint: str, repo: str, filename: str) -> str:
    return f"{endpoint}/datasets/{repo}/resolve/main/{filename}"


def partial_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def open_url(url: str, offset: int, endpoint: str) -> http.client.HTTPResponse:
    """GET ``url`` from byte ``offset`` on; network failures become one clear LmcliError."""
    headers = {"User-Agent": f"lmcli/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:  # nothing left after ``offset``: the caller compares sizes
            raise
        raise LmcliError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:  # ValueError: a malformed URL
        reason = getattr(e, "reason", None) or e
        raise LmcliError(f"could not reach {endpoint}: {reason}; check your connection or set {ENDPOINT_ENV}") from None


def body_span(response: http.client.HTTPResponse, offset: int, url: str) -> tuple[int, int | None]:
    """(byte of the file the body starts at, total file size or None) of a 200 or 206 response."""
    length = response.headers.get("Content-Length")
    if response.status != 206:  # a full body: the server ignored or was not sent a Range
        return 0, int(length) if length else None
    content_range = response.headers.get("Content-Range", "")
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", content_range)
    if not match or int(match[1]) != offset:
        raise LmcliError(f"{url}: unexpected Content-Range {content_range!r} when resuming at byte {offset:,}")
    if match[2] != "*":
        return offset, int(match[2])
    return offset, offset + int(length) if length else None


def copy_body(response: http.client.HTTPResponse, out, task: ProgressTask) -> str | None:
    """Append the response body to ``out``; returns why the transfer broke off, None at a clean end."""
    while True:
        try:
            chunk = response.read(CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as e:  # reset, timeout, broken chunked body
            return str(e) or type(e).__name__
        if not chunk:
            return None
        out.write(chunk)
        task.advance(len(chunk))


def check_size(part: Path, total: int | None, broke_off: str | None) -> None:
    """Refuse to rename a ``.part`` whose size differs from the announced one; it stays for a resume."""
    size = part.stat().st_size
    if total is None and broke_off is None:
        return  # no size announced and a clean end of body: nothing to compare against
    if total is not None and size == total:
        return
    announced = f"{total:,}" if total is not None else "an unknown number of"
    why = broke_off or ("the connection closed early" if total is not None and size < total else "size mismatch")
    raise LmcliError(
        f"{part.name}: {size:,} of {announced} bytes on disk ({why}); "
        f"the partial file is kept: run the command again to resume, or delete it to start over"
    )


def check_free_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise LmcliError(f"not enough disk space in {directory}: need {needed / 1e6:,.1f} MB, {free / 1e6:,.1f} MB free")


def finish_complete_part(part: Path, target: Path, error: urllib.error.HTTPError, url: str) -> str:
    """HTTP 416 on a resume: the ``.part`` already holds the whole file (a run stopped just before the rename)."""
    match = re.fullmatch(r"bytes \*/(\d+)", error.headers.get("Content-Range", ""))
    if not match or int(match[1]) != part.stat().st_size:
        raise LmcliError(f"{part} does not match {url} (HTTP 416); delete it to download again") from None
    os.replace(part, target)
    return "resumed"


def download_file(url: str, target: Path, endpoint: str, progress: Progress) -> str:
    """Fetch ``url`` into ``target`` via ``target.part``, resuming it; returns "downloaded" or "resumed"."""
    part = partial_path(target)
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = open_url(url, offset, endpoint)
    except urllib.error.HTTPError as e:
        return finish_complete_part(part, target, e, url)
    with response:
        start, total = body_span(response, offset, url)
        if total is not None:
            check_free_space(target.parent, total - start)
        task = progress.task(target.name, total=total, completed=start, unit="bytes")
        with open(part, "ab" if start else "wb") as out:
            broke_off = copy_body(response, out, task)
    check_size(part, total, broke_off)
    os.replace(part, target)
    return "resumed" if start else "downloaded"


def gunzip(archive: Path, target: Path, progress: Progress) -> None:
    """Stream ``archive`` through gzip into ``target`` (atomically), then delete the archive."""
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
    archive.unlink()


def fetch_dataset_file(endpoint: str, repo: str, filename: str, out_dir: Path, progress: Progress) -> dict:
    """Bring one file of a dataset up to date in ``out_dir``; returns its summary row."""
    archive = out_dir / filename
    target = out_dir / filename.removesuffix(".gz")
    if target.exists():
        status = "already complete"
    else:
        url = file_url(endpoint, repo, filename)
        status = "unpacked" if archive.exists() and archive != target else download_file(url, archive, endpoint, progress)
        if archive != target:
            gunzip(archive, target, progress)
    return {"file": target.name, "path": str(target), "bytes": target.stat().st_size, "status": status}


def download_dataset(name: str, out_dir: str | os.PathLike, progress: Progress = SILENT) -> dict:
    """Download (or resume, or skip) every file of dataset ``name`` into ``out_dir``; returns a summary."""
    if name not in DATASETS:
        raise LmcliError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    dataset, endpoint, out_dir = DATASETS[name], hub_endpoint(), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LmcliError(f"{out_dir} is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [fetch_dataset_file(endpoint, dataset.repo, f, out_dir, progress) for f in dataset.files]
    return {"dataset": name, "source": f"{endpoint}/datasets/{dataset.repo}", "dir": str(out_dir), "files": files}
