"""mmplug-demo registers no component, only a command: the kit checks its entry point."""

from __future__ import annotations

from mmplug.testing import Check, Conformance

conformance = Conformance("mmplug-demo")


@conformance.parametrize()
def test_conformance(check: Check) -> None:
    check()


def test_only_the_entry_point_is_checked() -> None:
    assert [check.id for check in conformance.checks()] == ["plugin:demo:imports_no_torch"]
