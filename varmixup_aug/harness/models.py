"""Small classifiers used by the demo, the benchmarks and the evaluation scripts."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_int, parse_mean_std
from .._errors import VarMixupError

__all__ = ["SmallCNN", "PreActResNet", "PreActBlock", "Normalize", "CIFAR10_MEAN", "CIFAR10_STD"]


class SmallCNN(nn.Module):
    """A compact CNN for 32x32 images: three conv stages with batch norm and a linear head.

    Shapes: ``(B, C, 32, 32)`` -> logits ``(B, num_classes)``.
    """

    def __init__(self, num_classes: int = 10, channels: int = 3, width: int = 32) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(stage(channels, width), stage(width, 2 * width), stage(2 * width, 4 * width))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with ``mean`` and ``std`` as buffers saved with the model.

    Shapes: ``(B, C, H, W)`` in and out. Putting it inside the classifier lets attacks and
    Mixup Inference work on pixel-space inputs in ``[0, 1]``.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al., 2016): BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus a shortcut.

    Shapes: ``(B, cin, H, W)`` -> ``(B, cout, H / stride, W / stride)``. The shortcut is a 1x1
    convolution on the pre-activated input when the shape changes, the identity otherwise.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
                         if stride != 1 or cin != cout else None)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.act(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    """A small pre-activation ResNet for 32x32 images, with its input normalisation inside.

    Layout: ``Normalize`` -> 3x3 stem conv (``widths[0]``) -> one stage per width with
    ``blocks_per_stage`` :class:`PreActBlock` (stride 1 for the first stage, 2 after) ->
    BN-ReLU -> global average pool -> linear. The default ``widths=(32, 64, 128)`` with one
    block per stage has about 0.3 M parameters.

    The model takes pixel-space images in ``[0, 1]`` (it normalises them itself), so
    ``torchattacks`` and :class:`MIPredictor` can use it directly.

    Shapes: ``(B, channels, H, W)`` float in ``[0, 1]`` -> logits ``(B, num_classes)``.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> model = PreActResNet(num_classes=10)
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> PreActResNet(**model.config()).config() == model.config()
        True
    """

    def __init__(
        self,
        num_classes: int = 10,
        channels: int = 3,
        widths: tuple[int, ...] = (32, 64, 128),
        blocks_per_stage: int = 1,
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or any(w < 1 for w in widths):
            raise VarMixupError(f"widths must be a non-empty sequence of positive ints, got {widths!r}")
        check_int("blocks_per_stage", blocks_per_stage)
        check_int("num_classes", num_classes, minimum=2)
        mean_t, std_t = (tuple(t.tolist()) for t in parse_mean_std((mean, std), channels, name="mean/std"))
        self._config = {"num_classes": num_classes, "channels": channels, "widths": list(widths),
                        "blocks_per_stage": blocks_per_stage, "mean": list(mean_t), "std": list(std_t)}
        self.normalize = Normalize(mean_t, std_t)
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        cin = widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks_per_stage):
                blocks.append(PreActBlock(cin, w, stride=2 if i > 0 and j == 0 else 1))
                cin = w
        self.stages = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(cin, num_classes))

    def config(self) -> dict[str, object]:
        """The constructor arguments, JSON-serialisable (stored in checkpoints)."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(self.normalize(x))))
