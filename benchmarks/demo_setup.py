"""The demo's fused model and a generated demo dataset, shared by the benchmark scripts
(bert-tiny with a fitted vocabulary, resnet18 at 32 px, mel-cnn, concat; see docs/demo.md).
"""

from __future__ import annotations

from pathlib import Path

import mmplug
from mmplug.data.manifest import read_manifest
from mmplug.data.pipeline import ManifestDataset
from mmplug.model.sections import DataConfig
from mmplug.model.tasks import ClassificationTask
from mmplug_demo.dataset import CLASSES, generate
from mmplug_demo.run import KEYS, demo_config


def demo_setup(folder: Path, rows: int) -> tuple[mmplug.MultimodalModel, ManifestDataset]:
    """The fused demo model (encoders fitted) and its labelled training split of ``rows``."""
    data = generate(folder, train=rows, val=0, test=0, image_size=32)
    config = demo_config(KEYS, folder, fusion="concat", epochs=1, seed=0)
    config["model"]["head"]["num_classes"] = len(CLASSES)
    model = mmplug.build_model({"model": config["model"]})
    manifest = read_manifest(data.train)
    dataset = ManifestDataset.from_config(
        manifest,
        mmplug.Pipeline.from_model(model),
        DataConfig(train=data.train, columns=config["data"]["columns"]),
        task=ClassificationTask(tuple(CLASSES)),
        missing="error",
    )
    model.fit_encoders([dataset[i].values for i in range(len(dataset))])  # type: ignore[union-attr]
    return model, dataset
