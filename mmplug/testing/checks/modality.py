"""Checks of a modality: its samples load (and pickle), bad values are ``DataError``s."""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING

from mmplug.errors import DataError
from mmplug.model.interfaces import Modality
from mmplug.testing.checks.common import build

if TYPE_CHECKING:
    from mmplug.testing import Case


def check_modality_loads_samples(case: Case) -> None:
    """Every sample loads, and the raw objects pickle (they travel to data-loader workers)."""
    if case.spec.name not in case.kit.samples:  # samples_for() looks up the bare name too
        import pytest

        pytest.skip(f"no samples given for modality {case.spec.name!r}")
    modality = build(case, Modality)
    for index, value in enumerate(case.kit.samples_for(case.spec.name)):
        try:
            raw = modality.load(value)
        except Exception as exc:
            raise AssertionError(f"{case.who()}: sample {index} did not load: {exc}") from exc
        try:
            pickle.dumps(raw)
        except Exception as exc:
            raise AssertionError(
                f"{case.who()}: the raw object of sample {index} ({type(raw).__name__}) can't be "
                f"pickled, so it can't reach data-loader workers: {exc}"
            ) from exc


def check_modality_rejects_bad_values(case: Case) -> None:
    """Bad values are refused with the project's own error (``DataError``), never a bare one."""
    modality = build(case, Modality)
    bad = [object(), *case.kit.bad_values.get(case.spec.name, ())]
    for value in bad:
        try:
            modality.load(value)
        except DataError as exc:
            assert str(exc), f"{case.who()}: rejected {value!r} with an empty message"
            continue
        except Exception as exc:
            raise AssertionError(
                f"{case.who()}: load({value!r}) raised {type(exc).__name__}: {exc}; expected "
                "mmplug.DataError naming the value"
            ) from exc
        raise AssertionError(f"{case.who()}: load({value!r}) succeeded; expected a DataError")
