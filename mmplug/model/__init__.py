"""Models: the component interfaces, reading and resolving configs, building a model by name,
the running model (absence, modality dropout), heads and their tasks, saving and loading."""
