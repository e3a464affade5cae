"""Training configs: the bundled files, extends, --set overrides, type checks, the saved form."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmcli.accounting import count_params
from lmcli.config_values import dataclass_from_table
from lmcli.configs import CONFIGS_DIR
from lmcli.errors import LmcliError
from lmcli.model import TransformerLM
from lmcli.training.config import DataSource, TrainConfig, config_from_dict, load_config, resolve_config_path
from lmcli.training.optim import decay_groups

BUNDLED = sorted(CONFIGS_DIR.glob("*.toml"))


def test_the_configs_directory_has_the_cs336_experiments():
    assert {p.stem for p in BUNDLED} >= {
        "demo", "tinystories", "tinystories-cpu", "owt",
        "tinystories-no-rmsnorm", "tinystories-post-norm", "tinystories-nope", "tinystories-silu",
    }


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_every_bundled_config_loads_and_its_no_decay_patterns_match_its_model(path):
    config = load_config(path)
    with torch.device("meta"):  # shapes only, no memory
        model = TransformerLM.from_config(config.model)
    groups = decay_groups(model, config.optimizer.weight_decay, list(config.optimizer.no_decay))
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_tinystories_is_the_cs336_base_experiment():
    c = load_config("tinystories")
    m = c.model
    assert (m.vocab_size, m.context_length, m.d_model, m.d_ff, m.num_layers, m.num_heads, m.rope_theta) == (
        10_000, 256, 512, 1_344, 4, 16, 10_000.0)
    assert c.max_steps * c.training.batch_size * m.context_length == 327_680_000
    assert c.cosine_steps == c.max_steps  # the cosine ends at the last step
    cpu = load_config("tinystories-cpu")
    assert cpu.max_steps * cpu.training.batch_size * cpu.model.context_length == 40_960_000
    assert load_config("owt").model.vocab_size == 32_000


@pytest.mark.parametrize(("name", "differs"), [
    ("tinystories-no-rmsnorm", {"norm": "none"}),
    ("tinystories-post-norm", {"norm": "post"}),
    ("tinystories-nope", {"position": "none"}),
    ("tinystories-silu", {"ffn": "silu", "d_ff": 2048}),
])
def test_ablations_change_only_their_switch(name, differs):
    base, ablation = load_config("tinystories"), load_config(name)
    assert ablation.model == dataclasses.replace(base.model, **differs)
    assert ablation.training == base.training and ablation.data == base.data


def test_extends_merges_tables_and_set_overrides_are_typed(tmp_path):
    (tmp_path / "base.toml").write_text('[model]\nd_model = 64\nnum_heads = 4\n[training]\nbatch_size = 8\n')
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[training]\nseed = 3\n')
    config = load_config(tmp_path / "child.toml", [
        "optimizer.lr=1",  # an integer where a float is expected: widened
        "optimizer.betas=[0.8, 0.9]",
        "data.train=data/other.npy",  # a bare word: a string
        "system.compile=on",
        "training.total_tokens=1_000_000",
    ])
    assert config.model.d_model == 64 and config.model.num_heads == 4
    assert config.training.batch_size == 8 and config.training.seed == 3
    assert config.optimizer.lr == 1.0 and isinstance(config.optimizer.lr, float)
    assert config.optimizer.betas == (0.8, 0.9)
    assert config.data.train == "data/other.npy" and config.system.compile == "on"
    assert config.training.total_tokens == 1_000_000


def test_the_saved_toml_reads_back_to_the_same_config(tmp_path):
    config = load_config("demo", ["optimizer.no_decay=[]", "training.max_steps=70"])
    (tmp_path / "config.toml").write_text(config.to_toml())
    assert load_config(tmp_path / "config.toml") == config


@pytest.mark.parametrize(("overrides", "message"), [
    (["training.bogus=1"], "unknown key training.bogus"),
    (["model.bogus=1"], "unknown key model.bogus"),
    (["bogus.key=1"], "unknown config table [bogus]"),
    (["training.batch_size=2.5"], "training.batch_size must be an integer, got float 2.5"),
    (["training.batch_size=true"], "training.batch_size must be an integer, got bool"),
    (["optimizer.lr=fast"], "optimizer.lr must be a number, got str 'fast'"),
    (["optimizer.betas=[0.9]"], "optimizer.betas must be a list of 2"),
    (["system.device=tpu"], "system.device must be one of 'auto', 'cpu', 'cuda', 'mps'"),
    (["training.batch_size=0"], "training.batch_size must be positive"),
    (["optimizer.min_lr=1.0"], "must not exceed optimizer.lr"),
    (["optimizer.lr=1e38"], "optimizer.lr must be at most 1,000,000,000 (a larger rate overflows the update), got 1e+38"),
    (["optimizer.name=muon", "optimizer.muon_lr=1e300"], "optimizer.muon_lr must be at most"),
    (["optimizer.betas=[0.9, 1.0]"], "optimizer.betas must each be in [0, 1)"),
    (["optimizer.warmup_steps=5000"], "exceeds the schedule's 500 steps"),
    (["training.total_tokens=100"], "is less than one batch"),
    (["lr=3"], "expected section.key=value"),
    (["data.train=[{weight=1}]"], "data.train must be a string or a list of strings or a list of tables {path, weight, name}"),
    (["data.train=[{path='a.npy', weight=0}]"], "every source's weight must be positive"),
])
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(LmcliError) as error:
        load_config("demo", overrides)
    assert message in str(error.value)


def test_a_table_missing_a_required_key_names_it():
    with pytest.raises(LmcliError, match="^data.train needs path$"):
        dataclass_from_table(DataSource, "data.train", {"weight": 2})


def test_bad_files_are_clear_errors(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(LmcliError, match="extends itself"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "broken.toml").write_text("[model\n")
    with pytest.raises(LmcliError, match="is not valid TOML"):
        load_config(tmp_path / "broken.toml")
    (tmp_path / "orphan.toml").write_text('extends = "missing.toml"\n')
    with pytest.raises(LmcliError, match="extends missing.toml, which does not exist"):
        load_config(tmp_path / "orphan.toml")
    with pytest.raises(LmcliError, match=r"config nope does not exist \(bundled configs: demo,"):
        resolve_config_path("nope")


def test_defaults_alone_make_a_valid_config():
    assert config_from_dict({}) == TrainConfig()


@pytest.mark.parametrize(("speedrun", "baseline"), [("speedrun-demo", "demo"), ("tinystories-speedrun", "tinystories"),
                                                     ("owt-speedrun", "owt")])
def test_speedrun_configs_keep_their_baselines_budget_and_size(speedrun, baseline):
    fast, base = load_config(speedrun), load_config(baseline)
    assert fast.training.total_tokens == base.training.total_tokens and fast.data == base.data
    assert abs(count_params(fast.model) / count_params(base.model) - 1) <= 0.05
    assert fast != base
