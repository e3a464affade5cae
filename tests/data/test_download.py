"""``lmcli data download`` against a stand-in for the Hugging Face hub on 127.0.0.1.

The local server serves small files under the hub's URL layout, honours Range requests, records
every request, and can cut a response short (send half the body, then close the connection) to
exercise the resume path. Nothing leaves the machine.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lmcli.data.download import DATASETS, download_dataset, partial_path
from lmcli.errors import LmcliError

TS_REPO = DATASETS["tinystories"].repo
OWT_REPO = DATASETS["owt-sample"].repo
TS_TRAIN, TS_VALID = DATASETS["tinystories"].files
OWT_TRAIN, OWT_VALID = DATASETS["owt-sample"].files


def story_text(n: int, seed: str) -> bytes:
    return "".join(f"Once upon a time {seed} {i} saw a cat.<|endoftext|>\n" for i in range(n)).encode()


def hub_path(repo: str, filename: str) -> str:
    return f"/datasets/{repo}/resolve/main/{filename}"


class FakeHub:
    """Serves ``files`` (URL path -> bytes); ``cut[path] = k`` truncates the next k responses for path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut: dict[str, int] = {}
        self.ignore_range = False
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub.requests.append((self.path, self.headers.get("Range")))
                body = hub.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = self.range_start()
                if start >= len(body) and start > 0:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if hub.cut.get(self.path, 0) > 0:
                    hub.cut[self.path] -= 1
                    payload = payload[: len(payload) // 2]  # HTTP/1.0: the connection closes after this
                self.wfile.write(payload)

            def range_start(self) -> int:
                header = self.headers.get("Range")
                if not header or hub.ignore_range:
                    return 0
                return int(re.fullmatch(r"bytes=(\d+)-", header)[1])

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def requests_for(self, path: str) -> list[str | None]:
        return [rng for p, rng in self.requests if p == path]


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub()
    fake.files[hub_path(TS_REPO, TS_TRAIN)] = story_text(4000, "train")
    fake.files[hub_path(TS_REPO, TS_VALID)] = story_text(500, "valid")
    thread = threading.Thread(target=fake.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    monkeypatch.setenv("LMCLI_HF_ENDPOINT", fake.endpoint)
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def serve_owt(hub: FakeHub) -> dict[str, bytes]:
    """Put gzipped OWT files on the hub; returns the expected unpacked texts by file name."""
    texts = {OWT_TRAIN: story_text(3000, "owt-train"), OWT_VALID: story_text(300, "owt-valid")}
    for name, text in texts.items():
        hub.files[hub_path(OWT_REPO, name)] = gzip.compress(text)
    return {name.removesuffix(".gz"): text for name, text in texts.items()}


def statuses(summary: dict) -> dict[str, str]:
    return {row["file"]: row["status"] for row in summary["files"]}


def test_full_download_then_skip(hub, tmp_path):
    out = tmp_path / "data"
    summary = download_dataset("tinystories", out)
    assert statuses(summary) == {TS_TRAIN: "downloaded", TS_VALID: "downloaded"}
    for name in (TS_TRAIN, TS_VALID):
        assert (out / name).read_bytes() == hub.files[hub_path(TS_REPO, name)]
    assert sorted(p.name for p in out.iterdir()) == sorted([TS_TRAIN, TS_VALID])  # no .part left
    assert [row["bytes"] for row in summary["files"]] == [(out / n).stat().st_size for n in (TS_TRAIN, TS_VALID)]

    seen = len(hub.requests)
    again = download_dataset("tinystories", out)
    assert statuses(again) == {TS_TRAIN: "already complete", TS_VALID: "already complete"}
    assert len(hub.requests) == seen  # skipped files are not even asked for


def test_interrupted_download_resumes_with_range(hub, tmp_path):
    out, path = tmp_path / "data", hub_path(TS_REPO, TS_TRAIN)
    full = hub.files[path]
    hub.cut[path] = 1
    with pytest.raises(LmcliError, match="run the command again to resume"):
        download_dataset("tinystories", out)
    part = partial_path(out / TS_TRAIN)
    assert part.read_bytes() == full[: len(full) // 2]
    assert not (out / TS_TRAIN).exists()

    summary = download_dataset("tinystories", out)
    assert statuses(summary) == {TS_TRAIN: "resumed", TS_VALID: "downloaded"}
    assert hub.requests_for(path) == [None, f"bytes={len(full) // 2}-"]
    assert (out / TS_TRAIN).read_bytes() == full
    assert not part.exists()


def test_server_ignoring_range_restarts_from_scratch(hub, tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    partial_path(out / TS_TRAIN).write_bytes(b"stale bytes from another version")
    hub.ignore_range = True
    summary = download_dataset("tinystories", out)
    assert statuses(summary)[TS_TRAIN] == "downloaded"
    assert (out / TS_TRAIN).read_bytes() == hub.files[hub_path(TS_REPO, TS_TRAIN)]


def test_complete_part_is_finished_on_http_416(hub, tmp_path):
    """A run killed between the last byte and the rename: the server has nothing left to send."""
    out = tmp_path / "data"
    out.mkdir()
    full = hub.files[hub_path(TS_REPO, TS_TRAIN)]
    partial_path(out / TS_TRAIN).write_bytes(full)
    summary = download_dataset("tinystories", out)
    assert statuses(summary)[TS_TRAIN] == "resumed"
    assert (out / TS_TRAIN).read_bytes() == full
    assert not partial_path(out / TS_TRAIN).exists()


def test_part_larger_than_remote_is_an_error(hub, tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    full = hub.files[hub_path(TS_REPO, TS_TRAIN)]
    partial_path(out / TS_TRAIN).write_bytes(full + b"extra")
    with pytest.raises(LmcliError, match="delete it to download again"):
        download_dataset("tinystories", out)


def test_owt_sample_is_unpacked_and_archive_removed(hub, tmp_path):
    expected = serve_owt(hub)
    out = tmp_path / "data"
    summary = download_dataset("owt-sample", out)
    assert statuses(summary) == {"owt_train.txt": "downloaded", "owt_valid.txt": "downloaded"}
    for name, text in expected.items():
        assert (out / name).read_bytes() == text
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)  # no .gz, .part or temp files


def test_leftover_archive_is_unpacked_without_downloading(hub, tmp_path):
    expected = serve_owt(hub)
    out = tmp_path / "data"
    out.mkdir()
    (out / OWT_TRAIN).write_bytes(hub.files[hub_path(OWT_REPO, OWT_TRAIN)])
    summary = download_dataset("owt-sample", out)
    assert statuses(summary)["owt_train.txt"] == "unpacked"
    assert hub.requests_for(hub_path(OWT_REPO, OWT_TRAIN)) == []
    assert (out / "owt_train.txt").read_bytes() == expected["owt_train.txt"]


def test_corrupt_archive_is_a_clear_error(hub, tmp_path):
    serve_owt(hub)
    hub.files[hub_path(OWT_REPO, OWT_TRAIN)] = b"this is not gzip data at all"
    out = tmp_path / "data"
    with pytest.raises(LmcliError, match="not a valid gzip file"):
        download_dataset("owt-sample", out)
    assert sorted(p.name for p in out.iterdir()) == [OWT_TRAIN]  # no half-unpacked owt_train.txt


def test_cli_download_into_workspace_with_json(hub, cli, tmp_path):
    result = cli("data", "download", "tinystories", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    data_dir = tmp_path / "workspace" / "data"
    assert summary["dir"] == str(data_dir)
    assert summary["source"] == f"{hub.endpoint}/datasets/{TS_REPO}"
    for row in summary["files"]:
        assert Path(row["path"]).read_bytes() == hub.files[hub_path(TS_REPO, row["file"])]


def test_cli_prints_where_files_are_and_skips_complete_ones(hub, cli, tmp_path):
    out = tmp_path / "elsewhere"
    first = cli("data", "download", "tinystories", "--dir", out)
    assert first.exit_code == 0, first.stderr
    assert TS_TRAIN in first.stdout and str(out) in first.stdout and "downloaded" in first.stdout
    second = cli("data", "download", "tinystories", "--dir", out)
    assert second.exit_code == 0 and second.stdout.count("already complete") == 2


def test_cli_size_mismatch_keeps_part(hub, cli, tmp_path):
    path = hub_path(TS_REPO, TS_TRAIN)
    full = hub.files[path]
    hub.cut[path] = 2
    out = tmp_path / "data"
    for _ in range(2):  # the second run resumes, and is cut short again
        result = cli("data", "download", "tinystories", "--dir", out)
        assert result.exit_code == 1
        assert "error:" in result.stderr and "Traceback" not in result.stderr
        assert f"of {len(full):,} bytes on disk (the connection closed early)" in result.stderr
    half = len(full) // 2
    assert partial_path(out / TS_TRAIN).stat().st_size == half + (len(full) - half) // 2
    assert not (out / TS_TRAIN).exists()


def test_cli_no_network_is_a_clear_error(cli, monkeypatch, tmp_path):
    with socket.socket() as s:  # a port that was just free: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LMCLI_HF_ENDPOINT", f"http://127.0.0.1:{port}")
    result = cli("data", "download", "tinystories", "--dir", tmp_path / "data")
    assert result.exit_code == 1
    assert f"could not reach http://127.0.0.1:{port}" in result.stderr
    assert "LMCLI_HF_ENDPOINT" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert list((tmp_path / "data").iterdir()) == []


def test_cli_bad_requests_are_clear_errors(hub, cli, tmp_path):
    missing = cli("data", "download", "owt-sample")  # the fake hub has no OWT files
    assert missing.exit_code == 1 and "HTTP 404" in missing.stderr
    unknown = cli("data", "download", "wikipedia")
    assert unknown.exit_code == 1 and "choose one of: tinystories, owt-sample" in unknown.stderr
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    not_dir = cli("data", "download", "tinystories", "--dir", a_file)
    assert not_dir.exit_code == 1 and f"{a_file} is not a directory" in not_dir.stderr
