"""Manifests: JSONL/CSV/TSV reading, errors named by line, columns per key, the label space."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from mmplug.data.manifest import (
    Manifest,
    columns_in,
    read_labelled_manifest,
    read_labels,
    read_manifest,
)
from mmplug.errors import DataError
from mmplug.model.sections import DataConfig
from mmplug.model.tasks import ClassificationTask, MultilabelTask, RegressionTask

BOM = "\ufeff"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, *rows: dict[str, Any] | str) -> Path:
    """One line per row: a dict is written as JSON, a string as it is (blank lines, junk)."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    return write(path, "".join(line + "\n" for line in lines))


def data_config(**fields: Any) -> DataConfig:
    return DataConfig(train="train.jsonl", **fields)


# -- read_manifest -------------------------------------------------------------------------------


def test_jsonl_rows_keep_their_line_numbers_past_blank_lines(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", {"a": 1, "b": "x"}, "", "   \t", {"a": 2, "c": None})
    manifest = read_manifest(path)
    assert manifest.rows == [{"a": 1, "b": "x"}, {"a": 2, "c": None}]
    assert manifest.lines == [1, 4]
    assert manifest.columns == ["a", "b", "c"]  # every key of any row, in order of appearance
    assert manifest.path == path
    assert manifest.root == tmp_path


@pytest.mark.parametrize("name", ["m.ndjson", "m.JSONL"])
def test_ndjson_and_upper_case_suffixes_read_as_jsonl(tmp_path: Path, name: str) -> None:
    manifest = read_manifest(jsonl(tmp_path / name, {"a": 1}))
    assert manifest.rows == [{"a": 1}]


def test_manifest_path_may_be_a_string(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", {"a": 1})
    assert read_manifest(str(path)).rows == [{"a": 1}]


def test_jsonl_byte_order_mark_is_not_part_of_the_first_key(tmp_path: Path) -> None:
    path = write(tmp_path / "m.jsonl", BOM + '{"id": 1}\n{"id": 2}\n')
    manifest = read_manifest(path)
    assert manifest.columns == ["id"]
    assert manifest.rows == [{"id": 1}, {"id": 2}]
    assert manifest.lines == [1, 2]


def test_csv_header_names_columns_and_empty_cells_are_none(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "id,label,path\n1,cat,\n\n2,,a.png\n3\n")
    manifest = read_manifest(path)
    assert manifest.columns == ["id", "label", "path"]
    assert manifest.rows == [
        {"id": "1", "label": "cat", "path": None},
        {"id": "2", "label": None, "path": "a.png"},
        {"id": "3", "label": None, "path": None},  # a short row: the rest is empty
    ]
    assert manifest.lines == [2, 4, 5]


def test_csv_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" writes one
    path = write(tmp_path / "m.csv", BOM + "id,label\n1,cat\n")
    manifest = read_manifest(path)
    assert manifest.columns == ["id", "label"]
    assert manifest.rows == [{"id": "1", "label": "cat"}]


def test_tsv_splits_on_tabs_only(tmp_path: Path) -> None:
    path = write(tmp_path / "m.tsv", "text\tlabel\nhello, world\tgreeting\n")
    manifest = read_manifest(path)
    assert manifest.rows == [{"text": "hello, world", "label": "greeting"}]


def test_csv_quoted_cell_may_hold_the_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", 'text,label\n"a, b",x\n')
    assert read_manifest(path).rows == [{"text": "a, b", "label": "x"}]


def test_bad_json_line_is_named_by_its_line_number(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", {"a": 1}, "", '{"a": 2,}')
    with pytest.raises(DataError) as caught:
        read_manifest(path)
    assert str(caught.value).startswith(f"{path} line 3: invalid JSON at column 9: ")


def test_json_line_that_is_not_an_object_is_an_error(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", {"a": 1}, "[1, 2]")
    with pytest.raises(
        DataError, match=re.escape(f"{path} line 2: expected a JSON object, got list")
    ):
        read_manifest(path)


def test_csv_row_with_too_many_cells_is_named_by_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "a,b\n1,2\n1,2,3\n")
    with pytest.raises(DataError) as caught:
        read_manifest(path)
    assert str(caught.value) == f"{path} line 3: 3+ cells, but the header has 2"


@pytest.mark.parametrize("name", ["m.csv", "m.jsonl"])
def test_text_that_is_not_utf8_is_a_data_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b'{"a": 1}\n' if name.endswith("jsonl") else b"a,b\n")
    with path.open("ab") as handle:
        handle.write(b"caf\xe9\n")  # Latin-1
    with pytest.raises(DataError, match=re.escape(f"{path}: not UTF-8 text (")):
        read_manifest(path)


def test_not_utf8_names_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"a,b\n1,\xff\n")
    with pytest.raises(DataError, match=re.escape("(invalid start byte at byte 6, line 2)")):
        read_manifest(path)


def test_not_utf8_byte_offset_counts_from_the_start_of_a_large_file(tmp_path: Path) -> None:
    good = b'{"a": 1}\n' * 3000
    path = tmp_path / "m.jsonl"
    path.write_bytes(good + b'{"a": "\xff"}\n')
    offset = len(good) + len(b'{"a": "')
    with pytest.raises(DataError, match=re.escape(f"at byte {offset}, line 3001)")):
        read_manifest(path)


def test_unknown_suffix_lists_the_known_formats(tmp_path: Path) -> None:
    path = write(tmp_path / "m.txt", '{"a": 1}\n')
    with pytest.raises(DataError) as caught:
        read_manifest(path)
    assert str(caught.value) == (
        f"{path}: unknown manifest format '.txt' (use .jsonl, .ndjson, .csv, .tsv)"
    )


def test_missing_manifest_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape(f"manifest not found: {tmp_path / 'no.jsonl'}")):
        read_manifest(tmp_path / "no.jsonl")


def test_a_folder_is_not_a_manifest(tmp_path: Path) -> None:
    (tmp_path / "split.jsonl").mkdir()
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "split.jsonl")


# -- Manifest ------------------------------------------------------------------------------------


def test_where_names_the_rows_line_and_the_column(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", {"a": 1}, "", "", {"a": 2})
    manifest = read_manifest(path)
    assert manifest.where(1) == f"{path} row 4"
    assert manifest.where(1, "image") == f"{path} row 4, column 'image'"
    assert manifest.where(0, "a") == f"{path} row 1, column 'a'"


def test_require_rows_refuses_an_empty_manifest(tmp_path: Path) -> None:
    for path in (write(tmp_path / "e.jsonl", "\n\n"), write(tmp_path / "e.csv", "a,label\n")):
        with pytest.raises(DataError, match=re.escape(f"{path} has no rows")):
            read_manifest(path).require_rows()
    read_manifest(jsonl(tmp_path / "m.jsonl", {"a": 1})).require_rows()  # has one: no error


def test_require_column_suggests_a_close_match(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "id,label\n1,cat\n")
    manifest = read_manifest(path)
    manifest.require_column("label", "the label")  # present: no error
    with pytest.raises(DataError) as caught:
        manifest.require_column("lable", "the label")
    assert str(caught.value) == (
        f"{path}: no column 'lable' (the label); did you mean 'label'? (columns: id, label)"
    )


def test_require_column_without_a_close_match_only_lists_columns(tmp_path: Path) -> None:
    manifest = read_manifest(write(tmp_path / "m.csv", "id,label\n1,cat\n"))
    with pytest.raises(DataError) as caught:
        manifest.require_column("waveform", "the audio")
    assert "did you mean" not in str(caught.value)
    assert str(caught.value).endswith("no column 'waveform' (the audio) (columns: id, label)")


def test_require_column_of_a_manifest_without_columns(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "m.jsonl", [], [], [])
    with pytest.raises(DataError, match=re.escape("(columns: none)")):
        manifest.require_column("label", "the label")


# -- read_labelled_manifest ----------------------------------------------------------------------


def test_labelled_manifest_is_read_when_it_has_rows_and_the_label(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", {"x": 1, "target": "a"})
    manifest = read_labelled_manifest(path, "target")
    assert manifest.rows == [{"x": 1, "target": "a"}]


def test_labelled_manifest_needs_its_label_column(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", {"x": 1, "targets": "a"})
    with pytest.raises(DataError) as caught:
        read_labelled_manifest(path, "target")
    message = str(caught.value)
    assert "no column 'target' (the label column, data.label)" in message
    assert "did you mean 'targets'?" in message


def test_labelled_manifest_needs_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "x,label\n")  # the column is there, no row is
    with pytest.raises(DataError, match="has no rows"):
        read_labelled_manifest(path, "label")


# -- columns_in ----------------------------------------------------------------------------------


@pytest.fixture
def captioned(tmp_path: Path) -> Manifest:
    """Columns image, caption, label."""
    return read_manifest(write(tmp_path / "m.csv", "image,caption,label\na.png,hi,x\n"))


@pytest.mark.parametrize("missing", ["error", "absent"])
def test_keys_read_their_configured_column_or_their_own_name(
    captioned: Manifest, missing: Any
) -> None:
    found, absent = columns_in(captioned, ["text", "image"], {"text": "caption"}, missing=missing)
    assert found == {"image": "image", "text": "caption"}
    assert list(found) == ["image", "text"]  # in key order
    assert absent == []


def test_a_missing_column_is_an_error_naming_it_and_its_key(captioned: Manifest) -> None:
    with pytest.raises(DataError) as caught:
        columns_in(captioned, ["image", "captoin"], {}, missing="error")
    message = str(caught.value)
    assert "no column 'captoin' (read by model key 'captoin'; see data.columns)" in message
    assert "did you mean 'caption'?" in message


def test_the_configured_column_replaces_the_keys_own_name(tmp_path: Path) -> None:
    # the manifest has a column named like the key, but the config points elsewhere
    manifest = read_manifest(write(tmp_path / "m.csv", "image,text\na.png,hi\n"))
    with pytest.raises(DataError, match=re.escape("no column 'caption' (read by model key 'text'")):
        columns_in(manifest, ["image", "text"], {"text": "caption"}, missing="error")
    found, absent = columns_in(manifest, ["image", "text"], {"text": "caption"}, missing="absent")
    assert (found, absent) == ({"image": "image"}, ["caption"])


def test_missing_columns_under_absent_are_returned(captioned: Manifest) -> None:
    found, absent = columns_in(
        captioned, ["image", "audio", "text"], {"text": "caption", "audio": "wav"}, missing="absent"
    )
    assert found == {"image": "image", "text": "caption"}
    assert absent == ["wav"]


@pytest.mark.parametrize("missing", ["error", "absent"])
def test_a_manifest_with_none_of_the_columns_is_an_error(tmp_path: Path, missing: Any) -> None:
    manifest = read_manifest(write(tmp_path / "m.csv", "id,label\n1,x\n"))
    with pytest.raises(DataError) as caught:
        columns_in(manifest, ["text", "image"], {"text": "caption"}, missing=missing)
    message = str(caught.value)
    if missing == "absent":
        assert message == (
            f"{manifest.path}: none of the model's columns (image, caption) is in it "
            "(columns: id, label); see data.columns"
        )
    else:
        assert "no column 'image' (read by model key 'image'" in message


# -- read_labels ---------------------------------------------------------------------------------


def test_classification_classes_sort_naturally(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "m.jsonl",
        *({"label": value} for value in ["10", 2, "b", "1", 2.0, "a", " 10 ", "b"]),
    )
    task = read_labels(read_manifest(path), data_config(), ClassificationTask)
    assert task == ClassificationTask(("1", "2", "10", "a", "b"))


def test_classes_given_in_the_config_win(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", {"label": "a"}, {"label": "b"})
    task = read_labels(
        read_manifest(path), data_config(classes=["z", "b", "a"]), ClassificationTask
    )
    assert task.classes == ("z", "b", "a")


def test_labels_read_the_configured_label_column(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", {"label": "no", "y": "cat"}, {"label": "no", "y": "ant"})
    task = read_labels(read_manifest(path), data_config(label="y"), ClassificationTask)
    assert task.classes == ("ant", "cat")


def test_multilabel_classes_from_jsonl_lists(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", {"label": ["dog", "cat"]}, {"label": []}, {"label": ["ant"]})
    task = read_labels(read_manifest(path), data_config(), MultilabelTask)
    assert task == MultilabelTask(("ant", "cat", "dog"), "|")


def test_multilabel_classes_from_csv_cells_split_by_the_separator(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "x,label\n1,dog;cat\n2,ant\n3,cat; dog\n")
    task = read_labels(read_manifest(path), data_config(label_separator=";"), MultilabelTask)
    assert task == MultilabelTask(("ant", "cat", "dog"), ";")


def test_regression_labels_give_no_classes(tmp_path: Path) -> None:
    # regression reads no class names; a bad number is reported when its row is encoded
    path = write(tmp_path / "m.csv", "x,label\n1,2.5\n2,1|2\n3,oops\n")
    task = read_labels(read_manifest(path), data_config(label_separator=";"), RegressionTask)
    assert task == RegressionTask(None, ";")


def test_a_bad_label_cell_names_manifest_row_and_column(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", {"y": "a"}, "", {"y": {"class": "b"}})
    with pytest.raises(DataError) as caught:
        read_labels(read_manifest(path), data_config(label="y"), ClassificationTask)
    assert str(caught.value) == (
        f"{path} row 3, column 'y': a class label must be a string or a number, not dict"
    )


def test_a_bad_multilabel_cell_names_its_row(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", {"label": ["a"]}, {"label": 7})
    with pytest.raises(DataError, match=re.escape(f"{path} row 2, column 'label': a multilabel")):
        read_labels(read_manifest(path), data_config(), MultilabelTask)


def test_on_error_skip_passes_over_a_bad_label(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", {"label": "b"}, {"label": {"x": 1}}, {"label": "a"})
    task = read_labels(read_manifest(path), data_config(on_error="skip"), ClassificationTask)
    assert task.classes == ("a", "b")


def test_missing_labels_are_passed_over(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", {"label": None}, {"label": ""}, {"x": 1}, {"label": "cat"})
    task = read_labels(read_manifest(path), data_config(), ClassificationTask)
    assert task.classes == ("cat",)
    csv_path = write(tmp_path / "m.csv", "x,label\n1,\n2,dog\n")
    csv_task = read_labels(read_manifest(csv_path), data_config(), MultilabelTask)
    assert csv_task.classes == ("dog",)


def test_a_csv_row_is_named_by_its_first_line_when_a_quoted_cell_spans_lines(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "m.csv", 'id,caption\n1,"two\nlines"\n\n2,one\n')
    manifest = read_manifest(path)
    assert manifest.rows[0]["caption"] == "two\nlines"
    assert manifest.lines == [2, 5]


def test_a_blank_label_cell_is_a_missing_label_not_a_class(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", {"label": "cat"}, {"label": "  "}, {"label": "dog"})
    manifest = read_labelled_manifest(path, "label")
    task = read_labels(manifest, data_config(), ClassificationTask)
    assert task.classes == ("cat", "dog")
    with pytest.raises(DataError, match="the label is missing"):
        task.encode("  ")
