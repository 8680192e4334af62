"""Data: manifests (``manifest``), and the pipeline from a manifest row or a Python sample to
a batch (``pipeline``), which data-loader workers run without the model."""
