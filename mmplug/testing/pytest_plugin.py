"""mmplug's pytest plugin, loaded by pytest wherever mmplug is installed (group ``pytest11``).

It gives plugin authors:

- a report header naming mmplug, its plugin API and the plugin distributions installed;
- the fixture ``mmplug_host``: the installed plugins loaded into a fresh plugin manager and
  registry for one test (nothing shared with other tests or with the process-wide
  ``mmplug.plugins.loading.default_host``);
- assertion rewriting for :mod:`mmplug.testing.checks`.

The conformance checks themselves come from :class:`mmplug.testing.Conformance`. Disable the
plugin with ``pytest -p no:mmplug``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

pytest.register_assert_rewrite("mmplug.testing.checks")

if TYPE_CHECKING:
    from mmplug.plugins.host import PluginHost


def pytest_report_header(config: pytest.Config) -> list[str]:
    from mmplug import API_VERSION, __version__
    from mmplug.plugins.loading import discover

    dists = sorted({f"{p.distribution} {p.version}" for p in discover()})
    return [
        f"mmplug {__version__} (plugin API {API_VERSION}), plugins: {', '.join(dists) or 'none'}"
    ]


@pytest.fixture
def mmplug_host() -> PluginHost:
    """The installed plugins, loaded afresh for this test."""
    from mmplug.plugins.loading import load_plugins

    return load_plugins()
