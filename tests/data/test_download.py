"""``lmcli data download`` against a stand-in for the Hugging Face hub on 127.0.0.1.

The local server answers the requests huggingface_hub makes of the hub: the repository's file
tree (``/api/datasets/OWNER/NAME/tree/main``) and each file under ``/datasets/.../resolve/main/``
(HEAD for its commit, ETag and size, GET with Range requests), with the hub's error codes. It
records every request and can cut a response short (half the body, then the connection closes)
or stall mid-body, to exercise resuming. Nothing leaves the machine.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub", reason="lmcli data download needs the data extra")

from lmcli.data.download import PRESETS, download_dataset
from lmcli.errors import LmcliError

TS_REPO = PRESETS["tinystories"].repo
OWT_REPO = PRESETS["owt-sample"].repo
TS_TRAIN, TS_VALID = PRESETS["tinystories"].files
OWT_TRAIN, OWT_VALID = PRESETS["owt-sample"].files
WEB_REPO = "someone/web-shards"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def story_text(n: int, seed: str) -> bytes:
    return "".join(f"Once upon a time {seed} {i} saw a cat.<|endoftext|>\n" for i in range(n)).encode()


class FakeHub:
    """Dataset repositories ``repos[repo][path] = bytes`` served under the hub's URL layout.

    ``cut[path] = k`` truncates the next k GET bodies of ``path``; ``stall`` names a path whose
    next GET sends half its body and then waits for ``release`` to be set.
    """

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, file path, Range header)
        self.cut: dict[str, int] = {}
        self.stall: str | None = None
        self.stalled, self.release = threading.Event(), threading.Event()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:
                self.serve(body_wanted=False)

            def do_GET(self) -> None:
                self.serve(body_wanted=True)

            def serve(self, body_wanted: bool) -> None:
                path = urllib.parse.urlsplit(self.path).path
                if tree := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/tree/main", path):
                    self.serve_tree(tree[1])
                elif file := re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/main/(.+)", path):
                    hub.requests.append((self.command, file[2], self.headers.get("Range")))
                    self.serve_file(file[1], urllib.parse.unquote(file[2]), body_wanted)
                else:
                    self.fail(404, "RepoNotFound")

            def serve_tree(self, repo: str) -> None:
                if repo not in hub.repos:
                    return self.fail(404, "RepoNotFound")
                entries = [
                    {"type": "file", "path": name, "size": len(body), "oid": hashlib.sha1(body).hexdigest()}
                    for name, body in hub.repos[repo].items()
                ]
                self.send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"})

            def serve_file(self, repo: str, name: str, body_wanted: bool) -> None:
                if repo not in hub.repos:
                    return self.fail(404, "RepoNotFound")
                body = hub.repos[repo].get(name)
                if body is None:
                    return self.fail(404, "EntryNotFound")
                headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(body).hexdigest()}"', "Accept-Ranges": "bytes"}
                start = int(m[1]) if (m := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")) else 0
                if start:
                    headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                payload = body[start:]
                if not body_wanted:
                    headers["Content-Length"] = str(len(body))
                    return self.send(200, b"", headers)
                if hub.cut.get(name, 0) > 0:
                    hub.cut[name] -= 1
                    return self.send(206 if start else 200, payload[: len(payload) // 2], headers, announced=len(payload))
                if hub.stall == name:
                    hub.stall = None
                    self.send(206 if start else 200, payload[: len(payload) // 2], headers, announced=len(payload), close=False)
                    hub.stalled.set()
                    hub.release.wait(30)
                    self.close_connection = True
                    return
                self.send(206 if start else 200, payload, headers)

            def send(self, code: int, body: bytes, headers: dict, announced: int | None = None, close: bool = True) -> None:
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body) if announced is None else announced))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                if announced is not None and close:
                    self.close_connection = True

            def fail(self, code: int, error_code: str) -> None:
                self.send(code, b"{}", {"X-Error-Code": error_code, "Content-Type": "application/json"})

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def file_requests(self, name: str, method: str = "GET") -> list[str | None]:
        return [rng for m, path, rng in self.requests if m == method and urllib.parse.unquote(path) == name]


@pytest.fixture
def hub(monkeypatch, tmp_path):
    fake = FakeHub()
    fake.repos[TS_REPO] = {TS_TRAIN: story_text(4000, "train"), TS_VALID: story_text(500, "valid"), "README.md": b"# stories\n"}
    thread = threading.Thread(target=fake.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # for lmcli run as a process
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # read at import
    yield fake
    fake.release.set()
    fake.server.shutdown()
    fake.server.server_close()


def serve_owt(hub: FakeHub) -> dict[str, bytes]:
    """Put gzipped OWT files on the hub; returns the expected unpacked texts by file name."""
    texts = {OWT_TRAIN: story_text(3000, "owt-train"), OWT_VALID: story_text(300, "owt-valid")}
    hub.repos[OWT_REPO] = {name: gzip.compress(text) for name, text in texts.items()}
    return {name.removesuffix(".gz"): text for name, text in texts.items()}


def serve_web_shards(hub: FakeHub) -> dict[str, bytes]:
    shards = {f"data/part-{i}.parquet": f"parquet bytes {i}".encode() * 100 for i in range(3)}
    hub.repos[WEB_REPO] = shards | {"data/part-0.jsonl": b'{"text": "a"}\n', "README.md": b"# web\n"}
    return shards


def statuses(summary: dict) -> dict[str, str]:
    return {row["file"]: row["status"] for row in summary["files"]}


def visible_files(folder: Path) -> list[str]:
    """Files under ``folder`` a user sees, leaving out huggingface_hub's .cache bookkeeping."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts)


def test_preset_download_then_kept_without_asking_the_hub(hub, tmp_path):
    out = tmp_path / "data"
    summary = download_dataset("tinystories", out)
    assert statuses(summary) == {TS_TRAIN: "downloaded", TS_VALID: "downloaded"}
    for name in (TS_TRAIN, TS_VALID):
        assert (out / name).read_bytes() == hub.repos[TS_REPO][name]
    assert visible_files(out) == sorted([TS_TRAIN, TS_VALID])  # the preset's files only, nothing partial
    assert summary["bytes"] == sum(len(hub.repos[TS_REPO][n]) for n in (TS_TRAIN, TS_VALID))

    seen = len(hub.requests)
    again = download_dataset("tinystories", out)
    assert statuses(again) == {TS_TRAIN: "already complete", TS_VALID: "already complete"}
    assert len(hub.requests) == seen  # preset files never change: complete ones are not asked for


@pytest.fixture
def small_chunks(monkeypatch):
    """huggingface_hub writes what arrives in 10 MB chunks; 64 kB ones let small files resume mid-way."""
    monkeypatch.setattr("huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE", 1 << 16)


@pytest.fixture
def instant_retries(monkeypatch):
    """huggingface_hub pauses 1-8 s between retries of a failed request; the tests need not wait."""
    monkeypatch.setattr(time, "sleep", lambda seconds: None)


def range_start(header: str | None) -> int:
    return int(re.fullmatch(r"bytes=(\d+)-", header)[1]) if header else 0


def test_a_dropped_connection_is_resumed_with_a_range_request(hub, tmp_path, small_chunks):
    full = hub.repos[TS_REPO][TS_TRAIN]
    hub.cut[TS_TRAIN] = 1
    summary = download_dataset("tinystories", tmp_path / "data")
    assert (tmp_path / "data" / TS_TRAIN).read_bytes() == full
    assert statuses(summary)[TS_TRAIN] == "downloaded"
    first, again = hub.file_requests(TS_TRAIN)
    assert first is None and 0 < range_start(again) <= len(full) // 2  # only what had not arrived


def test_a_transfer_that_keeps_breaking_is_one_line_and_resumable(hub, tmp_path, small_chunks, instant_retries):
    full = hub.repos[TS_REPO][TS_TRAIN]
    hub.cut[TS_TRAIN] = 100
    with pytest.raises(LmcliError, match=f"{TS_TRAIN}: the transfer kept breaking off; .* run the command again to resume"):
        download_dataset("tinystories", tmp_path / "data")
    assert not (tmp_path / "data" / TS_TRAIN).exists()
    hub.cut[TS_TRAIN] = 0
    summary = download_dataset("tinystories", tmp_path / "data")
    assert statuses(summary)[TS_TRAIN] == "resumed"
    assert (tmp_path / "data" / TS_TRAIN).read_bytes() == full
    assert range_start(hub.file_requests(TS_TRAIN)[-1]) > 0  # the last run asked only for the tail


def test_kill_9_mid_transfer_resumes_from_the_bytes_on_disk(hub, tmp_path):
    """The process dies mid-file; the next run asks only for what is missing, and the file is exact."""
    full = story_text(480_000, "big")  # 24 MB: its first half holds a whole 10 MB chunk of huggingface_hub's
    hub.repos[TS_REPO][TS_TRAIN] = full
    hub.stall = TS_TRAIN
    out = tmp_path / "data"
    env = os.environ | {"HF_ENDPOINT": hub.endpoint}
    command = [sys.executable, "-m", "lmcli", "data", "download", "tinystories", "--dir", str(out)]
    def incomplete() -> list[Path]:
        return list(out.glob(f"{TS_TRAIN}.*.part"))

    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert hub.stalled.wait(60), "the download never started"
        deadline = time.monotonic() + 30
        while not (incomplete() and incomplete()[0].stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # nothing more arrives while the server stalls
        on_disk = incomplete()[0].stat().st_size
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    assert not (out / TS_TRAIN).exists()
    hub.release.set()

    rerun = subprocess.run(command + ["--json"], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert statuses(json.loads(rerun.stdout))[TS_TRAIN] == "resumed"
    assert 0 < on_disk < len(full) and hub.file_requests(TS_TRAIN)[-1] == f"bytes={on_disk}-"
    assert (out / TS_TRAIN).read_bytes() == full
    assert not incomplete()


def test_repository_files_by_pattern_keep_the_repository_layout(hub, tmp_path):
    shards = serve_web_shards(hub)
    out = tmp_path / "web"
    summary = download_dataset(WEB_REPO, out, include=["data/*.parquet"])
    assert statuses(summary) == {name: "downloaded" for name in shards}
    assert visible_files(out) == sorted(shards)
    for name, body in shards.items():
        assert (out / name).read_bytes() == body
    again = download_dataset(f"hf:{WEB_REPO}", out, include=["data/*.parquet"])
    assert set(statuses(again).values()) == {"already complete"}
    assert all(hub.file_requests(name) == [None] for name in shards)  # checked again (HEAD), not fetched again


def test_cache_keeps_files_in_the_hugging_face_cache(hub, tmp_path):
    shards = serve_web_shards(hub)
    out = tmp_path / "web"
    summary = download_dataset(WEB_REPO, out, include=["data/part-1.parquet"], cache=True)
    [row] = summary["files"]
    path = Path(row["path"])
    assert path.is_relative_to(tmp_path / "hf-cache") and path.read_bytes() == shards["data/part-1.parquet"]
    assert not out.exists() or visible_files(out) == []


def test_owt_sample_is_unpacked_and_archive_removed(hub, tmp_path):
    expected = serve_owt(hub)
    out = tmp_path / "data"
    summary = download_dataset("owt-sample", out)
    assert statuses(summary) == {"owt_train.txt": "downloaded", "owt_valid.txt": "downloaded"}
    for name, text in expected.items():
        assert (out / name).read_bytes() == text
    assert visible_files(out) == sorted(expected)  # no .gz, partial or temporary files


def test_corrupt_archive_is_a_clear_error(hub, tmp_path):
    serve_owt(hub)
    hub.repos[OWT_REPO][OWT_TRAIN] = b"this is not gzip data at all"
    out = tmp_path / "data"
    with pytest.raises(LmcliError, match="not a valid gzip file"):
        download_dataset("owt-sample", out)
    assert visible_files(out) == [OWT_TRAIN]  # no half-unpacked owt_train.txt


@pytest.mark.parametrize(
    ("source", "include", "message"),
    [
        ("someone/missing", None, "no dataset someone/missing on http://127.0.0.1:"),
        (WEB_REPO, ["*.arrow"], f"no file of dataset {WEB_REPO} matches \\*.arrow"),
        ("owt-sample", None, "no dataset stanford-cs336/owt-sample"),
        ("wikipedia", None, "choose a preset \\(tinystories, owt-sample\\) or a hub repository OWNER/NAME"),
        ("tinystories", ["*.txt"], "tinystories is a preset with fixed files"),
    ],
)
def test_bad_requests_are_one_line(hub, tmp_path, source, include, message):
    serve_web_shards(hub)
    with pytest.raises(LmcliError, match=message):
        download_dataset(source, tmp_path / "data", include=include)


def test_cli_download_into_workspace_with_json(hub, cli, tmp_path):
    result = cli("data", "download", "tinystories", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    data_dir = tmp_path / "workspace" / "data"
    assert summary["dir"] == str(data_dir)
    assert summary["source"] == f"{hub.endpoint}/datasets/{TS_REPO}"
    for row in summary["files"]:
        assert Path(row["path"]).read_bytes() == hub.repos[TS_REPO][row["file"]]


def test_cli_repository_goes_to_a_folder_named_after_it(hub, cli, tmp_path):
    shards = serve_web_shards(hub)
    result = cli("data", "download", WEB_REPO, "--include", "data/part-0.*", "--include", "README.md")
    assert result.exit_code == 0, result.stderr
    folder = tmp_path / "workspace" / "data" / "web-shards"
    assert visible_files(folder) == ["README.md", "data/part-0.jsonl", "data/part-0.parquet"]
    assert (folder / "data/part-0.parquet").read_bytes() == shards["data/part-0.parquet"]
    assert "3 files" in result.stdout and "downloaded" in result.stdout


def test_cli_no_network_is_a_clear_error(cli, monkeypatch, tmp_path, instant_retries):
    with socket.socket() as s:  # a port that was just free: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    result = cli("data", "download", "tinystories", "--dir", tmp_path / "data")
    assert result.exit_code == 1
    assert f"could not reach http://127.0.0.1:{port}" in result.stderr
    assert "HF_ENDPOINT" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "data").exists() or visible_files(tmp_path / "data") == []


def test_cli_bad_requests_are_clear_errors(hub, cli, tmp_path):
    missing = cli("data", "download", "owt-sample")  # the fake hub has no OWT repository
    assert missing.exit_code == 1 and "no dataset stanford-cs336/owt-sample" in missing.stderr
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    not_dir = cli("data", "download", "tinystories", "--dir", a_file)
    assert not_dir.exit_code == 1 and f"{a_file} is not a directory" in not_dir.stderr
