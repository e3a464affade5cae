"""Workspace resolution: flag, then environment, then ./workspace; config paths live inside it."""

from __future__ import annotations

from lmcli.workspace import Workspace


def test_workspace_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("LMCLI_WORKSPACE", raising=False)
    assert Workspace.resolve().root.name == "workspace"
    monkeypatch.setenv("LMCLI_WORKSPACE", str(tmp_path / "env"))
    assert Workspace.resolve().root == tmp_path / "env"
    ws = Workspace.resolve(tmp_path / "flag")
    assert ws.root == tmp_path / "flag", "an explicit path beats the environment"
    assert ws.path("data/train.npy") == tmp_path / "flag" / "data" / "train.npy"
    assert ws.path("/abs/x.npy").as_posix() == "/abs/x.npy"
    assert ws.demo_path("train") == ws.data_dir / "demo-train.txt"
    assert ws.encoded_path(ws.data_dir / "demo-valid.txt") == ws.data_dir / "valid.npy"
    assert ws.encoded_path(tmp_path / "owt_train.txt") == ws.data_dir / "owt_train.npy"


def test_resolving_a_workspace_creates_nothing(tmp_path):
    ws = Workspace.resolve(tmp_path / "new")
    ws.demo_path("train"), ws.encoded_path(tmp_path / "x.txt")
    assert not (tmp_path / "new").exists()
