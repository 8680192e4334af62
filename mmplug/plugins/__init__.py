"""The plugin system: the hooks (``hookspecs``), the registry of components (``registry``),
their params models (``params``), discovery and loading (``loading``) and core's own default
plugin (``builtin``). Nothing here imports torch."""
