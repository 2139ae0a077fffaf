"""The whole path on real CIFAR-10 from ../shared/data: train a small VAE, then VarMixup batches."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import ToTensor

from varmixup_aug import VarMixupCollate, VarMixupDataset, load_vae, save_vae
from varmixup_aug.harness import TrainVAEConfig, evaluate_vae, load_tensor_dataset, open_image_dataset, train_vae


class TestRealCIFAR10Path:
    def test_small_vae_learns_and_feeds_a_dataloader(self, cifar_root, cifar_test_images, tmp_path):
        train_x, _ = load_tensor_dataset(open_image_dataset(cifar_root, "train"), limit=1024, progress=False)
        eval_x = cifar_test_images[0][:128]
        cfg = TrainVAEConfig(out=str(tmp_path / "vae.safetensors"), latent_dim=32, widths=(16, 32), epochs=2,
                             batch_size=64, lr=3e-3, checkpoint_every=1000, device="cpu")
        untrained = train_vae(TrainVAEConfig(**{**cfg.__dict__, "out": str(tmp_path / "u.safetensors"),
                                                 "max_steps": 1}), train_x, eval_x, progress=False)
        report = train_vae(cfg, train_x, eval_x, progress=False)
        assert report["mse"] < 0.8 * untrained["mse"]  # 32 steps on real images already help
        vae = load_vae(cfg.out)
        assert abs(evaluate_vae(vae, eval_x)["psnr_db"] - report["psnr_db"]) < 1e-4

        # The README's one-line change: ImageFolder + ToTensor + workers + VarMixupCollate.
        train_set = ImageFolder(str(cifar_root / "train"), transform=ToTensor())
        loader = DataLoader(train_set, batch_size=128, shuffle=True, num_workers=2,
                            collate_fn=VarMixupCollate(load_vae(cfg.out), num_classes=10, seed=0))
        x, t = next(iter(loader))
        assert x.shape == (128, 3, 32, 32) and x.dtype == torch.float32 and t.shape == (128, 10)
        assert torch.allclose(t.sum(1), torch.ones(128)) and 0 <= x.min() and x.max() <= 1

    def test_latent_cache_on_real_images(self, cifar_test_images, tmp_path):
        from _helpers import tiny_conv_vae

        vae = tiny_conv_vae(image_size=32, latent_dim=16, widths=(8, 16))
        save_vae(vae, tmp_path / "v.safetensors")
        images, labels = cifar_test_images
        data = torch.utils.data.TensorDataset(images[:64], labels[:64])  # uint8 images are scaled to [0, 1]
        ds = VarMixupDataset(data, load_vae(tmp_path / "v.safetensors"), cache_path=tmp_path / "cache", progress=False)
        mu, _ = vae.encode(images[:64].float() / 255)
        torch.testing.assert_close(ds.mu, mu)
