"""model.config: one DecodeConfig per decode, validated, JSON round trip, stored in every trace; old traces load."""

import json

import pytest
import torch

from model.config import LABELS, METHODS, DecodeConfig, Sampler, method_spec
from model.decoding import DecodeTrace, collect, decode, run_decoder
from model.loading import tiny_model
from model.plans import make_plan


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(101, seed=0)


def infill_plan(order: str = "left_to_right"):
    ids = torch.arange(1, 13)
    given = torch.ones(12, dtype=torch.bool)
    given[4:9] = False
    return make_plan(ids, given=given, order=order)


def test_round_trips_through_json():
    config = DecodeConfig("A3 dynamic", strategy="entropy", k=3, sampler=Sampler(0.7, 5, 0.9), seed=11)
    assert config.method == "dynamic" and config.label == "A3 dynamic"  # labels are stored as ids
    assert DecodeConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize("change, message", [
    (dict(method="beam"), "Unknown method"),
    (dict(strategy="loudest"), "Unknown strategy"),
    (dict(order="sideways"), "Unknown order"),
    (dict(k=0), "k \\(tokens per step\\) must be a positive integer"),
    (dict(group_size=1.5), "group_size must be a positive integer"),
    (dict(seed="x"), "seed must be an integer"),
    (dict(sampler={"temperature": -1}), "temperature must be >= 0"),
])
def test_bad_fields_say_what_to_fix(change, message):
    with pytest.raises(ValueError, match=message):
        DecodeConfig(**change)


def test_unknown_fields_in_a_dict_are_refused():
    with pytest.raises(ValueError, match="unknown decode config fields"):
        DecodeConfig.from_dict({"method": "plan", "beam_width": 4})


def test_each_method_gets_only_the_arguments_its_decoder_takes():
    config = DecodeConfig(strategy="entropy", k=4, preview_open=False)
    for name, spec in METHODS.items():
        kwargs = config.replace(method=name).decoder_kwargs()
        assert ("strategy" in kwargs) == spec.strategy and ("k" in kwargs) == spec.k
        assert ("preview_open" in kwargs) == spec.preview
        assert {"sampler", "seed", "top_k_candidates"} <= set(kwargs)
    assert set(LABELS.values()) == set(METHODS) and method_spec("AR baseline").needs_base


@pytest.mark.parametrize("method", list(METHODS))
def test_every_trace_stores_its_config_and_exports_it(tiny, method):
    config = DecodeConfig(method, k=2, sampler=Sampler(1.0), seed=5, order="left_to_right")
    trace = collect(decode(tiny, infill_plan(), config))
    assert trace.config == config
    loaded = DecodeTrace.from_dict(json.loads(trace.to_json()))
    assert loaded.config == config and loaded.final_ids == trace.final_ids


def test_the_config_decides_the_decode(tiny):
    """The same config gives the same trace; another seed (sampling) gives another one."""
    config = DecodeConfig("dynamic", k=1, sampler=Sampler(1.0), seed=3)
    first, again = (collect(decode(tiny, infill_plan(), config)) for _ in range(2))
    assert first.final_ids == again.final_ids
    other = collect(decode(tiny, infill_plan(), config.replace(seed=4)))
    assert [s.tokens for s in other.steps] != [s.tokens for s in first.steps]


def test_run_decoder_is_decode_with_keywords(tiny):
    via_keywords = collect(run_decoder("plan", tiny, infill_plan(), seed=1, preview_open=False, cache=False))
    via_config = collect(decode(tiny, infill_plan(), DecodeConfig("plan", seed=1, preview_open=False), cache=False))
    assert via_keywords.final_ids == via_config.final_ids and via_keywords.config == via_config.config


def test_a_trace_exported_before_configs_still_loads(tiny):
    """Traces written before model.config kept the sampler and seed in `settings`: they load with that config."""
    trace = collect(decode(tiny, infill_plan(), DecodeConfig("dynamic", strategy="entropy", k=2, seed=9)))
    old = json.loads(trace.to_json())
    del old["config"]
    old["settings"] = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 9, "strategy": "entropy", "k": 2,
                       "cache": True, "top_k_candidates": 5}
    loaded = DecodeTrace.from_dict(old)
    assert loaded.config.method == "dynamic" and loaded.config.strategy == "entropy" and loaded.config.k == 2
    assert loaded.config.seed == 9 and loaded.config.sampler == Sampler()
