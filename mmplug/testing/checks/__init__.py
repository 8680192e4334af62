"""The conformance checks, one function per check, grouped by kind in :data:`CHECKS`.

Each component check takes a :class:`~mmplug.testing.Case` (a component and a param set),
builds the component afresh through its registered factory, exercises one promise of the
interface, and raises ``AssertionError`` naming the component and what was expected
against what was found. :data:`PLUGIN_CHECKS` take an entry-point module's name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mmplug.kinds import KINDS
from mmplug.testing.checks import encoder, fusion, head, modality, plugin
from mmplug.testing.checks.common import check_constructor_defaults, check_params_round_trip_json

if TYPE_CHECKING:
    from mmplug.testing import Case

CaseCheck = Callable[["Case"], None]

_EVERY_KIND: dict[str, CaseCheck] = {
    "params_json": check_params_round_trip_json,
    "constructor_defaults": check_constructor_defaults,
}

#: kind -> check name -> check, for every kind of :data:`mmplug.kinds.KINDS`.
CHECKS: dict[str, dict[str, CaseCheck]] = dict(
    zip(
        KINDS,
        (
            {
                "loads_samples": modality.check_modality_loads_samples,
                "rejects_bad_values": modality.check_modality_rejects_bad_values,
            },
            {
                "output_shapes": encoder.check_encoder_output_shapes,
                "finite": encoder.check_encoder_finite,
                "batch_independent": encoder.check_encoder_batch_independent,
                "deterministic": encoder.check_encoder_deterministic,
                "gradients": encoder.check_encoder_gradients,
                "freeze": encoder.check_encoder_freeze,
                "deterministic_preprocess": encoder.check_encoder_deterministic_preprocess,
                "preprocessor": encoder.check_encoder_preprocessor,
            },
            {
                "output_shape": fusion.check_fusion_output_shape,
                "finite": fusion.check_fusion_finite,
                "key_order": fusion.check_fusion_key_order,
                "batch_independent": fusion.check_fusion_batch_independent,
                "absent_has_no_influence": fusion.check_fusion_absent_has_no_influence,
                "all_absent_finite": fusion.check_fusion_all_absent_finite,
                "gradients": fusion.check_fusion_gradients,
                "float64": fusion.check_fusion_float64,
            },
            {
                "output_shape": head.check_head_output_shape,
                "loss": head.check_head_loss,
                "predict_and_metrics": head.check_head_predict_and_metrics,
                "task": head.check_head_task,
            },
        ),
        strict=True,
    )
)
for _checks in CHECKS.values():
    _checks.update(_EVERY_KIND)

#: Checks that run for a component's defaults only, not again for each variant, and why.
DEFAULTS_ONLY: dict[str, str] = {
    "constructor_defaults": "it compares the factory's signature with the params model's "
    "defaults, which no param set changes",
    "deterministic": "a variant's batch_independent passes the same samples through eval mode "
    "more than once, which shows any randomness",
}

#: check name -> check of an entry-point module (given by name).
PLUGIN_CHECKS: dict[str, Callable[[str], None]] = {
    "imports_no_torch": plugin.check_imports_no_torch
}

__all__ = ["CHECKS", "DEFAULTS_ONLY", "PLUGIN_CHECKS"]
