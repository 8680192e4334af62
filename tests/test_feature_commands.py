"""``mmplug encode`` and ``mmplug cache info|clear`` with the real plugins on tiny models.

The encoders are bert-tiny and a 32-pixel resnet18, both ``freeze: true`` (so the feature
cache takes them), and a mel-cnn left trainable (so it is not cached, and says why). Most
commands run in this process through :func:`mmplug.cli.main.main` (a subprocess costs seconds
of imports); one runs as a real ``mmplug`` process to check the exit code and message.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

import mmplug
from mmplug.cli.main import main
from mmplug.data.encoding import encode_manifest
from mmplug.data.manifest import read_manifest
from mmplug.data.pipeline import ManifestDataset, Pipeline
from mmplug.model.config import load_config
from mmplug.training.progress import Reporter
from mmplug_demo.dataset import generate
from mmplug_demo.run import demo_config

from .conftest import environ_without_settings
from .training_helpers import TINY_ENCODERS as ENCODERS


def entry_files(cache: Path) -> list[Path]:
    return sorted((cache / "features").rglob("*.safetensors"))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo data (train 16, val 8), a config whose cache is ``cache/``, and ``new.jsonl``: 6
    rows of test data, one with a corrupt image and one without a caption."""
    root = tmp_path_factory.mktemp("features")
    data = generate(root / "data", train=16, val=8, test=6, image_size=32, seconds=0.25)
    config = demo_config(("audio", "image", "text"), data.root, fusion="concat", epochs=1, seed=0)
    config["model"]["encoders"] = {
        key: dict(ENCODERS[key], **({"freeze": True} if key != "audio" else {})) for key in ENCODERS
    }
    del config["data"]["test"]
    config["train"] |= {"batch_size": 8, "feature_cache": str(root / "cache")}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [json.loads(line) for line in data.test.read_text().splitlines()]
    (data.root / rows[2]["image"]).write_bytes(b"not a png")
    rows[4]["caption"] = None
    (data.root / "new.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def encode(
    capsys: pytest.CaptureFixture[str], work: Path, manifest: str, *more: str
) -> tuple[int, str, str]:
    """``mmplug encode config.yaml --data data/MANIFEST MORE...`` in ``work``."""
    config, data = str(work / "config.yaml"), str(work / "data" / manifest)
    return run_main(capsys, "encode", config, "--data", data, *more)


def on_disk(path: Path) -> int:
    stat = path.stat()
    return max(stat.st_size, stat.st_blocks * 512)


def test_encode_fills_the_cache_and_training_then_hits_it(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = work / "cache-hits"  # its own: the other tests' runs fill cache/
    setting = f"train.feature_cache={cache}"
    config, train = str(work / "config.yaml"), str(work / "data" / "train.jsonl")
    code, out, err = run_main(capsys, "encode", config, setting, "--data", train)
    assert code == 0, err
    assert "caching image, text" in out
    assert "not audio: it has trainable parameters" in out
    assert "image: 16 added to the feature cache, 0 already there" in out
    assert len(entry_files(cache)) == 32  # 16 rows, text and image

    # Training with the same config finds every training row: it only adds the val rows'.
    run = mmplug.train(config, [setting], out=work / "run-hits", reporter=Reporter(quiet=True))
    assert len(entry_files(cache)) == 32 + 16

    # A run directory's encoders are the same, so encoding from it finds everything too.
    code, out, err = run_main(capsys, "encode", str(run), "--data", train)
    assert code == 0, err
    assert "text: 0 added to the feature cache, 16 already there" in out
    assert len(entry_files(cache)) == 48


def trained(work: Path) -> Path:
    """A run of the config: the first test's, or one trained now if it didn't run."""
    if (work / "run-hits").is_dir():
        return work / "run-hits"
    run = work / "run"
    if not run.is_dir():
        mmplug.train(str(work / "config.yaml"), out=run, reporter=Reporter(quiet=True))
    return run


def direct_pooled(model: Any, manifest: Path, index: int) -> dict[str, torch.Tensor]:
    """The pooled outputs of one manifest row, straight from each encoder."""
    rows = read_manifest(manifest)
    pipeline = Pipeline.from_model(model)
    values = {
        key: rows.rows[index].get(column)
        for key, column in (("audio", "audio"), ("image", "image"), ("text", "caption"))
    }
    loaded = pipeline.load(values, root=rows.root)
    batch = pipeline.collate([loaded])
    model.eval()
    with torch.no_grad():
        return {
            key: encoder(batch.inputs[key]).pooled[0]
            for key, encoder in model.encoder_items()
            if bool(batch.present[key].any())
        }


def test_out_holds_each_encoders_pooled_outputs(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = trained(work)
    out = work / "emb.safetensors"
    code, printed, err = run_main(
        capsys,
        "encode",
        str(run),
        "--data",
        str(work / "data" / "new.jsonl"),
        "--out",
        str(out),
        "data.on_error=skip",
    )
    assert code == 0, err
    assert f"wrote {out}: audio [5, 16], image [5, 512]" in printed
    assert "skipped 1 row(s)" in err and "row 3:" in err and "column 'image'" in err
    tensors = load_file(out)
    assert tensors["row"].tolist() == [1, 2, 4, 5, 6]  # line 3 has the corrupt image
    assert tensors["text"].shape == (5, 128) and tensors["image"].shape == (5, 512)
    assert tensors["audio"].shape[0] == 5 and tensors["audio"].dtype == torch.float32
    assert tensors["present_text"].tolist() == [True, True, True, False, True]
    assert not tensors["text"][3].any()  # absent: zeros
    assert tensors["present_image"].all() and tensors["present_audio"].all()

    model = mmplug.load_model(run / "best")
    for position, index in ((0, 0), (3, 4), (4, 5)):
        direct = direct_pooled(model, work / "data" / "new.jsonl", index)
        for key, pooled in direct.items():
            torch.testing.assert_close(tensors[key][position], pooled, rtol=1e-4, atol=1e-5)
        assert set(direct) == {
            k for k in ("audio", "image", "text") if tensors[f"present_{k}"][position]
        }


def test_encode_manifest_in_python_without_a_cache(work: Path, tmp_path: Path) -> None:
    config = load_config(work / "config.yaml")
    assert config.data is not None
    model = mmplug.load_model(trained(work) / "best")
    rows = read_manifest(work / "data" / "val.jsonl")
    dataset = ManifestDataset.from_config(
        rows, Pipeline.from_model(model), config.data, missing="absent"
    )
    model.train()
    result = encode_manifest(model, dataset, out=tmp_path / "val.safetensors", batch_size=3)
    assert result.rows == 8 and not result.skipped and result.cached == {}
    assert model.training and dataset.features is None  # left as they were
    tensors = load_file(tmp_path / "val.safetensors")
    direct = direct_pooled(model, rows.path, 7)
    for key in ("audio", "image", "text"):
        torch.testing.assert_close(tensors[key][7], direct[key], rtol=1e-4, atol=1e-5)


def test_a_row_that_cant_be_read_stops_encode_naming_it(
    work: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = encode(capsys, work, "new.jsonl", "--out", str(tmp_path / "x.safetensors"))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("mmplug: error: ")
    assert "new.jsonl row 3, column 'image'" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_nothing_to_cache_and_no_out_is_an_error_saying_why(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # quoted: YAML reads a bare off as False
    code, _, err = encode(capsys, work, "val.jsonl", "train.feature_cache='off'")
    assert code == 2 and err.count("\n") == 1
    assert "nothing to do" in err and "text: train.feature_cache is off" in err


def test_cache_info_and_clear(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = work / "cache-info"
    code, _, err = encode(capsys, work, "val.jsonl", f"train.feature_cache={cache}")
    assert code == 0, err
    files = entry_files(cache)
    assert len(files) == 16
    size = sum(on_disk(f) for f in files)
    code, out, _ = run_main(capsys, "cache", "info", "--dir", str(cache))
    assert code == 0
    assert f"feature cache: {cache / 'features' / 'v1'}" in out
    assert "entries  16\n" in out and f"({size:,} bytes)" in out

    code, out, _ = run_main(capsys, "cache", "clear", "--dir", str(cache))
    assert code == 0 and out.startswith("removed 16 entries from ")
    assert entry_files(cache) == []
    _, out, _ = run_main(capsys, "cache", "info", "--dir", str(cache))
    assert "entries  0\n" in out and "(0 bytes)" in out


def test_cache_commands_default_to_mmplug_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MMPLUG_CACHE_DIR", str(tmp_path))
    shard = tmp_path / "features" / "v1" / "ab"
    shard.mkdir(parents=True)
    (shard / "abcd.safetensors").write_bytes(b"x" * 1500)
    (shard / ".abcd.1.tmp").write_bytes(b"staging")  # a writer's: not an entry
    _, out, _ = run_main(capsys, "cache", "info")
    size = on_disk(shard / "abcd.safetensors")
    assert str(tmp_path) in out and "entries  1\n" in out and f"({size:,} bytes)" in out
    _, out, _ = run_main(capsys, "cache", "clear")
    assert out.startswith("removed 1 entries")


def test_a_missing_manifest_is_one_line_exit_2(work: Path) -> None:
    """As a real process: the exit code and stderr a shell sees."""
    missing = subprocess.run(
        [sys.executable, "-m", "mmplug", "encode", "config.yaml", "--data", "nowhere.jsonl"],
        capture_output=True,
        text=True,
        cwd=work,
        env=environ_without_settings(),
        timeout=300,
    )
    assert missing.returncode == 2
    assert missing.stderr == "mmplug: error: manifest not found: nowhere.jsonl\n"


def test_a_bad_config_is_one_line_exit_2(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = yaml.safe_load((work / "config.yaml").read_text())
    bad["model"]["encoders"]["text"]["name"] = "bertt"
    (work / "bad.yaml").write_text(yaml.safe_dump(bad))
    code, _, err = run_main(
        capsys, "encode", str(work / "bad.yaml"), "--data", str(work / "data" / "val.jsonl")
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("mmplug: error: ")
    assert "bertt" in err and "did you mean 'bert'" in err


@pytest.mark.parametrize("where", ["folder", "missing"])
def test_an_out_that_cant_be_written_is_refused_before_encoding(
    work: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str
) -> None:
    out = tmp_path if where == "folder" else tmp_path / "nowhere" / "x.safetensors"
    code, stdout, err = encode(capsys, work, "val.jsonl", "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and err.startswith("mmplug: error: --out ")
    assert ("is a folder" if where == "folder" else "does not exist") in err
    assert "fitting" not in stdout  # refused before the model was built
