"""evaluate_loader: loss, metrics and confusion matrix over labelled batches."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
import torchmetrics.functional as tmf
from torch.nn import functional as F

import mmplug
from mmplug import DataError, Pipeline
from mmplug.data.pipeline import LoadedBatch, Skipped
from mmplug.model.multimodal import MultimodalModel
from mmplug.model.tasks import ClassificationTask
from mmplug.plugins.host import PluginHost
from mmplug.runs.evaluation import Evaluation, evaluate_loader

CPU = torch.device("cpu")
TASK = ClassificationTask(("ant", "bee", "cat"))
CONFIG = {
    "model": {
        "encoders": {
            "stats": {"name": "mlp", "input_size": 4, "dim": 16},
            "word": {"name": "char-bag", "dim": 8},
        },
        "fusion": {"name": "mean", "dim": 16},
        "head": {"name": "classification", "num_classes": 3},
    }
}

# (stats, true class); with the weights set below the predicted class is the argmax of the
# first three numbers, so that the rows give this confusion matrix (rows: true class):
#   true ant: predicted ant 1, bee 1        true bee: bee 1, cat 2        true cat: cat 1
ROWS: list[tuple[list[float], int]] = [
    ([2.0, 0.5, 0.1, 1.0], 0),  # predicted ant
    ([0.3, 1.5, 0.2, 1.0], 0),  # predicted bee
    ([0.1, 2.5, 0.4, 1.0], 1),  # predicted bee
    ([0.6, 0.2, 1.2, 1.0], 1),  # predicted cat
    ([0.0, 0.9, 3.0, 1.0], 1),  # predicted cat
    ([0.4, 0.3, 0.8, 1.0], 2),  # predicted cat
]
CONFUSION = [[1, 1, 0], [0, 1, 2], [0, 0, 1]]


@pytest.fixture
def model(toy_host: PluginHost) -> MultimodalModel:
    """The toy model with weights that make its logits GELU(stats[:3]) (word absent)."""
    model = mmplug.build_model(CONFIG, registry=toy_host.registry)
    mlp = model.encoders["stats"].net  # type: ignore[index]
    with torch.no_grad():
        for linear in (mlp[0], mlp[2], model.fusion.project["stats"], model.head.net[1]):
            linear.weight.zero_()
            linear.bias.zero_()
            size = min(linear.weight.shape)
            linear.weight[:size, :size] = torch.eye(size)
    return model.eval()


def loaded(
    model: MultimodalModel,
    rows: Sequence[tuple[list[float], int]],
    start: int = 0,
    skipped: list[Skipped] | None = None,
) -> LoadedBatch:
    """A labelled batch made with the model's pipeline, as the manifest loader makes one."""
    pipeline = Pipeline.from_model(model)
    batch = pipeline.collate([pipeline.load({"stats": stats}) for stats, _ in rows])
    targets = torch.tensor([target for _, target in rows])
    return LoadedBatch(batch, targets, list(range(start, start + len(rows))), skipped or [])


def uneven_batches(model: MultimodalModel) -> list[LoadedBatch]:
    return [loaded(model, ROWS[:4]), loaded(model, ROWS[4:5], 4), loaded(model, ROWS[5:], 5)]


def all_logits(model: MultimodalModel) -> torch.Tensor:
    batch = loaded(model, ROWS).batch
    assert batch is not None
    with torch.no_grad():
        logits: torch.Tensor = model(batch).logits
    return logits


def test_the_toy_model_is_set_up_as_the_rows_say(model: MultimodalModel) -> None:
    stats = torch.tensor([row[0] for row in ROWS])
    assert torch.allclose(all_logits(model), F.gelu(stats[:, :3]), atol=1e-6)


def test_loss_is_the_sample_weighted_mean_over_batches(model: MultimodalModel) -> None:
    targets = torch.tensor([target for _, target in ROWS])
    expected = F.cross_entropy(all_logits(model), targets, reduction="none").mean()
    result = evaluate_loader(model, uneven_batches(model), CPU, TASK)
    assert result.count == 6
    assert result.loss == pytest.approx(float(expected), rel=1e-6)
    # not the mean of the three batches' means
    per_batch = [
        float(F.cross_entropy(all_logits(model)[a:b], targets[a:b]))
        for a, b in ((0, 4), (4, 5), (5, 6))
    ]
    assert result.loss != pytest.approx(sum(per_batch) / 3, rel=1e-3)


def test_metrics_match_torchmetrics_over_the_whole_split(model: MultimodalModel) -> None:
    result = evaluate_loader(model, uneven_batches(model), CPU, TASK)
    probabilities = all_logits(model).softmax(-1)
    targets = torch.tensor([target for _, target in ROWS])
    assert set(result.metrics) == {"accuracy", "macro_f1", "auroc"}
    assert result.metrics["accuracy"] == pytest.approx(0.5)  # 3 of 6 on the diagonal
    assert result.metrics["accuracy"] == pytest.approx(
        float(tmf.accuracy(probabilities, targets, task="multiclass", num_classes=3))
    )
    # per class F1: ant 2/3, bee 2/5, cat 1/2
    assert result.metrics["macro_f1"] == pytest.approx((2 / 3 + 2 / 5 + 1 / 2) / 3)
    assert result.metrics["macro_f1"] == pytest.approx(
        float(
            tmf.f1_score(probabilities, targets, average="macro", task="multiclass", num_classes=3)
        )
    )
    assert result.metrics["auroc"] == pytest.approx(
        float(tmf.auroc(probabilities, targets, task="multiclass", num_classes=3))
    )


def test_the_result_does_not_depend_on_how_rows_are_batched(model: MultimodalModel) -> None:
    one = evaluate_loader(model, [loaded(model, ROWS)], CPU, TASK, confusion=True)
    many = evaluate_loader(model, uneven_batches(model), CPU, TASK, confusion=True)
    assert many.loss == pytest.approx(one.loss, rel=1e-6)
    assert many.metrics == pytest.approx(one.metrics)
    assert many.confusion == one.confusion


def test_confusion_matrix_rows_are_true_classes(model: MultimodalModel) -> None:
    result = evaluate_loader(model, uneven_batches(model), CPU, TASK, confusion=True)
    assert result.confusion == CONFUSION
    assert evaluate_loader(model, uneven_batches(model), CPU, TASK).confusion is None


def test_skipped_rows_are_collected(model: MultimodalModel) -> None:
    first = Skipped("val.jsonl", 3, "val.jsonl row 3, column 'stats': can't read")
    second = Skipped("val.jsonl", 9, "val.jsonl row 9, column 'label': not a class")
    batches = [
        loaded(model, ROWS[:4], skipped=[first]),
        LoadedBatch(None, None, [], [second]),  # every row of this batch was skipped
        loaded(model, ROWS[4:], 4),
    ]
    result = evaluate_loader(model, batches, CPU, TASK, confusion=True)
    assert result.skipped == [first, second]
    assert result.count == 6
    assert result.confusion == CONFUSION


def test_a_fatal_skipped_row_raises(model: MultimodalModel) -> None:
    fatal = Skipped("val.jsonl", 5, "val.jsonl row 5, column 'stats': bad value", fatal=True)
    batches = [loaded(model, ROWS[:2]), loaded(model, ROWS[2:], 2, skipped=[fatal])]
    with pytest.raises(DataError, match=r"^val\.jsonl row 5, column 'stats': bad value$"):
        evaluate_loader(model, batches, CPU, TASK)


@pytest.mark.parametrize("training", [True, False])
def test_the_models_mode_is_restored(model: MultimodalModel, training: bool) -> None:
    model.train(training)
    modes: list[bool] = []
    evaluate_loader(
        model, uneven_batches(model), CPU, TASK, progress=lambda: modes.append(model.training)
    )
    assert modes == [False, False, False]  # evaluated in eval mode, one call per batch
    assert model.training is training
    assert model.head.training is training


def test_an_empty_loader_gives_count_zero_and_nan(model: MultimodalModel) -> None:
    for loader in ([], [LoadedBatch(None, None, [], [Skipped("v.jsonl", 1, "bad")])]):
        result = evaluate_loader(model, loader, CPU, TASK, confusion=True)
        assert result.count == 0
        assert math.isnan(result.loss)
        assert set(result.metrics) == {"accuracy", "macro_f1", "auroc"}
        assert all(math.isnan(value) for value in result.metrics.values())
        assert result.confusion is None


def test_flat_prefixes_the_loss_and_every_metric() -> None:
    evaluation = Evaluation(loss=0.25, metrics={"accuracy": 0.5, "macro_f1": 0.4}, count=6)
    assert evaluation.flat("val") == {"val_loss": 0.25, "val_accuracy": 0.5, "val_macro_f1": 0.4}
    assert evaluation.flat("test") == {
        "test_loss": 0.25,
        "test_accuracy": 0.5,
        "test_macro_f1": 0.4,
    }
