"""Small classifiers used by the demo, the benchmarks and the evaluation scripts."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from varmixup_aug import VarMixupError
from varmixup_aug._checks import check_int, parse_mean_std

__all__ = ["SmallCNN", "PreActResNet", "PreActBlock", "FastCifarNet", "Normalize", "CIFAR10_MEAN", "CIFAR10_STD"]


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


class _ConvGroup(nn.Module):
    """conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU. ``(B, cin, H, W) -> (B, cout, H/2, W/2)``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm1 = _frozen_scale_bn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = _frozen_scale_bn(cout)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.GELU()
        for conv in (self.conv1, self.conv2):
            _identity_init(conv)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


def _frozen_scale_bn(width: int) -> nn.BatchNorm2d:
    # Running statistics move 40% of the way per step; the scale stays 1.
    bn = nn.BatchNorm2d(width, momentum=0.4, eps=1e-12)
    bn.weight.requires_grad_(False)
    return bn


def _identity_init(conv: nn.Conv2d) -> None:
    # The first min(cin, cout) filters start as identities; the rest keep the default init.
    w = conv.weight.data
    k = min(w.shape[0], w.shape[1])
    nn.init.dirac_(w[:k])


class FastCifarNet(nn.Module):
    """A fast CIFAR-10 network of airbench94's shape (Keller Jordan), taking images in ``[0, 1]``.

    Layout: ``Normalize`` -> frozen 2x2 patch-whitening conv (``2 * 4 * channels`` filters, set by
    :meth:`init_whitening`) -> GELU -> three conv groups (conv3x3, max-pool 2, BN, GELU, conv3x3, BN,
    GELU; widths 64, 256, 256; BN scales frozen at 1) -> global max-pool -> linear (no bias) times
    ``head_scale``.

    Shapes: ``(B, channels, H, W)`` float in ``[0, 1]`` -> logits ``(B, num_classes)``; 32x32
    inputs give 31 -> 15 -> 7 -> 3 -> 1 spatially. Call :meth:`init_whitening` with training
    images before training (a loaded checkpoint restores the whitening weights).

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> net = FastCifarNet(widths=(8, 16, 16))
        >>> net.init_whitening(torch.rand(16, 3, 32, 32))
        >>> net(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> FastCifarNet(**net.config()).config() == net.config()
        True
    """

    def __init__(
        self,
        num_classes: int = 10,
        channels: int = 3,
        widths: tuple[int, ...] = (64, 256, 256),
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
        head_scale: float = 1 / 9,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 1 or min(widths) < 1:
            raise VarMixupError(f"widths must be a non-empty sequence of positive ints, got {widths!r}")
        self._config = {"num_classes": int(num_classes), "channels": int(channels), "widths": list(widths),
                        "mean": [float(m) for m in mean], "std": [float(s) for s in std],
                        "head_scale": float(head_scale)}
        self.normalize = Normalize(tuple(mean), tuple(std))
        self.whiten = nn.Conv2d(channels, 2 * channels * 4, 2, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.act = nn.GELU()
        cins = (self.whiten.out_channels, *widths[:-1])
        self.groups = nn.Sequential(*(_ConvGroup(c, w) for c, w in zip(cins, widths, strict=True)))
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        self.head_scale = float(head_scale)

    def config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-serialisable (stored in checkpoints)."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    @torch.no_grad()
    def init_whitening(self, images: Tensor, eps: float = 5e-4) -> None:
        """Set the frozen 2x2 whitening filters from the patch covariance of ``images``.

        Args:
            images: ``(N, C, H, W)`` float in ``[0, 1]`` or ``uint8``; a few thousand are enough.
            eps: added to the eigenvalues before the inverse square root.
        """
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        x = self.normalize(x)
        c = x.shape[1]
        patches = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * 4).double()
        cov = patches.T @ patches / patches.shape[0]
        eigval, eigvec = torch.linalg.eigh(cov)
        filters = (eigvec.T / (eigval + eps).sqrt()[:, None]).reshape(c * 4, c, 2, 2).float()
        self.whiten.weight.copy_(torch.cat([filters, -filters]))

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.whiten(self.normalize(x)))
        x = self.groups(x)
        x = torch.amax(x, dim=(2, 3))
        return self.head(x) * self.head_scale
