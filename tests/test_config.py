import math
from pathlib import Path

import pytest

from charrnn.config import TrainConfig, check_seed, given, load_file, to_toml
from charrnn.errors import CharRNNError


def test_defaults_are_valid():
    cfg = TrainConfig()
    assert cfg.cell == "lstm" and cfg.batching == "sequential"


def test_precedence_defaults_file_flags(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('hidden_size = 32\nlr = 1\ncell = "gru"\n')
    cfg = TrainConfig(**given(path, {"hidden_size": 48, "steps": None}))
    assert cfg.hidden_size == 48  # flag beats file
    assert cfg.cell == "gru"  # file beats default
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)  # ints are accepted for floats
    assert cfg.steps == TrainConfig().steps  # None means "not given"


@pytest.mark.parametrize("prefix", ["", "The 😀 river\n\t\"quoted\" \\ é\x7f\x01"])
def test_toml_round_trip(tmp_path: Path, prefix: str):
    cfg = TrainConfig(hidden_size=7, max_time=12.5, cell="rnn", sample_prefix=prefix)
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg.to_dict()), encoding="utf-8")
    assert TrainConfig(**given(path, {})) == cfg


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hiden_size = 3", "unknown setting 'hiden_size'"),
        ('hidden_size = "big"', "hidden_size in"),
        ("hidden_size = 2.5", "hidden_size in"),
        ("dropout = true", "dropout in"),
        ("hidden_size = ", "not valid TOML"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(CharRNNError, match=message):
        load_file(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(CharRNNError, match="does not exist"):
        load_file(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "bad",
    [
        {"hidden_size": 0}, {"num_layers": -1}, {"batch_size": 0}, {"seq_len": 0}, {"steps": 0},
        {"dropout": 1.0}, {"dropout": -0.1}, {"lr": 0.0}, {"lr": -1.0}, {"cell": "transformer"},
        {"batching": "shuffled"}, {"device": "tpu"}, {"val_fraction": 0.0}, {"val_fraction": 1.0},
        {"clip": -1.0}, {"max_time": 0.0}, {"min_lr_ratio": 2.0}, {"lr_drop": 0.0}, {"lr_drop": 1.5},
        {"weight_decay": -0.1}, {"keep": 0},
    ],
)
def test_bad_values(bad: dict):
    name = next(iter(bad))
    with pytest.raises(CharRNNError, match=name):
        TrainConfig(**bad)


def test_shipped_configs_load():
    for path in sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.toml")):
        TrainConfig(**given(path, {}))


# Hardening, round two (issue 10): seeds, sizes, types and non-finite numbers are refused up front.

@pytest.mark.parametrize("seed", [-1, 2**63, 2**64 + 5, 1.5, True])
def test_bad_seeds_are_refused_up_front(seed):
    with pytest.raises(CharRNNError, match=r"seed must be a whole number from 0 to 2\*\*63 - 1"):
        TrainConfig(seed=seed)
    with pytest.raises(CharRNNError, match=r"--seed must be a whole number"):
        check_seed(seed, "--seed")


def test_the_extreme_good_seeds_are_accepted():
    assert TrainConfig(seed=0).seed == 0 and TrainConfig(seed=2**63 - 1).seed == 2**63 - 1
    check_seed(2**63 - 1, "--seed")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"hidden_size": 99999999999999999999}, "hidden_size must be at most 65,536"),
        ({"hidden_size": 10**18}, "hidden_size must be at most"),
        ({"embedding_size": 1 << 17}, "embedding_size must be at most"),
        ({"num_layers": 65}, "num_layers must be at most 64"),
        ({"batch_size": 2**40}, "batch_size must be at most"),
        ({"seq_len": 2**40}, "seq_len must be at most"),
        ({"steps": 2**64}, "steps must be at most"),
        ({"hidden_size": 1e18}, "hidden_size must be a whole number, not 1e"),
        ({"hidden_size": 64.0}, "hidden_size must be a whole number"),
        ({"cell": 3}, "cell must be a string"),
        ({"lr": "fast"}, "lr must be a number"),
    ],
)
def test_sizes_and_types_are_bounded(bad: dict, message: str):
    with pytest.raises(CharRNNError, match=message):
        TrainConfig(**bad)


@pytest.mark.parametrize("name", ["lr", "weight_decay", "dropout", "clip", "min_lr_ratio", "lr_drop",
                                  "val_fraction", "max_time"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_every_float_setting_must_be_finite(name: str, value: float):
    with pytest.raises(CharRNNError, match=f"{name} must be a finite number"):
        TrainConfig(**{name: value})


def test_inf_in_a_toml_file_names_the_setting(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text("weight_decay = inf\n")
    with pytest.raises(CharRNNError, match="weight_decay must be a finite number, not inf"):
        TrainConfig(**given(path, {}))
