"""Every configs/dataset/*.yaml validates, every key is commented, and bad keys are one-line errors."""
from __future__ import annotations

import re
from typing import Any

import pytest

from training.data import load_clips, parse_config
from defense.config import CONFIG_ROOT, compose, options
from victims.registry import ConfigError

DATASET_OPTIONS = options("dataset")


def test_expected_options_exist() -> None:
    assert {"gm_instruments", "fsdd", "esc50", "urbansound8k", "gtzan", "fsdkaggle2019", "folder"} <= set(DATASET_OPTIONS)


@pytest.mark.parametrize("option", DATASET_OPTIONS)
def test_config_validates(option: str) -> None:
    parsed = parse_config(compose({"dataset": option})["dataset"])
    assert parsed.name == option and parsed.clip.num_samples > 0


@pytest.mark.parametrize("option", DATASET_OPTIONS)
def test_every_key_has_a_comment(option: str) -> None:
    for line in (CONFIG_ROOT / "dataset" / f"{option}.yaml").read_text().splitlines():
        if re.match(r"^\s*[A-Za-z_]+:", line):
            assert " # " in line, f"{option}.yaml: no comment on '{line.strip()}'"


def test_overrides_reach_the_options() -> None:
    cfg = compose({"dataset": "esc50"}, {"dataset.split.test_fold": 2, "dataset.sample_rate": 22050})["dataset"]
    parsed = parse_config(cfg)
    assert parsed.split.test_fold == 2 and parsed.clip.sample_rate == 22050 and parsed.kwargs["esc10"] is False


def one_line_error(cfg: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(cfg)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_unknown_key_names_it_with_a_suggestion() -> None:
    message = one_line_error({"name": "fsdd", "root": "x", "sample_rte": 8000})
    assert "unknown key 'dataset.sample_rte'" in message and "did you mean 'sample_rate'" in message


@pytest.mark.parametrize("cfg, fragment", [
    ({"name": "fsd"}, "unknown dataset 'fsd'"),
    ({"root": "x"}, "no 'name'"),
    ({"name": "gm_instruments", "sample_rate": "fast"}, "dataset.sample_rate"),
    ({"name": "gm_instruments", "align": "middle"}, "dataset.align"),
    ({"name": "gm_instruments", "silent": "ignore"}, "dataset.silent"),
    ({"name": "gm_instruments", "overlap": 1.0}, "dataset.overlap"),
    ({"name": "gm_instruments", "clip_seconds": 0}, "dataset.clip_seconds must be > 0, got 0"),
    ({"name": "gm_instruments", "split": {"method": "random"}}, "dataset.split.method"),
    ({"name": "gm_instruments", "split": {"fold": 2}}, "unknown key 'dataset.split.fold'"),
    ({"name": "gm_instruments", "augment": {"pitch": [1.5]}}, "unknown key 'dataset.augment.pitch'"),
])
def test_bad_values_are_one_line_errors(cfg: dict[str, Any], fragment: str) -> None:
    assert fragment in one_line_error(cfg)


def test_loader_keys_of_another_data_set_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown key 'dataset.esc10' for data set 'fsdd'"):
        load_clips({"name": "fsdd", "root": "x", "esc10": True})
