"""The demo corpus generator: deterministic, varied, held-out validation, regenerated when stale."""

from __future__ import annotations

import json
import random

import pytest

from lmcli.data.demo import SEPARATOR, STAMP_FILE, demo_split, ensure_demo_corpus, make_story
from lmcli.workspace import Workspace


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return ensure_demo_corpus(Workspace(tmp_path_factory.mktemp("demo")))


def test_demo_corpus_is_deterministic_and_split(demo, tmp_path):
    again = ensure_demo_corpus(Workspace(tmp_path))
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
    ws = Workspace(tmp_path)
    paths = ensure_demo_corpus(ws)
    mtime = paths["train"].stat().st_mtime_ns
    assert demo_split(ws, "train").stat().st_mtime_ns == mtime
    (ws.data_dir / STAMP_FILE).write_text(json.dumps({"generator_version": -1}))
    paths["train"].write_text("stale")
    assert ensure_demo_corpus(ws)["train"].read_text(encoding="utf-8") != "stale"


@pytest.mark.parametrize("stamp", ["{not json", ""])
def test_demo_corpus_regenerated_when_its_stamp_is_corrupt(tmp_path, stamp):
    ws = Workspace(tmp_path)
    paths = ensure_demo_corpus(ws)
    expected = paths["train"].read_bytes()
    (ws.data_dir / STAMP_FILE).write_text(stamp)
    paths["train"].write_text("stale")
    assert ensure_demo_corpus(ws)["train"].read_bytes() == expected


def test_story_generator_uses_its_seed():
    assert make_story(random.Random(1)) == make_story(random.Random(1))
    assert make_story(random.Random(1)) != make_story(random.Random(2))
