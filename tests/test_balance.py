"""Balanced multimodal training: unimodal heads, the late fusion, unimodal losses, gradient
modulation (``mmplug.training.balance``), and the warnings that show reliance
(``mmplug.training.diagnostics``)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from mmplug import ConfigError, EncoderOutput, Pipeline
from mmplug.model.build import build_model
from mmplug.model.checkpoint import load_model, save_model
from mmplug.model.late import LateFusion
from mmplug.model.multimodal import ModelOutput, MultimodalModel
from mmplug.model.tasks import ClassificationTask
from mmplug.plugins.host import PluginHost
from mmplug.training.balance import (
    FUSED,
    blend_weights,
    loss_weights,
    modulation,
    scale_gradients,
)
from mmplug.training.diagnostics import Watch
from mmplug.training.optim import warmup_cosine
from mmplug.training.progress import Reporter, history_figure
from mmplug.training.train import train

from .training_helpers import metric_lines, toy_config, toy_data

MODEL = {
    "encoders": {
        "stats": {"name": "mlp", "input_size": 3, "dim": 6},
        "word": {"name": "char-bag", "dim": 8},
    },
    "fusion": {"name": "mean", "dim": 5},
    "head": {"name": "classification", "num_classes": 4},
}
ROWS = [
    {"stats": torch.tensor([1.0, 2.0, 3.0]), "word": "red"},
    {"stats": torch.tensor([0.5, -1.0, 2.0]), "word": None},
    {"stats": None, "word": "blue"},
]


def built(toy_host: PluginHost, **model: Any) -> MultimodalModel:
    torch.manual_seed(0)
    return build_model({**copy.deepcopy(MODEL), **model}, registry=toy_host.registry).eval()


def forward(model: MultimodalModel) -> ModelOutput:
    output: ModelOutput = model(Pipeline.from_model(model).collate(ROWS))
    return output


# -- the model ------------------------------------------------------------------------------


def test_unimodal_heads_sit_on_each_encoder_alone(toy_host: PluginHost) -> None:
    model = built(toy_host, unimodal_heads=True)
    assert model.unimodal_heads is not None
    assert {key: head.input_dim for key, head in model.unimodal_heads.items()} == {
        "stats": 6,
        "word": 8,
    }
    output = forward(model)
    assert {key: tuple(out.shape) for key, out in output.unimodal.items()} == {
        "stats": (3, 4),
        "word": (3, 4),
    }
    # a unimodal head's output for a row depends on that key's encoder alone
    assert torch.allclose(
        output.unimodal["word"], model.unimodal_heads["word"](output.features["word"].pooled)
    )
    assert "head     word" in model.describe() and "head     fused" in model.describe()


def test_a_model_without_unimodal_heads_returns_none(toy_host: PluginHost) -> None:
    model = built(toy_host, unimodal_heads=False)
    assert model.unimodal_heads is None and forward(model).unimodal == {}


def test_unimodal_heads_are_on_by_default_with_two_keys_or_more(toy_host: PluginHost) -> None:
    model = built(toy_host)
    assert model.unimodal_heads is not None and sorted(model.unimodal_heads) == ["stats", "word"]
    assert model.resolved is not None and model.resolved.to_config()["unimodal_heads"] is True
    alone = built(toy_host, encoders={"word": MODEL["encoders"]["word"]})
    assert alone.unimodal_heads is None  # one key: nothing to balance
    assert alone.resolved is not None and alone.resolved.to_config()["unimodal_heads"] is False


def test_a_model_saved_before_unimodal_heads_existed_loads_without_them(
    toy_host: PluginHost, tmp_path: Path
) -> None:
    import yaml

    model = built(toy_host, unimodal_heads=False)
    save_model(model, tmp_path / "saved")
    config = tmp_path / "saved" / "config.yaml"
    data = yaml.safe_load(config.read_text())
    del data["model"]["unimodal_heads"]  # as an earlier mmplug wrote it
    config.write_text(yaml.safe_dump(data))
    (tmp_path / "saved" / "checksums.json").unlink()  # nor did it record checksums
    again = load_model(tmp_path / "saved", toy_host.registry).eval()
    assert again.unimodal_heads is None
    assert torch.equal(forward(again).logits, forward(model).logits)


def test_late_fusion_averages_the_heads_of_the_keys_a_row_has(toy_host: PluginHost) -> None:
    model = built(toy_host, fusion={"name": "late"})
    assert isinstance(model.fusion, LateFusion) and model.late
    assert model.head is model.unimodal_heads["stats"]  # type: ignore[index]
    with torch.no_grad():
        model.fusion.logit_weights.copy_(torch.tensor([math.log(3.0), 0.0]))  # 3:1
    output = forward(model)
    stats, word = output.unimodal["stats"], output.unimodal["word"]
    assert torch.allclose(output.logits[0], 0.75 * stats[0] + 0.25 * word[0], atol=1e-6)
    assert torch.allclose(output.logits[1], stats[1], atol=1e-6)  # no word
    assert torch.allclose(output.logits[2], word[2], atol=1e-6)  # no stats
    assert model.fusion.weights() == {"stats": 0.75, "word": 0.25}


def test_late_fusion_gives_rows_with_nothing_a_learned_output() -> None:
    fusion = LateFusion({"a": 2, "b": 2})
    with torch.no_grad():
        fusion.nothing.copy_(torch.tensor([0.3, -0.3]))
    features = {
        "a": EncoderOutput(torch.full((1, 2), float("nan"))),
        "b": EncoderOutput(torch.ones(1, 2)),
    }
    absent = {"a": torch.tensor([False]), "b": torch.tensor([False])}
    assert torch.equal(fusion(features, absent), torch.tensor([[0.3, -0.3]]))


def test_late_fusion_saves_each_head_once_and_round_trips(
    toy_host: PluginHost, tmp_path: Path
) -> None:
    model = built(toy_host, fusion={"name": "late", "weights": "equal"})
    assert not model.fusion.logit_weights.requires_grad
    save_model(model, tmp_path / "saved")
    names = set(load_file(str(tmp_path / "saved" / "model.safetensors")))
    assert not any(name.startswith("head.") for name in names)
    assert any(name.startswith("unimodal_heads.word.") for name in names)
    again = load_model(tmp_path / "saved", toy_host.registry).eval()
    assert torch.equal(forward(again).logits, forward(model).logits)


def test_batch_without_a_key_makes_it_absent_everywhere(toy_host: PluginHost) -> None:
    model = built(toy_host)
    batch = Pipeline.from_model(model).collate(ROWS).without("word")
    assert not batch.present["word"].any() and batch.inputs["word"] == {}
    assert batch.present["stats"].tolist() == [True, True, False]


# -- losses and modulation ------------------------------------------------------------------


def test_unimodal_losses_leave_out_the_rows_without_the_key(toy_host: PluginHost) -> None:
    model = built(toy_host, unimodal_heads=True)
    output = forward(model)
    targets = torch.tensor([0, 1, 2])
    losses = model.unimodal_losses(output, targets)
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(losses["stats"], ce(output.unimodal["stats"][:2], targets[:2]))
    assert torch.allclose(losses["word"], ce(output.unimodal["word"][[0, 2]], targets[[0, 2]]))
    output.present["word"] = torch.zeros(3, dtype=torch.bool)  # e.g. dropped in this batch
    assert set(model.unimodal_losses(output, targets)) == {"stats"}


def test_fixed_loss_weights_one_for_all_keys_or_one_per_key() -> None:
    keys = ["audio", "image"]
    assert loss_weights(0.5, keys, []) == {FUSED: 1.0, "audio": 0.5, "image": 0.5}
    assert loss_weights({"audio": 2.0}, keys, []) == {FUSED: 1.0, "audio": 2.0, "image": 1.0}


def line(train: float, val: float, **keys: tuple[float, float]) -> dict[str, float]:
    """A metrics line: the fused head's (train, val) loss and each key's."""
    found = {"train_loss": train, "val_loss": val}
    for key, (train_k, val_k) in keys.items():
        found |= {f"train_loss_{key}": train_k, f"val_loss_{key}": val_k}
    return found


def test_gradient_blending_weighs_heads_by_generalization_over_overfitting_squared() -> None:
    before = line(2.0, 2.0, audio=(2.0, 2.0), image=(2.0, 2.0))
    # fused: val falls 0.5 (dG), gap grows 0.5 -> 0.5/0.25 = 2
    # audio: val falls 0.2, gap grows 0.1 -> 0.2/0.01 = 20
    # image: val falls 1.0, gap grows 1.0 -> 1.0/1.0 = 1
    after = line(1.0, 1.5, audio=(1.7, 1.8), image=(0.0, 1.0))
    weights = blend_weights([before, after], ["audio", "image"])
    assert weights == pytest.approx({FUSED: 3 * 2 / 23, "audio": 3 * 20 / 23, "image": 3 / 23})
    assert sum(weights.values()) == pytest.approx(3)
    # over the whole run so far: from the first epoch to the last
    middle = line(0.5, 3.0, audio=(0.5, 3.0), image=(0.5, 3.0))
    assert loss_weights("auto", ["audio", "image"], [before, middle, after]) == weights


def test_gradient_blending_falls_back_to_equal_weights() -> None:
    keys = ["audio", "image"]
    equal = {FUSED: 1.0, "audio": 1.0, "image": 1.0}
    first = line(2.0, 2.0, audio=(2.0, 2.0), image=(2.0, 2.0))
    assert blend_weights([], keys) == equal and blend_weights([first], keys) == equal
    worse = line(1.0, 2.5, audio=(1.0, 2.5), image=(1.0, 2.5))  # no head generalized
    assert blend_weights([first, worse], keys) == equal
    missing = {k: v for k, v in worse.items() if k != "val_loss_audio"}  # e.g. no val rows
    assert blend_weights([first, missing], keys) == equal
    broken = {**worse, "val_loss": math.nan}
    assert blend_weights([first, broken], keys) == equal
    # a head whose validation loss rose gets nothing; one that did not overfit is bounded
    mixed = line(1.9, 1.9, audio=(1.0, 2.5), image=(1.9, 1.9))
    weights = blend_weights([first, mixed], keys)
    assert weights["audio"] == 0.0 and weights[FUSED] == weights["image"] == 1.5


def test_modulation_slows_only_the_leading_key() -> None:
    coefficients = modulation({"audio": 0.1, "image": 1.0}, alpha=0.5)
    ratio = math.exp(-0.1) / math.exp(-1.0)
    assert coefficients["audio"] == pytest.approx(1 - math.tanh(0.5 * (ratio - 1)))
    assert 0 < coefficients["audio"] < 1 and coefficients["image"] == 1.0
    assert modulation({"audio": 0.1, "image": 1.0}, alpha=0.0) == {"audio": 1.0, "image": 1.0}
    assert modulation({"audio": 0.1}, alpha=0.5) == {"audio": 1.0}
    stronger = modulation({"audio": 0.1, "image": 1.0}, alpha=2.0)
    assert stronger["audio"] < coefficients["audio"]


def test_scaling_gradients_scales_exactly_the_modulated_encoder(toy_host: PluginHost) -> None:
    model = built(toy_host, unimodal_heads=True)
    targets = torch.tensor([0, 1, 2])

    def gradients(coefficients: dict[str, float]) -> dict[str, torch.Tensor]:
        model.zero_grad()
        output = forward(model)
        scale_gradients(output.features, coefficients)
        loss = model.head.loss(output.logits, targets)
        (loss + sum(model.unimodal_losses(output, targets).values())).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain = gradients({"stats": 1.0, "word": 1.0})
    scaled = gradients({"stats": 0.25, "word": 1.0})
    for name, grad in plain.items():
        factor = 0.25 if name.startswith("encoders.stats.") else 1.0
        assert torch.allclose(scaled[name], grad * factor, atol=1e-7), name
    assert any(name.startswith("encoders.stats.") for name in plain)


# -- training ----------------------------------------------------------------------------------


def test_training_with_unimodal_heads_and_modulation_logs_both(
    toy_host: PluginHost, tmp_path: Path
) -> None:
    config = toy_config(toy_data(tmp_path), modulation=0.5)
    config["model"]["unimodal_heads"] = True
    run = train(
        config, registry=toy_host.registry, out=tmp_path / "run", reporter=Reporter(quiet=True)
    )
    line = metric_lines(run)[-1]
    for key in ("stats", "word"):
        assert math.isfinite(line[f"train_loss_{key}"])
        assert 0 < line[f"modulation_{key}"] <= 1
        assert math.isfinite(line[f"val_without_{key}_loss"])
        assert 0 <= line[f"val_without_{key}_accuracy"] <= 1
    assert "unimodal_heads: true" in (run / "config.yaml").read_text()


def test_gradient_blending_training_logs_each_heads_weight_and_val_loss(
    toy_host: PluginHost, tmp_path: Path
) -> None:
    config = toy_config(toy_data(tmp_path), epochs=3, unimodal_loss="auto")
    run = train(
        config, registry=toy_host.registry, out=tmp_path / "run", reporter=Reporter(quiet=True)
    )
    lines = metric_lines(run)
    names = ("loss_weight", "loss_weight_stats", "loss_weight_word")
    # nothing to estimate from before the first epoch; then each epoch's from the ones before
    assert [lines[0][name] for name in names] == [1.0, 1.0, 1.0]
    for epoch in (1, 2):
        weights = loss_weights("auto", ["stats", "word"], lines[:epoch])
        logged = [lines[epoch][name] for name in names]
        assert logged == pytest.approx([weights[FUSED], weights["stats"], weights["word"]])
        assert sum(logged) == pytest.approx(3)
    for key in ("stats", "word"):
        assert all(math.isfinite(x[f"val_loss_{key}"]) for x in lines)


def test_a_key_weighted_zero_leaves_its_unimodal_head_untrained(
    toy_host: PluginHost, tmp_path: Path
) -> None:
    config = toy_config(toy_data(tmp_path), unimodal_loss={"word": 0.0})
    run = train(
        config, registry=toy_host.registry, out=tmp_path / "run", reporter=Reporter(quiet=True)
    )
    torch.manual_seed(0)  # training builds the model right after seeding with train.seed
    fresh = build_model(run / "config.yaml", registry=toy_host.registry)
    trained = load_file(str(run / "last" / "model.safetensors"))
    for name, value in fresh.state_dict().items():
        if name.startswith("unimodal_heads."):
            moved = not torch.equal(trained[name], value)
            assert moved == name.startswith("unimodal_heads.stats."), name


def test_an_encoder_with_its_own_warmup_follows_its_own_schedule(
    toy_host: PluginHost, tmp_path: Path
) -> None:
    config = toy_config(toy_data(tmp_path), epochs=2, warmup=0, encoder_warmup={"word": 1000})
    run = train(
        config, registry=toy_host.registry, out=tmp_path / "run", reporter=Reporter(quiet=True)
    )
    first, last = metric_lines(run)
    step, total = first["step"], last["step"]
    # no warmup: the cosine from the peak; word's 1000 steps, clamped to the run's steps - 1
    assert first["lr"] == pytest.approx(0.01 * warmup_cosine(total, 0, 0.0)(step))
    assert first["lr_stats"] == pytest.approx(first["lr"])
    assert first["lr_word"] == pytest.approx(0.01 * warmup_cosine(total, 1000, 0.0)(step))
    assert first["lr_word"] != pytest.approx(first["lr_stats"])
    assert "lr_word" not in metric_lines(train_plain(toy_host, tmp_path))[0]


def train_plain(toy_host: PluginHost, tmp_path: Path) -> Path:
    """A run with no per-encoder settings."""
    config = toy_config(toy_data(tmp_path / "plain"), epochs=1)
    return train(
        config,
        registry=toy_host.registry,
        out=tmp_path / "plain-run",
        reporter=Reporter(quiet=True),
    )


def test_gradient_blending_needs_a_val_split(toy_host: PluginHost, tmp_path: Path) -> None:
    data = toy_data(tmp_path)
    del data["val"]
    config = toy_config(data, unimodal_loss="auto")
    with pytest.raises(ConfigError, match=r"train.unimodal_loss.*data.val"):
        train(
            config, registry=toy_host.registry, out=tmp_path / "run", reporter=Reporter(quiet=True)
        )


def test_the_late_fusion_trains_and_evaluates(toy_host: PluginHost, tmp_path: Path) -> None:
    config = toy_config(toy_data(tmp_path), epochs=3)
    config["model"]["fusion"] = {"name": "late"}
    run = train(
        config, registry=toy_host.registry, out=tmp_path / "run", reporter=Reporter(quiet=True)
    )
    results = json.loads((run / "results.json").read_text())
    assert 0 <= results["test"]["accuracy"] <= 1
    assert "train_loss_stats" in metric_lines(run)[-1]


def test_reliance_can_be_turned_off(toy_host: PluginHost, tmp_path: Path) -> None:
    config = toy_config(toy_data(tmp_path), reliance=False)
    run = train(
        config, registry=toy_host.registry, out=tmp_path / "run", reporter=Reporter(quiet=True)
    )
    assert not any(k.startswith("val_without_") for k in metric_lines(run)[-1])


def test_modulation_without_unimodal_heads_is_a_config_error(
    toy_host: PluginHost, tmp_path: Path
) -> None:
    config = toy_config(
        toy_data(tmp_path),
        modulation=0.5,
        encoder_lr={"sound": 0.1},
        encoder_warmup={"snd": 3},
        unimodal_loss={"wrd": 2},
    )
    config["model"]["unimodal_heads"] = False
    with pytest.raises(ConfigError) as caught:
        train(
            config, registry=toy_host.registry, out=tmp_path / "run", reporter=Reporter(quiet=True)
        )
    message = str(caught.value)
    assert "train.modulation" in message and "model.unimodal_heads" in message
    assert "train.encoder_lr.sound" in message and "train.unimodal_loss.wrd" in message
    assert "train.encoder_warmup.snd" in message
    assert not (tmp_path / "run").exists()


# -- warnings and the plot ---------------------------------------------------------------------


def watch_for(toy_host: PluginHost, tmp_path: Path, **model: Any) -> Watch:
    from mmplug.data.manifest import read_labelled_manifest
    from mmplug.data.pipeline import ManifestDataset
    from mmplug.model.sections import DataConfig

    built_model = built(toy_host, **model)
    data = DataConfig.model_validate(toy_data(tmp_path))
    task = ClassificationTask(("ant", "bee", "cat"))
    manifest = read_labelled_manifest(data.train, "label")
    dataset = ManifestDataset.from_config(
        manifest, Pipeline.from_model(built_model), data, task=task, missing="absent"
    )
    return Watch(built_model, task, dataset, "val_loss")


def test_a_model_that_ignores_a_key_is_named_once(toy_host: PluginHost, tmp_path: Path) -> None:
    watch = watch_for(toy_host, tmp_path)
    line = {
        "train_loss": 0.5,
        "val_loss": 0.6,
        "val_accuracy": 0.8,
        "val_without_word_loss": 0.61,
        "val_without_word_accuracy": 0.8,
        "val_without_stats_loss": 1.1,
        "val_without_stats_accuracy": 0.3,
    }
    (warning,) = watch.check(line)
    assert "blanking 'word'" in warning and "does not use 'word'" in warning
    assert watch.check(line) == []  # said once
    assert watch_for(toy_host, tmp_path).check({**line, "val_without_word_accuracy": 0.7}) == []


def test_a_key_the_finished_model_barely_uses_is_named(
    toy_host: PluginHost, tmp_path: Path
) -> None:
    watch = watch_for(toy_host, tmp_path)
    best = {
        "epoch": 7,
        "val_loss": 0.600,
        "val_without_word_loss": 0.609,  # 1.5%: barely used
        "val_without_stats_loss": 0.9,
    }
    (warning,) = watch.conclude(best)
    assert "barely uses 'word'" in warning and "best epoch (7)" in warning
    assert "1.5% (0.6000 with it, 0.6090 without)" in warning
    assert watch.conclude({**best, "val_without_word_loss": 0.62}) == []  # 3.3%: used
    assert watch.conclude({"epoch": 1, "val_loss": 0.6}) == []  # reliance not measured
    # the monitored metric is the one judged, and what check() said is not said again
    by_accuracy = watch_for(toy_host, tmp_path)
    by_accuracy.monitor = "val_accuracy"
    line = {**best, "val_accuracy": 0.80, "val_without_word_accuracy": 0.70}
    line |= {"val_without_stats_accuracy": 0.795}
    (warning,) = by_accuracy.conclude(line)
    assert "barely uses 'stats'" in warning and "val_accuracy" in warning
    by_accuracy.said.add("ignores stats")
    assert by_accuracy.conclude(line) == []


def test_a_loss_at_chance_for_three_epochs_is_named(toy_host: PluginHost, tmp_path: Path) -> None:
    watch = watch_for(toy_host, tmp_path, unimodal_heads=True)
    assert watch.chance is not None
    # the training labels' entropy: three classes, about equally frequent
    assert math.log(3) * 0.95 < watch.chance <= math.log(3) + 1e-6
    stuck = {"train_loss": 0.4, "train_loss_word": watch.chance, "train_loss_stats": 0.3}
    assert watch.check(stuck) == [] and watch.check(stuck) == []
    (warning,) = watch.check(stuck)
    assert "train_loss_word has stayed at chance level" in warning and "'word' head" in warning
    learning = watch_for(toy_host, tmp_path, unimodal_heads=True)
    for value in (watch.chance, watch.chance, 0.5):
        assert learning.check({"train_loss": value}) == []


def test_the_plot_shows_reliance_when_measured() -> None:
    lines = [
        {
            "epoch": epoch,
            "train_loss": 1.0 / epoch,
            "val_loss": 1.1 / epoch,
            "val_accuracy": 0.5 + epoch / 10,
            "val_without_audio_loss": 1.2,
            "val_without_audio_accuracy": 0.4,
            "val_without_image_loss": 1.3,
            "val_without_image_accuracy": 0.5,
        }
        for epoch in (1, 2, 3)
    ]
    figure = history_figure(lines, "val_accuracy")
    _, metrics, reliance = figure.axes
    assert [line.get_label() for line in reliance.get_lines()] == [
        "val_accuracy (monitored)",
        "val_without_audio_accuracy",
        "val_without_image_accuracy",
    ]
    assert "val_without_audio_accuracy" not in [line.get_label() for line in metrics.get_lines()]
    assert (
        len(
            history_figure(
                [{k: v for k, v in lines[0].items() if "without" not in k}], "val_loss"
            ).axes
        )
        == 2
    )
