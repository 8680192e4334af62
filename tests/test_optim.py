"""The optimizer's parameter groups, the learning-rate schedule and optimizer state files."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mmplug import ConfigError
from mmplug.model.sections import TrainConfig
from mmplug.training.optim import (
    group_schedules,
    jsonable,
    load_optimizer,
    make_optimizer,
    param_groups,
    save_optimizer,
    warmup_cosine,
)


class Tiny(nn.Module):
    """Named like a MultimodalModel: ``encoders.*``, ``fusion.*``, ``head.*``."""

    def __init__(self) -> None:
        super().__init__()
        text, num = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4)), nn.Linear(3, 4)
        self.encoders = nn.ModuleDict({"text": text, "num": num})
        # typed handles, registered after the encoders so that parameters keep their
        # encoders.* names
        self.text, self.num = text, num
        self.fusion = nn.Linear(8, 5)
        self.head = nn.Linear(5, 2)
        self.scale = nn.Parameter(torch.ones(5))  # 1-D, outside the encoders


def ids(params: list[torch.Tensor]) -> set[int]:
    return {id(p) for p in params}


@pytest.fixture
def toy_settings() -> TrainConfig:
    return TrainConfig(lr=0.01, encoder_lr=0.001, weight_decay=0.05)


def test_groups_split_encoders_by_key_and_decay(toy_settings: TrainConfig) -> None:
    model = Tiny()
    groups = param_groups(model, toy_settings)
    by_name = {group["name"]: group for group in groups}
    assert [group["name"] for group in groups] == [
        "fusion+head (no decay)",
        "fusion+head",
        "encoders.num (no decay)",
        "encoders.num",
        "encoders.text (no decay)",
        "encoders.text",
    ]
    embed, norm = model.text
    assert ids(by_name["encoders.text"]["params"]) == ids([embed.weight])
    assert ids(by_name["encoders.num"]["params"]) == ids([model.num.weight])
    assert ids(by_name["encoders.text (no decay)"]["params"]) == ids([norm.weight, norm.bias])
    assert ids(by_name["encoders.num (no decay)"]["params"]) == ids([model.num.bias])
    assert ids(by_name["fusion+head"]["params"]) == ids([model.fusion.weight, model.head.weight])
    assert ids(by_name["fusion+head (no decay)"]["params"]) == ids(
        [model.fusion.bias, model.head.bias, model.scale]
    )
    lrs = {name: group["lr"] for name, group in by_name.items()}
    assert lrs == {name: 0.01 if name.startswith("fusion") else 0.001 for name in by_name}
    decay = {name: group["weight_decay"] for name, group in by_name.items()}
    assert decay == {name: 0.0 if "no decay" in name else 0.05 for name in by_name}


def test_each_encoder_can_have_its_own_learning_rate() -> None:
    settings = TrainConfig(lr=0.01, encoder_lr={"text": 0.002})
    lrs = {group["name"]: group["lr"] for group in param_groups(Tiny(), settings)}
    assert lrs["encoders.text"] == lrs["encoders.text (no decay)"] == 0.002
    assert lrs["encoders.num"] == lrs["fusion+head"] == 0.01  # not listed: lr


def test_each_encoder_can_warm_up_over_its_own_steps() -> None:
    settings = TrainConfig(lr=0.01, warmup=2, encoder_warmup={"text": 6})
    groups = param_groups(Tiny(), settings)
    schedules = group_schedules(groups, settings, 20)
    factors = {
        group["name"]: [f(step) for step in range(8)]
        for group, f in zip(groups, schedules, strict=True)
    }
    assert {group["name"]: group["key"] for group in groups}["encoders.text"] == "text"
    text, rest = warmup_cosine(20, 6, 0.0), warmup_cosine(20, 2, 0.0)
    assert (
        factors["encoders.text"]
        == factors["encoders.text (no decay)"]
        == [text(s) for s in range(8)]
    )
    assert factors["encoders.num"] == factors["fusion+head"] == [rest(s) for s in range(8)]
    assert factors["encoders.text"][:3] == pytest.approx([1 / 7, 2 / 7, 3 / 7])
    assert factors["fusion+head"][:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    # one value for every encoder; none: warmup
    every = TrainConfig(warmup=2, encoder_warmup=0.5)
    by_key = {
        g["key"]: f(3) for g, f in zip(groups, group_schedules(groups, every, 20), strict=True)
    }
    assert by_key["text"] == by_key["num"] == warmup_cosine(20, 0.5, 0.0)(3)
    assert by_key[None] == warmup_cosine(20, 2, 0.0)(3)


def test_encoders_follow_lr_when_encoder_lr_is_not_set() -> None:
    groups = param_groups(Tiny(), TrainConfig(lr=0.02))
    assert [group["lr"] for group in groups] == [0.02] * 6


def test_frozen_parameters_are_left_out(toy_settings: TrainConfig) -> None:
    model = Tiny()
    model.encoders.requires_grad_(False)
    model.head.bias.requires_grad_(False)
    groups = param_groups(model, toy_settings)
    assert [group["name"] for group in groups] == ["fusion+head (no decay)", "fusion+head"]
    grouped = ids([p for group in groups for p in group["params"]])
    assert grouped == ids([model.fusion.weight, model.fusion.bias, model.head.weight, model.scale])


def test_the_optimizer_takes_the_groups(toy_settings: TrainConfig) -> None:
    model = Tiny()
    optimizer = make_optimizer(model, toy_settings)
    assert isinstance(optimizer, torch.optim.AdamW)
    trainable = ids(list(model.parameters()))
    assert ids([p for g in optimizer.param_groups for p in g["params"]]) == trainable
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [
        ("fusion+head (no decay)", 0.01, 0.0),
        ("fusion+head", 0.01, 0.05),
        ("encoders.num (no decay)", 0.001, 0.0),
        ("encoders.num", 0.001, 0.05),
        ("encoders.text (no decay)", 0.001, 0.0),
        ("encoders.text", 0.001, 0.05),
    ]


def test_nothing_trainable_is_a_config_error(toy_settings: TrainConfig) -> None:
    model = Tiny().requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        make_optimizer(model, toy_settings)


# -- schedule -----------------------------------------------------------------------------


def test_warmup_as_a_fraction_rises_linearly_to_one() -> None:
    factor = warmup_cosine(10, 0.2, 0.1)  # 2 warmup steps
    assert factor(0) == pytest.approx(1 / 3)
    assert factor(1) == pytest.approx(2 / 3)
    assert factor(2) == pytest.approx(1.0)
    assert factor(6) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway down the cosine
    assert factor(4) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert factor(10) == pytest.approx(0.1)
    assert factor(25) == pytest.approx(0.1)  # stays at the floor past the end


def test_warmup_as_a_step_count() -> None:
    factor = warmup_cosine(20, 4, 0.0)
    assert [factor(step) for step in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert factor(12) == pytest.approx(0.5)
    assert factor(20) == pytest.approx(0.0)


def test_no_warmup_starts_at_the_peak_and_decays_monotonically() -> None:
    factor = warmup_cosine(8, 0.0, 0.25)
    values = [factor(step) for step in range(9)]
    assert values[0] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.25)
    assert all(a > b for a, b in itertools.pairwise(values))


def test_warmup_longer_than_the_run_still_reaches_the_peak() -> None:
    factor = warmup_cosine(5, 100, 0.0)  # clamped to 4 warmup steps
    assert [factor(step) for step in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


# -- optimizer state ----------------------------------------------------------------------


def trained(seed: int) -> tuple[Tiny, torch.optim.AdamW]:
    torch.manual_seed(seed)
    model = Tiny()
    optimizer = make_optimizer(model, TrainConfig(lr=0.01, encoder_lr=0.002))
    for _ in range(3):
        ids_ = torch.randint(0, 10, (6,))
        text = model.text(ids_)
        num = model.num(torch.randn(6, 3))
        out = model.head(model.fusion(torch.cat([text, num], dim=1)) * model.scale)
        loss = out.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, optimizer


def test_optimizer_state_round_trips_exactly(tmp_path: Path) -> None:
    model, optimizer = trained(0)
    meta = save_optimizer(optimizer, tmp_path, "optimizer.safetensors")
    meta = json.loads(json.dumps(meta))  # what the trainer writes to trainer.json

    fresh_model = Tiny()
    fresh_model.load_state_dict(model.state_dict())
    fresh = make_optimizer(fresh_model, TrainConfig(lr=0.5))
    load_optimizer(fresh, tmp_path, "optimizer.safetensors", meta)

    saved, restored = optimizer.state_dict(), fresh.state_dict()
    # lr 0.01 / 0.002 as saved, not the fresh optimizer's 0.5 (betas come back as a list)
    assert restored["param_groups"] == json.loads(json.dumps(saved["param_groups"]))
    assert [g["lr"] for g in fresh.param_groups] == [0.01, 0.01] + [0.002] * 4
    assert set(restored["state"]) == set(saved["state"]) == set(range(10))
    for index, values in saved["state"].items():
        assert set(restored["state"][index]) == {"step", "exp_avg", "exp_avg_sq"}
        for key, value in values.items():
            got = torch.as_tensor(restored["state"][index][key])
            assert torch.equal(got, torch.as_tensor(value)), (index, key)
        assert float(restored["state"][index]["step"]) == 3.0

    # one more step from either gives the same weights
    for m, opt in ((model, optimizer), (fresh_model, fresh)):
        opt.zero_grad()
        m.head.weight.sum().backward()
        opt.step()
    assert torch.equal(model.head.weight, fresh_model.head.weight)
    assert torch.equal(model.num.weight, fresh_model.num.weight)


def test_optimizer_state_is_a_safetensors_file_not_a_pickle(tmp_path: Path) -> None:
    _, optimizer = trained(1)
    save_optimizer(optimizer, tmp_path, "opt.safetensors")
    raw = (tmp_path / "opt.safetensors").read_bytes()
    header = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + header])  # safetensors: length, JSON header, tensors
    assert raw[:2] != b"PK" and raw[:1] != b"\x80"  # neither torch's zip nor a pickle
    tensors = load_file(str(tmp_path / "opt.safetensors"))
    expected = {f"{i}.{k}" for i in range(10) for k in ("step", "exp_avg", "exp_avg_sq")}
    assert set(tensors) == expected
    state = optimizer.state_dict()["state"]
    assert torch.equal(tensors["3.exp_avg"], state[3]["exp_avg"])


def test_scalar_state_goes_to_json(tmp_path: Path) -> None:
    """Optimizers that keep plain numbers in their state (not tensors) round-trip too."""
    param = nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    param.sum().backward()
    optimizer.step()
    optimizer.state[param]["count"] = 7
    meta = json.loads(json.dumps(save_optimizer(optimizer, tmp_path, "o.safetensors")))
    assert meta["scalars"] == {"0.count": 7}

    other = nn.Parameter(torch.ones(2))
    fresh = torch.optim.SGD([other], lr=0.3, momentum=0.9)
    load_optimizer(fresh, tmp_path, "o.safetensors", meta)
    assert fresh.state[other]["count"] == 7
    assert torch.equal(fresh.state[other]["momentum_buffer"], torch.ones(2))
    assert fresh.param_groups[0]["lr"] == 0.1


# -- jsonable -----------------------------------------------------------------------------


def test_jsonable_drops_functions_and_keeps_the_rest() -> None:
    state: dict[str, Any] = {
        "last_epoch": 4,
        "base_lrs": [0.01, 0.002],
        "lr_lambdas": [lambda step: 1.0, print],
        "nested": {"fn": len, "ratio": 0.5, "name": "cos", "none": None},
        "pair": (1, 2),
    }
    assert jsonable(state) == {
        "last_epoch": 4,
        "base_lrs": [0.01, 0.002],
        "lr_lambdas": [None, None],
        "nested": {"fn": None, "ratio": 0.5, "name": "cos", "none": None},
        "pair": [1, 2],
    }
    assert callable(state["lr_lambdas"][0])  # the input is left as it was


def test_a_scheduler_state_survives_json() -> None:
    optimizer = torch.optim.AdamW([nn.Parameter(torch.ones(1))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(10, 2, 0.0))
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    state = jsonable(scheduler.state_dict())
    assert json.loads(json.dumps(state)) == state
    assert state["last_epoch"] == 3 and state["base_lrs"] == [0.1]

    again = torch.optim.lr_scheduler.LambdaLR(
        torch.optim.AdamW([nn.Parameter(torch.ones(1))], lr=0.1), warmup_cosine(10, 2, 0.0)
    )
    again.load_state_dict(state)
    assert again.last_epoch == 3
    assert again.get_last_lr() == pytest.approx(scheduler.get_last_lr())
