"""mmplug.weights: weight files read as data, and state dicts that don't fit explained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mmplug import ComponentError
from mmplug.model.weights import listing, load_checked, read_state_dict, strip_prefix


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_state_dict_round_trips_through_either_format(tmp_path: Path, suffix: str) -> None:
    source, target = _net(), _net()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), path)
    else:
        torch.save(source.state_dict(), path)
    load_checked(target, read_state_dict(path), source=str(path), target="net")
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_files_that_are_not_state_dicts_are_named(tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match=r"weights file not found: '.*absent\.pt'"):
        read_state_dict(tmp_path / "absent.pt")
    (tmp_path / "junk.safetensors").write_text("not tensors")
    with pytest.raises(ComponentError, match=r"can't read weights file '.*junk\.safetensors'"):
        read_state_dict(tmp_path / "junk.safetensors")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ComponentError, match="holds a list, not a state dict"):
        read_state_dict(tmp_path / "list.pt")
    torch.save({"epoch": 3, "model": {}}, tmp_path / "ckpt.pt")
    with pytest.raises(ComponentError, match="epoch, model are not tensors"):
        read_state_dict(tmp_path / "ckpt.pt")


def test_pickled_code_is_never_run(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    torch.save({"weight": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ComponentError, match="can't read weights file"):
        read_state_dict(tmp_path / "evil.pt")


def test_mismatches_are_listed_by_kind_and_capped() -> None:
    state = dict(_net().state_dict())
    del state["0.weight"]
    state["2.weight"] = torch.zeros(3, 4)
    for index in range(10):
        state[f"extra.{index}"] = torch.zeros(1)
    with pytest.raises(ComponentError) as info:
        load_checked(_net(), state, source="weights file 'w.pt'", target="net", hint="(hint)")
    lines = str(info.value).splitlines()
    assert lines[0] == "weights file 'w.pt' doesn't fit net (hint):"
    assert lines[1] == "  missing (1): 0.weight"
    assert lines[2].startswith("  unexpected (10): extra.0; extra.1;")
    assert lines[2].endswith("extra.7, ... and 2 more")
    assert lines[3] == "  shape mismatch (1): 2.weight [3, 4] in the file, [2, 4] in net"


def test_checkpoints_without_batchnorm_step_counters_load() -> None:
    source, target = _net(), _net()
    state = {k: v for k, v in source.state_dict().items() if "num_batches_tracked" not in k}
    load_checked(target, state, source="old", target="net")
    torch.testing.assert_close(target[1].running_var, source[1].running_var)


def test_prefix_is_stripped_only_when_every_key_has_it() -> None:
    assert strip_prefix({"module.a": torch.zeros(1)}, "module.").keys() == {"a"}
    assert strip_prefix({"module.a": torch.zeros(1), "b": torch.zeros(1)}, "module.").keys() == {
        "module.a",
        "b",
    }
    assert listing(["a", "b"]) == "a, b"
