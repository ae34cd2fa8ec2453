"""A teacher the user already trained: what model.checkpoint holds is told apart by its contents."""

from __future__ import annotations

import pytest
import torch

from kedro_edge.errors import ConfigError
from kedro_edge.models import ResidualCNN
from kedro_edge.models.sources import SourceKind, TeacherSpec, kind_of, load_checkpoint
from tests.conftest import TINY_WIDTHS

SPEC = TeacherSpec(kwargs={"widths": list(TINY_WIDTHS)})
SHAPE = (1, 1, 8, 8)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda m: m.state_dict(),
        lambda m: {"epoch": 7, "state_dict": m.state_dict(), "optimizer": {"lr": 0.1}},
        lambda m: {"model": {f"module.{k}": v for k, v in m.state_dict().items()}},  # DataParallel
    ],
    ids=["state_dict", "checkpoint", "module_prefix"],
)
def test_weights_load_into_class_path_unchanged(teacher, splits, tmp_path, wrap):
    path = tmp_path / "weights.pth"
    torch.save(wrap(teacher), path)
    loaded, kind = load_checkpoint(SPEC, path, splits.input_shape, splits.num_classes)
    assert kind is SourceKind.STATE_DICT
    assert _same_weights(loaded, teacher)
    x = torch.from_numpy(splits.x("test"))
    assert torch.equal(loaded(x).argmax(1), teacher(x).argmax(1))


def test_a_whole_saved_module_is_used_as_it_is(teacher, splits, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(teacher, path)
    loaded, kind = load_checkpoint(TeacherSpec(class_path="torch.nn.Identity"), path, SHAPE, 10)
    assert kind is SourceKind.MODULE and isinstance(loaded, ResidualCNN)  # class_path not used
    assert _same_weights(loaded, teacher)


def test_keys_that_do_not_match_name_the_file_and_the_first_keys(teacher, tmp_path):
    path = tmp_path / "other.pth"
    torch.save(ResidualCNN(in_channels=1, num_classes=10, widths=(8, 16, 32)).state_dict(), path)
    with pytest.raises(ConfigError) as err:
        load_checkpoint(SPEC, path, SHAPE, 10)
    message = str(err.value)
    assert "\n" not in message
    fit = f"parameter 'model.checkpoint': {path} does not fit kedro_edge.models.ResidualCNN: "
    assert message.startswith(fit)
    assert "missing none, unexpected features.4.0.weight, " in message and "more)" in message


def test_same_keys_other_shapes_name_the_file(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save(ResidualCNN(in_channels=1, num_classes=10, widths=(12, 16)).state_dict(), path)
    shapes = r"shapes differ: features.0.0.weight \(12, 1, 3, 3\) \(expected \(8, 1, 3, 3\)\)"
    with pytest.raises(ConfigError, match=rf"wide.pth does not fit .*: {shapes}"):
        load_checkpoint(SPEC, path, SHAPE, 10)


def test_graph_formats_are_recognised_and_refused_in_one_line(teacher, tmp_path):
    x = torch.zeros(SHAPE)
    torch.jit.save(torch.jit.trace(teacher, x), tmp_path / "model.ts")
    torch.export.save(torch.export.export(teacher, (x,)), tmp_path / "model.pt2")
    assert kind_of(tmp_path / "model.ts") is SourceKind.TORCHSCRIPT
    assert kind_of(tmp_path / "model.pt2") is SourceKind.EXPORTED_PROGRAM
    with pytest.raises(ConfigError, match=r"model.ts is a torchscript, a graph without its Python module"):
        load_checkpoint(SPEC, tmp_path / "model.ts", SHAPE, 10)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "does not exist"),
        (b"not a torch file", "is not a PyTorch file"),
        ({"epoch": 3, "lr": 0.1}, "holds a dict without a state dict (keys epoch, lr"),
        ([torch.zeros(2)], "holds a list, not a state dict"),
    ],
)
def test_bad_files_are_one_line_naming_the_file(tmp_path, content, needle):
    path = tmp_path / "bad.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(ConfigError) as err:
        load_checkpoint(SPEC, path, SHAPE, 10)
    assert str(err.value).startswith(f"parameter 'model.checkpoint': {path}") and needle in str(err.value)
