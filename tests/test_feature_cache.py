"""The feature cache: entries on disk, their names, which encoders qualify, and training that
reads frozen encoders' outputs back instead of loading, preprocessing and encoding again,
with the same results."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

import mmplug
from mmplug.data.feature_cache import (
    CachedKey,
    FeatureStore,
    encoder_fingerprint,
    plan_feature_cache,
)
from mmplug.data.manifest import read_labelled_manifest
from mmplug.data.pipeline import Collate, ManifestDataset, Pipeline
from mmplug.files import default_cache_root
from mmplug.model.build import build_model
from mmplug.model.multimodal import MultimodalModel, drop_modalities
from mmplug.model.sections import DataConfig
from mmplug.plugins.loading import load_plugins
from mmplug.training.progress import Reporter
from mmplug_demo.dataset import generate

QUIET = Reporter(quiet=True)
CPU = torch.device("cpu")

FROZEN = {
    "text": {
        "name": "bert",
        "size": "bert-tiny",
        "vocab_size": 120,
        "max_length": 16,
        "freeze": True,
    },
    "image": {"name": "resnet18", "image_size": 32, "freeze": True},
}


@pytest.fixture(scope="module")
def registry() -> mmplug.Registry:
    return load_plugins(environ={}).registry


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("features")
    generate(root, train=24, val=16, test=8, image_size=32, seconds=0.25)
    train = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    labels = {row["label"] for row in train}
    val = [json.loads(line) for line in (root / "val.jsonl").read_text().splitlines()]
    kept = [row for row in val if row["label"] in labels][:8]  # classes training has seen
    assert len(kept) == 8
    (root / "val.jsonl").write_text("".join(json.dumps(row) + "\n" for row in kept))
    return root


def config(data: Path, cache: Path | str, *, fusion: str = "mmplug-fusion:concat", **train: Any):
    return {
        "model": {
            "encoders": FROZEN,
            "fusion": {"name": fusion, "dim": 16},
            "head": {"name": "mmplug:classification", "hidden_dims": [16]},
        },
        "data": {
            "train": str(data / "train.jsonl"),
            "val": str(data / "val.jsonl"),
            "columns": {"text": "caption", "image": "image"},
        },
        "train": {
            "epochs": 2,
            "batch_size": 8,
            "seed": 0,
            "reliance": False,
            "feature_cache": str(cache),
            **train,
        },
    }


def metrics(run: Path) -> list[dict[str, float]]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "seconds"} for line in lines]


def entries(cache: Path) -> list[Path]:
    return sorted((cache / "features").rglob("*.safetensors"))


# -- the store ------------------------------------------------------------------------------


def test_an_entry_comes_back_as_written(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, limit_bytes=10**9)
    tensors = {"pooled": torch.arange(4.0), "mask": torch.tensor([True, False])}
    assert store.get("ab" * 32) is None
    store.put("ab" * 32, tensors)
    got = store.get("ab" * 32)
    assert got is not None and set(got) == {"pooled", "mask"}
    assert torch.equal(got["pooled"], tensors["pooled"]) and got["mask"].dtype == torch.bool
    stat = store.path("ab" * 32).stat()
    assert store.usage() == (1, max(stat.st_size, stat.st_blocks * 512))  # blocks on disk


@pytest.mark.parametrize("damage", [b"", b"garbage", b"\xff" * 64])
def test_a_damaged_entry_is_a_miss_and_goes(tmp_path: Path, damage: bytes) -> None:
    store = FeatureStore(tmp_path, limit_bytes=10**9)
    store.put("cd" * 32, {"pooled": torch.ones(3)})
    path = store.path("cd" * 32)
    path.write_bytes(damage)  # emptied, or overwritten
    assert store.get("cd" * 32) is None
    assert not path.exists()


def test_a_killed_writers_staging_file_is_never_read_and_is_cleaned_up(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, limit_bytes=10**9)
    entry = "ef" * 32
    store.path(entry).parent.mkdir(parents=True)
    staging = store.path(entry).parent / f".{entry}.12345.abc.tmp"
    staging.write_bytes(b"half an entry")
    assert store.get(entry) is None and store.usage() == (0, 0)
    os.utime(staging, (1, 1))  # long ago: its writer is gone
    store.evict()
    assert not staging.exists()


def test_eviction_keeps_the_most_recently_used_within_the_limit(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, limit_bytes=10**9)
    names = [f"{index:02d}" * 32 for index in range(6)]
    for age, name in enumerate(names):
        store.put(name, {"pooled": torch.zeros(256)})
        os.utime(store.path(name), (1000 + age, 1000 + age))
    assert store.get(names[0]) is not None  # reading marks it used: now the newest
    store.limit_bytes = 3 * store.usage()[1] // 6
    assert store.evict() == 3
    kept = {name for name in names if store.path(name).exists()}
    assert kept == {names[0], names[4], names[5]}
    assert store.clear() == 3 and store.usage() == (0, 0)


def test_the_default_root_follows_mmplug_cache_dir(tmp_path: Path) -> None:
    assert default_cache_root({"MMPLUG_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert default_cache_root({}).name == "mmplug"


def test_eviction_runs_only_after_this_process_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmplug.data.feature_cache import FeatureCache

    cache = FeatureCache(FeatureStore(tmp_path, limit_bytes=0), {})
    calls: list[int] = []
    monkeypatch.setattr(FeatureStore, "evict", lambda self: calls.append(1) or 0)
    cache.evict_if_grown()
    assert calls == []  # nothing written: the listing of every entry is saved
    copy = FeatureCache(FeatureStore(tmp_path, limit_bytes=0), {})  # as a worker sends back
    copy.store.put("ab" * 32, {"pooled": torch.zeros(2)})
    cache.evict_if_grown()
    cache.evict_if_grown()
    assert calls == [1]


# -- entry names ----------------------------------------------------------------------------


def test_an_entry_names_the_value_and_the_file_as_it_is_now(tmp_path: Path) -> None:
    key = CachedKey("f" * 64, tokens=False)
    (tmp_path / "a.png").write_bytes(b"one")
    first = key.entry("a.png", tmp_path)
    assert first == key.entry("a.png", tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.png").write_bytes(b"one")
    assert key.entry("a.png", tmp_path / "other") != first  # another file of the same name
    # the value itself counts too: a text modality reads "./a.png" as other words
    assert key.entry("./a.png", tmp_path) != first
    assert key.entry("b.png", tmp_path) != first
    assert CachedKey("e" * 64, tokens=False).entry("a.png", tmp_path) != first  # other encoder
    (tmp_path / "a.png").write_bytes(b"two")  # same size, a new modification time
    os.utime(tmp_path / "a.png", ns=(1, 1))
    assert key.entry("a.png", tmp_path) != first
    assert key.entry("an inline caption", tmp_path) != key.entry("another caption", tmp_path)
    assert key.entry(object(), tmp_path) is None  # no stable identity: never cached


def test_content_naming_ignores_the_modification_time(tmp_path: Path) -> None:
    key = CachedKey("f" * 64, tokens=False, hash_files=True)
    path = tmp_path / "a.png"
    path.write_bytes(b"one")
    first = key.entry("a.png", tmp_path)
    os.utime(path, ns=(1, 1))
    assert key.entry("a.png", tmp_path) == first
    path.write_bytes(b"two")
    assert key.entry("a.png", tmp_path) != first


def build(registry: mmplug.Registry, encoders: dict[str, Any] = FROZEN, **fusion: Any):
    torch.manual_seed(0)
    model = build_model(
        {
            "model": {
                "encoders": encoders,
                "fusion": {"name": "mmplug-fusion:concat", "dim": 16, **fusion},
                "head": {"name": "mmplug:classification", "num_classes": 3},
            }
        },
        registry,
    )
    model.fit_encoders([{"text": t} for t in ("a red fox", "the blue dog", "hello there")])
    return model


def test_the_fingerprint_is_stable_and_follows_weights_params_and_precision(
    registry: mmplug.Registry,
) -> None:
    model, again = build(registry), build(registry)
    fingerprint = encoder_fingerprint(model, "image", "fp32", CPU)
    assert encoder_fingerprint(again, "image", "fp32", CPU) == fingerprint  # other tensors
    assert encoder_fingerprint(model, "image", "bf16", CPU) != fingerprint
    assert encoder_fingerprint(model, "text", "fp32", CPU) != fingerprint
    with torch.no_grad():
        next(model.encoders["image"].parameters()).view(-1)[0] += 1
    assert encoder_fingerprint(model, "image", "fp32", CPU) != fingerprint
    bigger = build(registry, {**FROZEN, "image": {**FROZEN["image"], "image_size": 48}})
    assert encoder_fingerprint(bigger, "image", "fp32", CPU) != encoder_fingerprint(
        again, "image", "fp32", CPU
    )
    text = encoder_fingerprint(again, "text", "fp32", CPU)
    again.fit_encoders([{"text": t} for t in ("other words", "make another vocabulary")])
    assert encoder_fingerprint(again, "text", "fp32", CPU) != text  # what fit learned


def test_only_frozen_deterministic_encoders_are_cached_and_the_others_say_why(
    registry: mmplug.Registry, tmp_path: Path
) -> None:
    encoders = {
        "text": {**FROZEN["text"], "freeze": False},
        "image": {**FROZEN["image"], "augment": True},
        "audio": {"name": "mel-cnn", "max_seconds": 0.25, "n_mels": 16, "channels": [8]},
    }
    plan = plan_feature_cache(
        build(registry, encoders), str(tmp_path), limit_gb=1, precision="fp32", device=CPU
    )
    assert plan.cache is None
    assert "trainable parameters" in plan.reasons["text"]
    assert "deterministic_preprocess" in plan.reasons["image"]  # augments
    assert "trainable parameters" in plan.reasons["audio"]
    frozen = build(registry)
    plan = plan_feature_cache(frozen, str(tmp_path), limit_gb=1, precision="fp32", device=CPU)
    assert plan.cache is not None and sorted(plan.cache.keys) == ["image", "text"]
    assert not plan.reasons and frozen.training  # the model's mode is left as it was
    assert plan.cache.keys["text"].tokens is False  # concat reads pooled only
    off = plan_feature_cache(frozen, "off", limit_gb=1, precision="fp32", device=CPU)
    assert off.cache is None and set(off.reasons) == {"image", "text"}


def test_a_submodule_left_in_training_mode_keeps_an_encoder_out(
    registry: mmplug.Registry, tmp_path: Path
) -> None:
    model = build(registry)
    encoder = model.encoders["image"]
    encoder._frozen_modules = ("backbone",)  # frozen in part: the encoder itself still trains
    plan = plan_feature_cache(model, str(tmp_path), limit_gb=1, precision="fp32", device=CPU)
    assert plan.cache is not None and list(plan.cache.keys) == ["text"]
    assert "part of it (itself) stays in training mode" in plan.reasons["image"]


# -- batches with outputs already known ------------------------------------------------------


def loaded_batches(model: MultimodalModel, data: Path, features: Any) -> list[Any]:
    pipeline = Pipeline.from_model(model)
    manifest = read_labelled_manifest(data / "train.jsonl", "label")
    section = DataConfig(train=str(data / "train.jsonl"), columns={"text": "caption"})
    dataset = ManifestDataset.from_config(manifest, pipeline, section, missing="error")
    dataset.features = features
    collate = Collate(pipeline, train=True, rows=dataset)
    return [collate([dataset[index] for index in range(start, start + 6)]) for start in (0, 6)]


@pytest.mark.parametrize("fusion", ["concat", "tokens"])
def test_known_and_computed_rows_give_what_encoding_all_gives(
    registry: mmplug.Registry, data: Path, tmp_path: Path, fusion: str
) -> None:
    model = build(registry)
    if fusion == "tokens":
        model.fusion.uses_tokens = True  # keep tokens, as a fusion attending over them does
    model.eval()
    plan = plan_feature_cache(model, str(tmp_path), limit_gb=1, precision="fp32", device=CPU)
    assert plan.cache is not None
    [plain, _] = loaded_batches(model, data, None)
    with torch.no_grad():
        expected = model.encode(plain.batch)
        [first, _] = loaded_batches(model, data, plan.cache)  # all misses: written
        assert set(first.batch.encoded) == {"image", "text"}
        model.encode(first.batch)
        for row in (1, 4):  # forget two entries: those rows are encoded again
            for entry in first.batch.encoded["image"].entries[row : row + 1]:
                plan.cache.store.path(entry).unlink()
        [mixed, _] = loaded_batches(model, data, plan.cache)
        known = mixed.batch.encoded["image"].known
        assert known.tolist() == [True, False, True, True, False, True]
        assert len(mixed.batch.inputs["image"]["pixels"]) == 2  # only those were loaded
        got = model.encode(mixed.batch)
    for key in ("image", "text"):
        torch.testing.assert_close(got[key].pooled, expected[key].pooled)
        if fusion == "tokens" and key == "text":
            assert got[key].tokens is not None and expected[key].tokens is not None
            length = expected[key].tokens.shape[1]
            mask = expected[key].mask
            assert torch.equal(got[key].mask[:, :length], mask)
            assert not got[key].mask[:, length:].any()
            # padded tokens are whatever the encoder made of padding: only real ones count
            real = got[key].tokens[:, :length][mask]
            torch.testing.assert_close(real, expected[key].tokens[mask])


def test_modality_dropout_keeps_known_rows_and_inputs_in_step(
    registry: mmplug.Registry, data: Path, tmp_path: Path
) -> None:
    model = build(registry).eval()
    plan = plan_feature_cache(model, str(tmp_path), limit_gb=1, precision="fp32", device=CPU)
    with torch.no_grad():
        [batch, _] = loaded_batches(model, data, plan.cache)
        model.encode(batch.batch)  # fills the cache
        first = next(iter(plan.cache.store.entries()))
        os.unlink(first.path)  # one row unknown again
        [loaded, _] = loaded_batches(model, data, plan.cache)
        torch.manual_seed(3)
        dropped = drop_modalities(loaded.batch, 0.5)
        assert not all(bool(p.all()) for p in dropped.present.values())  # something dropped
        got = model.encode(dropped)
        torch.manual_seed(3)
        [plain, _] = loaded_batches(model, data, None)
        expected = model.encode(drop_modalities(plain.batch, 0.5))
    for key in ("image", "text"):
        torch.testing.assert_close(got[key].pooled, expected[key].pooled)


# -- training -------------------------------------------------------------------------------


def test_training_with_the_cache_gives_the_metrics_of_training_without(
    registry: mmplug.Registry, data: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    without = mmplug.train(
        config(data, "off"), out=tmp_path / "off", registry=registry, reporter=QUIET
    )
    assert not cache.exists()
    filling = mmplug.train(
        config(data, cache), out=tmp_path / "fill", registry=registry, reporter=QUIET
    )
    stored = entries(cache)
    assert len(stored) == 2 * (24 + 8)  # text and image, train and val rows
    reading = mmplug.train(
        config(data, cache), out=tmp_path / "read", registry=registry, reporter=QUIET
    )
    assert entries(cache) == stored  # nothing new: every row was a hit
    for run in (filling, reading):
        for line, expected in zip(metrics(run), metrics(without), strict=True):
            assert line.keys() == expected.keys()
            for name, value in expected.items():
                assert line[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_with_every_encoder_cached_no_file_is_loaded(
    registry: mmplug.Registry, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    mmplug.train(config(data, cache), out=tmp_path / "fill", registry=registry, reporter=QUIET)
    loads: list[str] = []
    preprocessed: list[int] = []
    spec = registry.get("modality", "image")
    modality = type(spec.load_factory()())
    original = modality.load

    def counting(self: Any, value: Any, **kwargs: Any) -> Any:
        loads.append(value)
        return original(self, value, **kwargs)

    monkeypatch.setattr(modality, "load", counting)
    original_collate = Pipeline.collate

    def collate(self: Pipeline, samples: Any, **kwargs: Any) -> Any:
        preprocessed.append(sum(len(sample) for sample in samples))
        return original_collate(self, samples, **kwargs)

    monkeypatch.setattr(Pipeline, "collate", collate)
    mmplug.train(config(data, cache), out=tmp_path / "read", registry=registry, reporter=QUIET)
    assert loads == [] and set(preprocessed) == {0}  # no key left to load or preprocess


def test_the_run_log_says_what_is_cached_and_why_not(
    registry: mmplug.Registry, data: Path, tmp_path: Path
) -> None:
    lines: list[str] = []

    class Log(Reporter):
        def log(self, message: str) -> None:
            lines.append(message)

    given = config(data, tmp_path / "cache", epochs=1)
    given["model"]["encoders"] = {**FROZEN, "text": {**FROZEN["text"], "freeze": False}}
    mmplug.train(given, out=tmp_path / "run", registry=registry, reporter=Log(quiet=True))
    assert f"feature cache ({tmp_path / 'cache' / 'features' / 'v1'}): caching image" in lines
    assert any(line.startswith("feature cache: not text: it has trainable") for line in lines)
    # the first run computes every training row's image output; training again finds them
    assert "feature cache, epoch 1: 0 of 24 outputs found, 24 to encode and write" in lines
    lines.clear()
    mmplug.train(given, out=tmp_path / "again", registry=registry, reporter=Log(quiet=True))
    assert "feature cache, epoch 1: 24 of 24 outputs found, 0 to encode and write" in lines


@pytest.mark.parametrize(("written", "meant"), [("off", "off"), ("on", "auto"), ("'off'", "off")])
def test_off_in_yaml_means_off(written: str, meant: str) -> None:
    """YAML 1.1 reads a bare ``off`` as false: it still turns the cache off."""
    import yaml

    from mmplug.model.sections import TrainConfig

    given = yaml.safe_load(f"feature_cache: {written}")
    assert TrainConfig.model_validate(given).feature_cache == meant


def test_writers_killed_mid_write_leave_only_whole_entries(tmp_path: Path) -> None:
    """Two processes write the same entries at once, and one is killed with SIGKILL while it
    writes: every entry there is whole, and no staging file is taken for one."""
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    writer = (
        "import sys, torch\n"
        "from mmplug.data.feature_cache import FeatureStore\n"
        "store = FeatureStore(sys.argv[1], 10**12)\n"
        "for index in range(100000):\n"
        "    n = index % 300\n"
        "    store.put(f'{n:064x}', {'pooled': torch.full((4096,), float(n))})\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", writer, str(tmp_path)]) for _ in range(2)]
    store = FeatureStore(tmp_path, limit_bytes=10**12)
    deadline = time.monotonic() + 60
    while store.usage()[0] < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    for process in writers:
        process.send_signal(signal.SIGKILL)
        process.wait()
    found = list(store.entries())
    assert len(found) >= 50
    for item in found:
        tensors = load_file(item.path)  # whole: a torn entry would not load
        assert torch.equal(tensors["pooled"], torch.full((4096,), float(int(item.name[:64], 16))))
    assert store.usage()[0] == len(found)  # staging files are not entries


def test_a_caption_that_starts_with_a_tilde_is_a_value_not_a_path(tmp_path: Path) -> None:
    key = CachedKey("f" * 64, tokens=False)
    assert key.entry("~nobody-here likes cats", tmp_path) is not None
    assert key.entry("~50 people on a bus", tmp_path) != key.entry("~51 people", tmp_path)


def test_a_file_replaced_with_its_modification_time_kept_is_another_entry(
    tmp_path: Path,
) -> None:
    """As ``cp -p``, ``rsync -t`` or ``tar x`` replace a file: same size, same mtime."""
    key = CachedKey("f" * 64, tokens=False)
    path = tmp_path / "a.wav"
    path.write_bytes(b"one")
    stat = path.stat()
    first = key.entry("a.wav", tmp_path)
    replacement = tmp_path / "new.wav"
    replacement.write_bytes(b"two")
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, path)
    assert path.stat().st_mtime_ns == stat.st_mtime_ns and path.stat().st_size == stat.st_size
    assert key.entry("a.wav", tmp_path) != first


def test_clearing_the_cache_leaves_other_files_alone(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, limit_bytes=10**9)
    store.put("ab" * 32, {"pooled": torch.zeros(2)})
    (tmp_path / "features" / "mine.npy").write_bytes(b"a user's own file")
    assert store.clear() == 1
    assert (tmp_path / "features" / "mine.npy").exists() and not store.folder.exists()
