"""The foundation: demo corpus generator, workspace resolution, atomic writes, CLI basics."""

from __future__ import annotations

import json
import os

import pytest

from lmcli.atomic import atomic_open
from lmcli.data.demo import SEPARATOR, STAMP_FILE, ensure_demo_corpus, make_story
from lmcli.workspace import Workspace


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return ensure_demo_corpus(tmp_path_factory.mktemp("demo"))


def test_demo_corpus_is_deterministic_and_split(demo, tmp_path):
    again = ensure_demo_corpus(tmp_path)
    for split in ("train", "valid"):
        assert demo[split].read_bytes() == again[split].read_bytes()
    train = demo["train"].read_text(encoding="utf-8")
    valid = demo["valid"].read_text(encoding="utf-8")
    train_docs = [d.strip() for d in train.split(SEPARATOR)]
    valid_docs = [d.strip() for d in valid.split(SEPARATOR)]
    assert len(train_docs) > 1000 and len(valid_docs) > 100
    assert all(train_docs) and all(valid_docs), "no empty documents"
    assert len(set(train_docs)) > 0.95 * len(train_docs), "stories should rarely repeat"
    assert len(set(valid_docs) & set(train_docs)) < 0.05 * len(valid_docs), "validation is held out"


def test_demo_corpus_has_variety_and_agreement(demo):
    text = demo["train"].read_text(encoding="utf-8")
    words = set(text.split())
    assert len(words) > 400
    for name in ("Lily", "Tom", "Spot"):
        assert name in text
    assert '"' in text, "stories contain dialogue"
    assert "The a " not in text and " a a " not in text


def test_demo_corpus_reused_when_fresh_and_regenerated_when_stale(tmp_path):
    paths = ensure_demo_corpus(tmp_path)
    mtime = paths["train"].stat().st_mtime_ns
    assert ensure_demo_corpus(tmp_path)["train"].stat().st_mtime_ns == mtime
    (tmp_path / STAMP_FILE).write_text(json.dumps({"generator_version": -1}))
    paths["train"].write_text("stale")
    assert ensure_demo_corpus(tmp_path)["train"].read_text(encoding="utf-8") != "stale"


@pytest.mark.parametrize("stamp", ["{not json", ""])
def test_demo_corpus_regenerated_when_its_stamp_is_corrupt(tmp_path, stamp):
    paths = ensure_demo_corpus(tmp_path)
    expected = paths["train"].read_bytes()
    (tmp_path / STAMP_FILE).write_text(stamp)
    paths["train"].write_text("stale")
    assert ensure_demo_corpus(tmp_path)["train"].read_bytes() == expected


def test_story_generator_uses_its_seed():
    import random

    assert make_story(random.Random(1)) == make_story(random.Random(1))
    assert make_story(random.Random(1)) != make_story(random.Random(2))


def test_workspace_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("LMCLI_WORKSPACE", raising=False)
    assert Workspace.resolve().root.name == "workspace"
    monkeypatch.setenv("LMCLI_WORKSPACE", str(tmp_path / "env"))
    assert Workspace.resolve().root == tmp_path / "env"
    ws = Workspace.resolve(tmp_path / "flag")
    assert ws.root == tmp_path / "flag", "an explicit path beats the environment"
    assert ws.path("data/train.npy") == tmp_path / "flag" / "data" / "train.npy"
    assert ws.path("/abs/x.npy").as_posix() == "/abs/x.npy"
    assert ws.encoded_path(ws.data_dir / "demo-valid.txt") == ws.data_dir / "valid.npy"
    assert ws.encoded_path(tmp_path / "owt_train.txt") == ws.data_dir / "owt_train.npy"


def test_atomic_open_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["result.txt"], "no temporary file left behind"
    with atomic_open(target) as f:
        f.write("new")
    assert target.read_text() == "new"


def test_cli_help(cli):
    result = cli("--help")
    assert result.exit_code == 0 and "Usage" in result.stdout


def test_cli_data_demo_writes_both_splits(cli, tmp_path):
    result = cli("data", "demo", "--json")
    assert result.exit_code == 0, result.output
    splits = json.loads(result.stdout)["splits"]
    assert set(splits) == {"train", "valid"}
    for info in splits.values():
        assert os.path.getsize(info["path"]) == info["bytes"] > 100_000 * (info["stories"] >= 1000)
    table = cli("data", "demo")
    assert table.exit_code == 0 and "demo-train.txt" in table.stdout
