"""The second round's classes (#19), generated: outputs placed anywhere near a command's inputs, weights
and tokenizer files of any damage given to ``import``, and bytes flipped anywhere inside a checkpoint's
tensors. Each keeps the suite's property (works, or one ``error:`` line and no file changed), and more:
no input is ever changed, nothing half-imported appears, and a damaged tensor is always noticed."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from tests.fuzz.common import FUZZ, assert_works_or_fails_cleanly, json_values, make_workspace, snapshot

FEWER = settings(FUZZ, max_examples=20)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("fuzz-io"))


@pytest.fixture(scope="module")
def exported(ws, tmp_path_factory) -> Path:
    """The workspace's tiny run as a Hugging Face directory: what `import` reads."""
    from typer.testing import CliRunner

    from lmcli.cli import app

    out = tmp_path_factory.mktemp("hf") / "tiny-hf"
    result = CliRunner().invoke(app, ["export", "tiny", "--out", str(out), "--workspace", str(ws)])
    assert result.exit_code == 0, result.output
    return out


INPUTS = ["runs/tiny/latest.pt", "runs/tiny/best.pt", "runs/tiny/config.toml", "runs/tiny/metrics.jsonl",
          "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer-meta.json", "data/corpus.txt",
          "data/train.npy", "data/valid.npy"]


def inputs_of(ws: Path) -> dict[str, bytes | None]:
    """The bytes of every file the commands under test read (None: gone)."""
    return {name: (ws / name).read_bytes() if (ws / name).is_file() else None for name in INPUTS}


PLACES = ["{ws}", "{ws}/runs", "{ws}/runs/tiny", "{ws}/runs/tiny/out", "{ws}/runs/tiny/latest.pt", "{ws}/runs/tiny/best.pt",
          "{ws}/tokenizer", "{ws}/tokenizer/out", "{ws}/tokenizer/vocab.json", "{ws}/data", "{ws}/data/train.npy",
          "{ws}/data/corpus.txt", "{ws}/elsewhere", "{ws}/runs/other"]


@FUZZ
@given(place=st.sampled_from(PLACES), force=st.booleans(),
       command=st.sampled_from([["export", "tiny"], ["export", "tiny", "--format", "gguf"],
                                ["encode", "{ws}/data/corpus.txt"]]))
def test_no_output_replaces_an_input(cli, ws, monkeypatch, place, force, command):
    monkeypatch.setenv("LMCLI_WORKSPACE", str(ws))
    out = place.format(ws=ws)
    if command[-1] == "gguf":
        out += ".gguf" if not Path(out).exists() else ""
    before = inputs_of(ws)
    whole = snapshot(ws.parent)
    result = cli(*[a.format(ws=ws) for a in command], "--out", out, *(["--force"] if force else []))
    assert_works_or_fails_cleanly(result, whole, snapshot(ws.parent))
    assert inputs_of(ws) == before, "a command changed a file it reads"
    an_input = Path(out).resolve() in {(ws / name).resolve() for name in INPUTS}  # rewritten unchanged: it stays
    if result.exit_code == 0 and Path(out).exists() and not an_input:  # leave the workspace as it was for the next example
        shutil.rmtree(out) if Path(out).is_dir() else Path(out).unlink()
        Path(out + ".json").unlink(missing_ok=True)


def copy_of(exported: Path, tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("import") / "hf"
    shutil.copytree(exported, src)
    return src


def checked_import(cli, ws: Path, monkeypatch, src: Path):
    """``lmcli import src`` under the property; the imported run is removed again for the next example."""
    monkeypatch.setenv("LMCLI_WORKSPACE", str(ws))
    before = snapshot(ws)
    try:
        result = cli("import", src, "--name", "imported")
        assert_works_or_fails_cleanly(result, before, snapshot(ws))
        return result
    finally:
        shutil.rmtree(ws / "runs" / "imported", ignore_errors=True)


TENSOR_DAMAGE = ["cut", "scalar", "transpose", "extra_dim", "nan", "inf", "bool", "int8", "int32", "int64", "float16",
                 "bfloat16", "float64"]


def damage_tensor(tensor: torch.Tensor, how: str) -> torch.Tensor:
    if how == "cut":
        return tensor[:-1]
    if how == "scalar":
        return torch.tensor(1.0)
    if how == "transpose":
        return tensor.T.contiguous() if tensor.dim() == 2 else tensor[:, None]
    if how == "extra_dim":
        return tensor[None]
    if how in ("nan", "inf"):
        damaged = tensor.clone()
        damaged.view(-1)[0] = float(how)
        return damaged
    return tensor.to(getattr(torch, how)) if how != "bool" else tensor > 0


@FUZZ
@given(data=st.data())
def test_import_of_damaged_weights(cli, ws, exported, tmp_path_factory, monkeypatch, data):
    src = copy_of(exported, tmp_path_factory)
    tensors = load_file(str(src / "model.safetensors"))
    name = data.draw(st.sampled_from(sorted(tensors)))
    how = data.draw(st.sampled_from(TENSOR_DAMAGE))
    save_file({**tensors, name: damage_tensor(tensors[name], how).contiguous()}, str(src / "model.safetensors"))
    result = checked_import(cli, ws, monkeypatch, src)
    floating_and_finite = how in ("float16", "bfloat16", "float64")
    assert (result.exit_code == 0) == floating_and_finite, (name, how, result.stderr)
    if result.exit_code:
        assert f"tensor {name}" in result.stderr, result.stderr


@FUZZ
@given(data=st.data())
def test_import_of_a_tokenizer_json_of_any_shape(cli, ws, exported, tmp_path_factory, monkeypatch, data):
    src = copy_of(exported, tmp_path_factory)
    content = json.loads((src / "tokenizer.json").read_text())
    where = data.draw(st.sampled_from(["pre_tokenizer", "added_tokens", "model.vocab", "model.merges", "model.type"]))
    value = data.draw(json_values())
    if where.startswith("model."):
        content["model"][where.removeprefix("model.")] = value
    else:
        content[where] = value
    (src / "tokenizer.json").write_text(json.dumps(content))
    checked_import(cli, ws, monkeypatch, src)


def tensor_entries(path: Path) -> list[tuple[int, int]]:
    """(offset of the data, size) of every tensor entry in a torch.save zip."""
    with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
        found = []
        for info in archive.infolist():
            if "/data/" in info.filename and info.file_size:
                f.seek(info.header_offset + 26)
                name_length, extra_length = (int.from_bytes(f.read(2), "little") for _ in range(2))
                found.append((info.header_offset + 30 + name_length + extra_length, info.file_size))
        return found


@FEWER
@given(data=st.data())
def test_any_flipped_bit_in_a_checkpoints_tensors_is_noticed(cli, ws, monkeypatch, data):
    monkeypatch.setenv("LMCLI_WORKSPACE", str(ws))
    path = ws / "runs" / "tiny" / "best.pt"
    original = path.read_bytes()
    start, size = data.draw(st.sampled_from(tensor_entries(path)))
    at, bit = start + data.draw(st.integers(0, size - 1)), data.draw(st.integers(0, 7))
    damaged = bytearray(original)
    damaged[at] ^= 1 << bit
    try:
        path.write_bytes(bytes(damaged))
        command = data.draw(st.sampled_from([["generate", "-p", "a", "-n", "2"], ["eval", "--max-tokens", "32"]]))
        result = cli(*command, "--checkpoint", path)
        assert result.exit_code == 1 and "do not match the checksum written with them" in result.stderr, result.stderr
    finally:
        path.write_bytes(original)
