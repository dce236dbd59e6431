"""Protocol variants (``kd~noaug``, ``hard~lr=0.005``): their values, their own ids and hashes, one-line errors."""

from __future__ import annotations

import pytest

from ddbench.config import ConfigError
from ddbench.pipeline import protocol_key
from ddbench.protocol import load_protocol, protocol_path, split_variant, variant_name, variant_overrides


def test_split_variant_leaves_paths_alone() -> None:
    assert split_variant("kd~noaug") == ("kd", "noaug")
    assert split_variant("hard~lr=0.005,epochs=3") == ("hard", "lr=0.005,epochs=3")
    assert split_variant("kd") == ("kd", "")
    assert split_variant("~/protocols/mine.toml") == ("~/protocols/mine.toml", "")  # a home path, not a variant
    assert split_variant("/tmp/a~b/mine.toml") == ("/tmp/a~b/mine.toml", "")
    assert split_variant("/tmp/mine.toml~noaug") == ("/tmp/mine.toml", "noaug")


def test_noaug_and_field_variants_change_exactly_their_fields() -> None:
    base, noaug = load_protocol("kd", profile="cpu"), load_protocol("kd~noaug", profile="cpu")
    assert (noaug.aug, noaug.mix) == ((), "none") and noaug.name == "kd~noaug"
    same = {f: getattr(base, f) for f in ("epochs", "lr", "label_mode", "loss", "temperature", "optimizer")}
    assert same == {f: getattr(noaug, f) for f in same}
    assert noaug.hash != base.hash and protocol_key(noaug.name, noaug.profile) == "kd~noaug@cpu"
    lr = load_protocol("hard~lr=0.005,epochs=3", profile="cpu")
    assert (lr.lr, lr.epochs, lr.aug) == (0.005, 3, load_protocol("hard", profile="cpu").aug)
    assert protocol_path("kd~noaug") == protocol_path("kd")
    assert variant_name("hard", {"lr": 0.005}) == "hard~lr=0.005" and variant_name("hard", {}) == "hard"
    assert load_protocol(variant_name("hard", {"epochs": 7}), profile="cpu").epochs == 7


def test_bad_variants_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown protocol variant 'nope'"):
        variant_overrides("nope")
    with pytest.raises(ConfigError, match="'version' is not a Protocol field one can set"):
        variant_overrides("version=2")
    with pytest.raises(ConfigError):
        load_protocol("hard~epochs=many")
