"""Tasks: label cells to targets, label spaces, predictions as users read them, and how a
head reaches its task (``Head.task_class``)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest
import torch
import torchmetrics

import mmplug
from mmplug.errors import ComponentError, ConfigError, DataError
from mmplug.model.heads import ClassificationHead, MultilabelHead, RegressionHead
from mmplug.model.tasks import ClassificationTask, MultilabelTask, RegressionTask, Task

ANIMALS = ("ant", "bee", "cat")


# -- label_names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "names"), [("cat", ["cat"]), (" cat ", ["cat"]), (3, ["3"]), (3.0, ["3"])]
)
def test_classification_cell_names_one_class(cell: Any, names: list[str]) -> None:
    assert ClassificationTask.label_names(cell, "|") == names


def test_classification_cell_must_be_text_or_a_number() -> None:
    with pytest.raises(DataError, match="a class label must be a string or a number, not list"):
        ClassificationTask.label_names(["a", "b"], "|")


@pytest.mark.parametrize(
    ("cell", "names"),
    [("a| b ||c", ["a", "b", "c"]), (["x", 2, 2.0], ["x", "2", "2"]), ([], []), ("a;b", ["a;b"])],
)
def test_multilabel_cell_names_a_list_or_joined_names(cell: Any, names: list[str]) -> None:
    assert MultilabelTask.label_names(cell, "|") == names


def test_multilabel_cell_splits_on_the_given_separator() -> None:
    assert MultilabelTask.label_names("a;b|c", ";") == ["a", "b|c"]


def test_multilabel_cell_must_be_a_list_or_text() -> None:
    with pytest.raises(DataError, match="a multilabel label must be a list of names, not int"):
        MultilabelTask.label_names(7, "|")


def test_regression_cell_names_no_class() -> None:
    assert RegressionTask.label_names("1.5|2", "|") == []
    assert RegressionTask.label_names({"odd": 1}, "|") == []  # encode checks it


# -- from_labels and size ------------------------------------------------------------------------


@pytest.mark.parametrize("task", [ClassificationTask, MultilabelTask])
def test_classes_are_the_names_found_sorted_naturally(task: type[Task]) -> None:
    found = task.from_labels(["b", "10", "a", "2", "b", "10"], separator=";")
    assert found.classes == ("2", "10", "a", "b")  # type: ignore[attr-defined]
    assert found.separator == ";"  # type: ignore[attr-defined]
    assert found.size() == 4


@pytest.mark.parametrize("task", [ClassificationTask, MultilabelTask])
def test_classes_given_are_kept_in_their_order(task: type[Task]) -> None:
    found = task.from_labels(iter(["a"]), classes=["z", "a", "m"])
    assert found.classes == ("z", "a", "m")  # type: ignore[attr-defined]
    assert found.size() == 3


def test_regression_label_space_has_no_size() -> None:
    task = RegressionTask.from_labels(["whatever"], classes=["a"], separator=";")
    assert task == RegressionTask(None, ";")
    assert task.size() is None


# -- with_outputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("task", [ClassificationTask(ANIMALS), MultilabelTask(ANIMALS)])
def test_a_head_of_the_labels_size_fits(task: Task) -> None:
    assert task.with_outputs(3) == task


@pytest.mark.parametrize(
    ("task", "param"),
    [(ClassificationTask(ANIMALS), "num_classes"), (MultilabelTask(ANIMALS), "num_labels")],
)
def test_a_class_count_mismatch_is_a_config_error_at_the_head(task: Task, param: str) -> None:
    with pytest.raises(ConfigError) as caught:
        task.with_outputs(2)
    [issue] = caught.value.issues
    assert issue.path == "model.head"
    assert issue.message == (
        f"the head has 2 outputs but the data has 3 classes (ant, bee, cat); leave {param} out "
        "to take it from the data, or list data.classes"
    )


def test_a_mismatch_with_many_classes_shows_the_first_ten() -> None:
    task = ClassificationTask(tuple(f"c{i}" for i in range(12)))
    with pytest.raises(ConfigError) as caught:
        task.with_outputs(3)
    assert "12 classes (c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, ...)" in str(caught.value)


def test_regression_records_the_head_output_count() -> None:
    task = RegressionTask()
    sized = task.with_outputs(2)
    assert sized == RegressionTask(2)
    assert task.outputs is None  # tasks are values: the original is unchanged
    assert sized.encode([1, 2]).tolist() == [1.0, 2.0]
    with pytest.raises(DataError) as caught:
        sized.encode("1.5")
    assert str(caught.value) == "expected 2 numbers (the head's outputs), got 1: '1.5'"


def test_a_one_output_regression_refuses_several_values() -> None:
    with pytest.raises(DataError, match=re.escape("expected 1 number (the head's outputs), got 2")):
        RegressionTask().with_outputs(1).encode([1.0, 2.0])


# -- encode --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["3", 3, 3.0, " 3 "])
def test_class_cells_written_as_numbers_name_the_same_class(cell: Any) -> None:
    target = ClassificationTask(("1", "2", "3")).encode(cell)
    assert target.dtype == torch.long and target.shape == ()
    assert int(target) == 2


def test_classification_encodes_the_class_index() -> None:
    task = ClassificationTask(ANIMALS)
    assert [int(task.encode(name)) for name in ("cat", "ant", "bee")] == [2, 0, 1]


def test_an_unknown_class_lists_the_classes() -> None:
    with pytest.raises(DataError) as caught:
        ClassificationTask(ANIMALS).encode("dog")
    assert str(caught.value) == "label 'dog' is not one of the classes (ant, bee, cat)"


def test_an_unknown_class_among_many_lists_the_first_twenty() -> None:
    task = ClassificationTask(tuple(str(i) for i in range(25)))
    with pytest.raises(DataError, match=re.escape("(0, 1, 2, ") + r".*" + re.escape(" 19, ...)")):
        task.encode("x")


def test_a_fractional_number_is_its_own_class() -> None:
    with pytest.raises(DataError, match=re.escape("label '3.5' is not one of the classes")):
        ClassificationTask(("3",)).encode(3.5)


@pytest.mark.parametrize(
    "task", [ClassificationTask(ANIMALS), MultilabelTask(ANIMALS), RegressionTask()]
)
@pytest.mark.parametrize("cell", [None, ""])
def test_a_missing_label_is_a_data_error(task: Task, cell: Any) -> None:
    with pytest.raises(DataError, match=r"^the label is missing$"):
        task.encode(cell)


def test_boolean_class_cells_name_lower_case_classes() -> None:
    # a JSON manifest's true/false match classes 'true'/'false' (as data.classes writes them)
    task = ClassificationTask(("false", "true"))
    assert int(task.encode(True)) == 1
    assert int(task.encode(False)) == 0


def test_multilabel_encodes_a_zero_one_vector() -> None:
    task = MultilabelTask(ANIMALS)
    for cell in ("cat|ant", ["ant", "cat"], " ant | cat "):
        target = task.encode(cell)
        assert target.dtype == torch.float32
        assert target.tolist() == [1.0, 0.0, 1.0]
    assert task.encode([]).tolist() == [0.0, 0.0, 0.0]  # an empty list: none of the labels


def test_multilabel_encode_splits_on_the_tasks_separator() -> None:
    assert MultilabelTask(ANIMALS, ";").encode("bee;cat").tolist() == [0.0, 1.0, 1.0]


def test_multilabel_unknown_label_lists_the_classes() -> None:
    with pytest.raises(DataError, match=re.escape("label 'dog' is not one of the classes (ant,")):
        MultilabelTask(ANIMALS).encode(["ant", "dog"])


@pytest.mark.parametrize(
    ("cell", "values"),
    [(2.5, 2.5), ("2.5", 2.5), (3, 3.0), ("1|2", [1.0, 2.0]), ([1, -2.5], [1.0, -2.5])],
)
def test_regression_encodes_numbers(cell: Any, values: float | list[float]) -> None:
    target = RegressionTask().encode(cell)
    assert target.dtype == torch.float32
    assert target.tolist() == values  # one value: a 0-d tensor, several: [n]


def test_regression_splits_text_on_the_tasks_separator() -> None:
    assert RegressionTask(None, ";").encode("1;2").tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    "cell", [math.inf, "nan", "-inf", [1.0, math.inf], [1.0, math.nan], True, [1.0, False], []]
)
def test_regression_refuses_non_finite_numbers_and_booleans(cell: Any) -> None:
    with pytest.raises(DataError, match=r"^expected finite numbers, got "):
        RegressionTask().encode(cell)


def test_a_nan_label_is_a_missing_label_for_every_task() -> None:
    """A JSON NaN is how pandas writes a missing value: missing, not a number or a class."""
    for task in (RegressionTask(), ClassificationTask(("a", "b")), MultilabelTask(("a",))):
        with pytest.raises(DataError, match=r"^the label is missing$"):
            task.encode(math.nan)


@pytest.mark.parametrize("cell", ["abc", "1||2", {"value": 1}, ["1", None]])
def test_regression_refuses_what_is_not_a_number(cell: Any) -> None:
    with pytest.raises(
        DataError, match=re.escape(f"expected a number or a list of numbers, got {cell!r}")
    ):
        RegressionTask().encode(cell)


# -- metric targets and the confusion matrix -----------------------------------------------------


@pytest.mark.parametrize("task", [ClassificationTask(ANIMALS), MultilabelTask(ANIMALS)])
def test_class_tasks_give_metrics_integer_targets(task: Task) -> None:
    targets = task.metric_targets(torch.tensor([0.0, 2.0, 1.0]))
    assert targets.dtype == torch.long
    assert targets.tolist() == [0, 2, 1]


def test_regression_metric_targets_stay_floats() -> None:
    targets = torch.tensor([0.5, 2.25])
    assert RegressionTask().metric_targets(targets).dtype == torch.float32
    assert RegressionTask().metric_targets(targets).tolist() == [0.5, 2.25]


def test_classification_counts_a_confusion_matrix() -> None:
    task = ClassificationTask(ANIMALS)
    matrix = task.confusion(3)
    assert isinstance(matrix, torchmetrics.Metric)
    matrix.update(torch.tensor([0, 2, 2, 1]), torch.tensor([0, 2, 1, 1]))
    assert matrix.compute().tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    assert task.confusion(3) is not matrix  # a fresh one each time


@pytest.mark.parametrize("task", [MultilabelTask(ANIMALS), RegressionTask()])
def test_other_tasks_have_no_confusion_matrix(task: Task) -> None:
    assert task.confusion(3) is None


# -- describe ------------------------------------------------------------------------------------


def test_classification_describes_the_likeliest_class_and_probabilities() -> None:
    answer = ClassificationTask(ANIMALS).describe(torch.tensor([0.1, 0.7, 0.2]))
    assert answer == {"label": "bee", "probabilities": {"ant": 0.1, "bee": 0.7, "cat": 0.2}}


def test_probabilities_are_rounded_and_outputs_beyond_the_classes_named() -> None:
    answer = ClassificationTask(("a",)).describe(torch.tensor([0.123456789, 0.876543211]))
    assert answer == {
        "label": "<output 1>",
        "probabilities": {"a": 0.123457, "<output 1>": 0.876543},
    }


def test_multilabel_describes_the_labels_at_or_above_one_half() -> None:
    answer = MultilabelTask(ANIMALS).describe(torch.tensor([0.5, 0.49, 0.9]))
    assert answer == {
        "labels": ["ant", "cat"],
        "probabilities": {"ant": 0.5, "bee": 0.49, "cat": 0.9},
    }


def test_regression_describes_values() -> None:
    assert RegressionTask().describe(torch.tensor(2.5)) == {"value": 2.5}
    assert RegressionTask(2).describe(torch.tensor([1.0, -2.0])) == {"value": [1.0, -2.0]}


# -- direction -----------------------------------------------------------------------------------


@pytest.mark.parametrize("task", [ClassificationTask, MultilabelTask, RegressionTask])
def test_lower_loss_is_better_for_every_task(task: type[Task]) -> None:
    assert task.direction("loss") == "min"


@pytest.mark.parametrize("metric", ["mae", "rmse", "mse"])
def test_lower_regression_errors_are_better(metric: str) -> None:
    assert RegressionTask.direction(metric) == "min"


@pytest.mark.parametrize(
    ("task", "metric"),
    [
        (ClassificationTask, "accuracy"),
        (ClassificationTask, "macro_f1"),
        (MultilabelTask, "map"),
        (RegressionTask, "r2"),
    ],
)
def test_higher_scores_are_better(task: type[Task], metric: str) -> None:
    assert task.direction(metric) == "max"


# -- to_json / from_json -------------------------------------------------------------------------


def through_json(task: Task) -> Task:
    """Write the label space as labels.json holds it, and read it back."""
    return type(task).from_json(json.loads(json.dumps(task.to_json())))


def test_classification_labels_json() -> None:
    task = ClassificationTask(("2", "10", "a"))
    assert task.to_json() == {"task": "classification", "classes": ["2", "10", "a"]}
    assert through_json(task) == task


def test_multilabel_labels_json_keeps_the_separator() -> None:
    task = MultilabelTask(ANIMALS, ";")
    assert task.to_json() == {"task": "multilabel", "classes": list(ANIMALS), "separator": ";"}
    read = through_json(task)
    assert read == task
    assert read.encode("ant;cat").tolist() == [1.0, 0.0, 1.0]


@pytest.mark.parametrize(("task", "size"), [(RegressionTask(3), 3), (RegressionTask(), None)])
def test_regression_labels_json(task: RegressionTask, size: int | None) -> None:
    data = task.to_json()
    assert data["task"] == "regression"
    assert data.get("size") == size  # no size: the head's outputs are not recorded
    assert through_json(task) == task


def test_regression_labels_json_keeps_the_separator() -> None:
    task = RegressionTask(2, ";")
    assert through_json(task) == task


# -- Head.task_class -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "task"),
    [
        (ClassificationHead, ClassificationTask),
        (MultilabelHead, MultilabelTask),
        (RegressionHead, RegressionTask),
    ],
)
def test_builtin_heads_learn_their_builtin_task(head: type[mmplug.Head], task: type[Task]) -> None:
    assert head.task_class() is task


def test_a_built_head_reaches_its_task_too() -> None:
    assert ClassificationHead(4, 3).task_class() is ClassificationTask


def test_a_head_with_a_task_of_its_own_must_define_task_class() -> None:
    class RankingHead(RegressionHead):
        task = "ranking"

    with pytest.raises(ComponentError) as caught:
        RankingHead.task_class()
    message = str(caught.value)
    assert "head RankingHead has task 'ranking', which is not a built-in task" in message
    assert "give it a task_class() classmethod returning its own mmplug.Task" in message


def test_a_head_without_a_task_name_must_define_task_class() -> None:
    class Nameless(mmplug.Head):  # never built: its abstract methods don't matter here
        pass

    with pytest.raises(ComponentError, match="head Nameless has task None"):
        Nameless.task_class()


class Ranks(Task):
    """A plugin's own task: a cell is a rank; the target is the rank as a float."""

    name = "ranking"

    @classmethod
    def from_labels(
        cls, names: Iterable[str], *, classes: Sequence[str] | None = None, separator: str = "|"
    ) -> Ranks:
        return cls()

    def encode(self, cell: Any) -> torch.Tensor:
        return torch.tensor(float(cell))

    def describe(self, prediction: torch.Tensor) -> dict[str, Any]:
        return {"rank": float(prediction)}

    def to_json(self) -> dict[str, Any]:
        return {"task": self.name}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Ranks:
        return cls()


def test_a_head_that_defines_task_class_gets_its_own_task() -> None:
    class RankingHead(RegressionHead):
        task = "ranking"

        @classmethod
        def task_class(cls) -> type[Task]:
            return Ranks

    assert RankingHead.task_class() is Ranks
    assert RankingHead.task_class().direction("loss") == "min"
