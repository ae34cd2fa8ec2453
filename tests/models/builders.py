"""Model builders as users write them: functions that return a module (tests/models/test_factory.py)."""

from torch import nn


def tiny_net(in_channels: int, num_classes: int, hidden: int = 4) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(hidden, num_classes),
    )


def passes_on(*, weights=None, **kwargs) -> nn.Module:
    """As torchvision's builders: everything but the weights goes to the architecture."""
    return _Arch(**kwargs)


class _Arch(nn.Sequential):
    def __init__(self, num_classes: int = 1000):
        super().__init__(nn.Flatten(), nn.Linear(64, num_classes))


def not_a_module() -> list:
    return [nn.Linear(2, 2)]
