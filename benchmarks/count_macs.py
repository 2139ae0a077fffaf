"""Multiply-adds per image of the shipped VAE and the benchmarked classifiers, from layer shapes.

    python benchmarks/count_macs.py
"""

from __future__ import annotations

from typing import Callable

import torch
from _common import cifar_resnet18
from torch import nn

from varmixup_aug import load_pretrained_vae
from varmixup_aug.harness import FastCifarNet, SmallCNN


def count_macs(module: nn.Module, run: Callable[[], object]) -> int:
    """Multiply-adds of the convolution and linear layers that ``run`` calls, for a batch of one."""
    total = 0

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += output[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.ConvTranspose2d):
            total += inputs[0][0].numel() * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return total


def main() -> None:
    vae = load_pretrained_vae("cifar10")

    rows = {
        "VAE decode (shipped cifar10)": count_macs(vae, lambda: vae.decode(torch.zeros(1, vae.config.latent_dim))),
        "VAE encode (shipped cifar10)": count_macs(vae, lambda: vae.encode(torch.rand(1, 3, 32, 32))),
    }
    for name, model in (("CIFAR ResNet-18", cifar_resnet18()), ("FastCifarNet", FastCifarNet()), ("SmallCNN", SmallCNN(10))):
        model.eval()
        rows[f"{name} forward"] = count_macs(model, lambda model=model: model(torch.rand(1, 3, 32, 32)))
    for name, macs in rows.items():
        print(f"{name:32s} {macs / 1e6:8.1f} M multiply-adds per 32x32 image")


if __name__ == "__main__":
    main()
