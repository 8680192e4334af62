"""Modality keys: the names a config gives its encoders (``text``, ``image``), which data,
fusions and the model's ``ModuleDict`` use.

A key is lowercase letters, digits and ``_``, starting with a letter, and must not be an
attribute of ``torch.nn.ModuleDict`` (``keys``, ``train``): the encoders live in one.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
# Attributes of torch.nn.ModuleDict (torch 2.9) that a key would collide with; listed here
# so validating never imports torch. Assembly checks again against the installed torch.
RESERVED_KEYS = frozenset(
    {
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "clear",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "items",
        "keys",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "pop",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "update",
        "values",
        "xpu",
        "zero_grad",
    }
)


def check_key(key: str) -> str:
    """``key`` if it can name a modality; else a ValueError saying why (pydantic reports it)."""
    if not _KEY_PATTERN.match(key):
        raise ValueError(
            f"invalid modality key {key!r}: use lowercase letters, digits and '_', "
            "starting with a letter"
        )
    if key in RESERVED_KEYS:
        raise ValueError(reserved_key_message(key))
    return key


def reserved_key_message(key: str) -> str:
    """Why ``key`` can't be a modality key: it names an attribute of torch's ModuleDict."""
    return f"modality key {key!r} is reserved (an attribute of torch's ModuleDict)"


ModalityKey = Annotated[str, AfterValidator(check_key)]
