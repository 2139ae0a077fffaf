"""The latent cache of VarMixupDataset: a fingerprint that is stable across processes and sound, reuse by a
second process and under DDP, concurrent builders, recovery from truncation, the disk check, shards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from _helpers import REPO, CountingVAE, IdentityVAE, tiny_conv_vae
from torch.utils.data import TensorDataset

from varmixup_aug import ConvVAE, VarMixupDataset, VarMixupError
from varmixup_aug._lock import file_lock

# A child process: builds an ImageFolder-backed VarMixupDataset and prints what it saw as JSON.
_CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import ToTensor
    from varmixup_aug import ConvVAE, VAEConfig, VarMixupDataset

    data, cache, ready, slow = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    torch.manual_seed(0)
    inner = ConvVAE(VAEConfig(image_size=8, latent_dim=4, widths=(4, 8))).eval()

    class Slow(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.calls, self.channels, self.image_size = inner, 0, 3, 8
        def encode(self, x):
            self.calls += 1
            time.sleep(slow)
            return self.inner.encode(x)
        def decode(self, z):
            return self.inner.decode(z)

    vae = Slow()
    if ready != "-":  # wait until every sibling is ready, so that they build at the same time
        Path(ready, f"{Path(cache).name}-{sys.argv[5]}").touch()
        while len(list(Path(ready).iterdir())) < int(sys.argv[6]):
            time.sleep(0.01)
    ds = VarMixupDataset(ImageFolder(data, transform=ToTensor()), vae, cache_path=cache, batch_size=4,
                         progress=False)
    print(json.dumps({"calls": vae.calls, "file": str(ds.cache_file), "mu": ds.mu.flatten().tolist()}))
""")


def _vae(seed: int = 0) -> ConvVAE:
    return tiny_conv_vae(seed=seed)


def _data(n: int = 20) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % 4)


def _folder(root: Path, n: int = 6) -> Path:
    """An ImageFolder of 8x8 BMPs (every file the same size) with one mtime for all, as a tar unpack gives."""
    from PIL import Image

    for i in range(n):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (30 * i, 255 - 30 * i, 7 * i)).save(root / f"c{i % 2}" / f"{i}.bmp")
    for path in root.rglob("*.bmp"):
        os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    return root


def _image_folder(root: Path, transform=None):
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import Compose, ToTensor

    return ImageFolder(str(root), transform=Compose([ToTensor(), *([transform] if transform else [])]))


def _child(data: Path, cache: Path, ready: str = "-", slow: float = 0.0, index: int = 0, count: int = 1,
           ) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(data), str(cache), ready, str(slow), str(index),
                             str(count)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _shards(ds: VarMixupDataset) -> list[Path]:
    return sorted(Path(f"{ds.cache_file}.shards").glob("shard-*.safetensors"))


class TestReuse:
    def test_processes_share_one_cache_of_an_image_folder(self, tmp_path):
        data, ready, cache = _folder(tmp_path / "data"), tmp_path / "ready", tmp_path / "cache"
        ready.mkdir()
        # Two builders at once: one takes the lock and encodes (slowly), the other waits for it and reuses.
        builders = [_result(p) for p in [_child(data, cache, str(ready), slow=0.5, index=i, count=2) for i in (0, 1)]]
        assert sorted(r["calls"] for r in builders) == [0, 2]  # 6 images in batches of 4, encoded once
        later = _result(_child(data, cache))  # a later process: opens the cache, encodes nothing
        assert later["calls"] == 0
        assert builders[0]["mu"] == builders[1]["mu"] == later["mu"]
        assert builders[0]["file"] == builders[1]["file"] == later["file"]
        assert len(list(cache.glob("*.safetensors"))) == 1

    def test_a_builder_waits_for_the_lock_until_its_timeout(self, tmp_path):
        first = VarMixupDataset(_data(), CountingVAE(_vae()), cache_path=tmp_path, progress=False)
        with file_lock(Path(f"{first.cache_file}.shards") / ".lock", timeout=0, what="a test holding the lock"):
            reader = CountingVAE(_vae())  # a finished cache is read without the lock
            VarMixupDataset(_data(), reader, cache_path=tmp_path, progress=False, lock_timeout=0)
            assert reader.encode_calls == 0
            first.cache_file.unlink()  # now it must be built again, while the lock is held
            vae, start = CountingVAE(_vae()), time.monotonic()
            with pytest.raises(VarMixupError, match=r"is locked by process \d+ on .*a test holding the lock.*after "
                                                    r"waiting 0\.3 s; it is building this latent cache.*lock_timeout"):
                VarMixupDataset(_data(), vae, cache_path=tmp_path, progress=False, lock_timeout=0.3)
            assert time.monotonic() - start >= 0.3 and vae.encode_calls == 0
        ds = VarMixupDataset(_data(), vae, cache_path=tmp_path, progress=False, lock_timeout=0.3)
        assert vae.encode_calls == 0 and torch.equal(ds.mu, first.mu)  # the manifest rebuilt from the shards
        with pytest.raises(VarMixupError, match="lock_timeout must be a number of seconds >= 0"):
            VarMixupDataset(_data(), _vae(), cache_path=tmp_path, progress=False, lock_timeout=-1)

    def test_after_the_build_items_come_from_the_memory_mapped_shards(self, tmp_path):
        import pickle

        built = VarMixupDataset(_data(), CountingVAE(_vae()), cache_path=tmp_path, batch_size=3, shard_bytes=200,
                                progress=False)
        assert len(_shards(built)) == 4 and len(built._mus) == 4  # 40 bytes an item: 5 items a shard
        opened = VarMixupDataset(_data(), CountingVAE(_vae()), cache_path=tmp_path, progress=False)
        mu, logvar = _vae().encode(_data().tensors[0])
        for ds in (built, opened, pickle.loads(pickle.dumps(built))):
            torch.testing.assert_close(ds.mu, mu)
            torch.testing.assert_close(ds.logvar, logvar)
            assert [ds[i][1] for i in (0, 7, -1)] == [0, 3, 3] and torch.equal(ds[-1][0].mu, ds.mu[19])
        with pytest.raises(IndexError, match="index 20 is out of range for 20 items"):
            built[20]
        with pytest.raises(VarMixupError, match="shard_bytes must be"):
            VarMixupDataset(_data(), _vae(), cache_path=tmp_path, shard_bytes=0, progress=False)

    def test_an_interrupted_build_resumes_from_its_finished_shards(self, tmp_path, monkeypatch):
        import varmixup_aug._dataset as dataset_module

        real, written = dataset_module.write_shard, []

        def dies_after_two(layout, fingerprint, start, *tensors):
            if len(written) == 2:
                raise KeyboardInterrupt
            written.append(start)
            real(layout, fingerprint, start, *tensors)

        monkeypatch.setattr(dataset_module, "write_shard", dies_after_two)
        with pytest.raises(KeyboardInterrupt):
            VarMixupDataset(_data(), CountingVAE(_vae()), cache_path=tmp_path, batch_size=5, shard_bytes=200,
                            progress=False)
        monkeypatch.setattr(dataset_module, "write_shard", real)
        vae = CountingVAE(_vae())
        ds = VarMixupDataset(_data(), vae, cache_path=tmp_path, batch_size=5, shard_bytes=200, progress=False)
        assert written == [0, 5] and vae.encode_calls == 2  # shards 10..15 and 15..20 only
        torch.testing.assert_close(ds.mu, _vae().encode(_data().tensors[0])[0])


def _gloo_rank(rank: int, world: int, init_file: str, data: str, cache: str, out: str) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        vae = CountingVAE(_vae())
        first = VarMixupDataset(_image_folder(Path(data)), vae, cache_path=cache, batch_size=2, shard_bytes=100,
                                progress=False)
        calls = vae.encode_calls
        again = VarMixupDataset(_image_folder(Path(data)), vae, cache_path=cache, batch_size=2, progress=False)
        Path(out, f"rank{rank}.json").write_text(json.dumps({
            "calls": calls, "again": vae.encode_calls - calls, "file": str(first.cache_file),
            "mu": first.mu.flatten().tolist(), "mu_again": again.mu.flatten().tolist()}))
        dist.barrier()  # neither rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


class TestDistributed:
    def test_two_gloo_ranks_agree_encode_their_shards_and_read_all(self, tmp_path):
        import torch.multiprocessing as mp

        data, out = _folder(tmp_path / "data", n=8), tmp_path / "out"
        out.mkdir()
        mp.spawn(_gloo_rank, args=(2, str(tmp_path / "pg"), str(data), str(tmp_path / "cache"), str(out)), nprocs=2)
        ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
        assert [r["calls"] for r in ranks] == [2, 2]  # 8 items, 2 per shard: 2 shards (2 batches) per rank
        assert [r["again"] for r in ranks] == [0, 0] and ranks[0]["file"] == ranks[1]["file"]
        expected = _vae().encode(torch.stack([img for img, _ in _image_folder(data)]))[0]
        for r in ranks:
            torch.testing.assert_close(torch.tensor(r["mu"]).view(8, 4), expected)
            assert r["mu_again"] == r["mu"]


class TestRecovery:
    @pytest.mark.parametrize("cut", ["header", "data", "empty"])
    def test_a_truncated_shard_is_ours_reported_and_encoded_again(self, tmp_path, cut):
        built = VarMixupDataset(_data(), CountingVAE(_vae()), cache_path=tmp_path, batch_size=5, shard_bytes=200,
                                progress=False)
        shard, expected = _shards(built)[1], built.mu.clone()
        del built  # its shards are mapped: truncating one in place under it would be a bus error
        size = {"header": 20, "data": shard.stat().st_size - 8, "empty": 0}[cut]
        shard.write_bytes(shard.read_bytes()[:size])
        vae = CountingVAE(_vae())
        with pytest.warns(UserWarning, match=f"shard {shard.name} .*truncated"):
            ds = VarMixupDataset(_data(), vae, cache_path=tmp_path, batch_size=5, progress=False)
        assert vae.encode_calls == 1  # that shard's 5 items only
        torch.testing.assert_close(ds.mu, expected)
        assert shard.stat().st_size > size

    @pytest.mark.parametrize("cut", [0, 30])
    def test_a_truncated_manifest_is_ours_reported_and_rebuilt(self, tmp_path, cut):
        built = VarMixupDataset(_data(), CountingVAE(_vae()), cache_path=tmp_path, progress=False)
        expected = built.mu.clone()
        built.cache_file.write_bytes(built.cache_file.read_bytes()[:cut])  # the manifest is not mapped
        vae = CountingVAE(_vae())
        with pytest.warns(UserWarning, match="is truncated or corrupt"):
            ds = VarMixupDataset(_data(), vae, cache_path=tmp_path, progress=False)
        assert vae.encode_calls == 0 and torch.equal(ds.mu, expected)  # its shards were whole
        again = CountingVAE(_vae())
        VarMixupDataset(_data(), again, cache_path=tmp_path, progress=False)
        assert again.encode_calls == 0

    def test_a_foreign_file_is_refused_and_left_intact(self, tmp_path):
        from safetensors.torch import save_file

        path = tmp_path / "latents.safetensors"
        VarMixupDataset(_data(), _vae(), cache_path=path, progress=False)
        for foreign in (b"", b"not a cache"):
            path.write_bytes(foreign)  # the user's own file where our manifest was: not a prefix of it
            if foreign:
                with pytest.raises(VarMixupError, match="exists and is not a latent cache written by VarMixupDataset"):
                    VarMixupDataset(_data(), _vae(), cache_path=path, progress=False)
                assert path.read_bytes() == foreign
        other = tmp_path / "weights.safetensors"
        save_file({"w": torch.ones(3)}, str(other))
        content = other.read_bytes()
        with pytest.raises(VarMixupError, match="no 'varmixup_aug_latents' metadata; it was not written by"):
            VarMixupDataset(_data(), _vae(), cache_path=other, progress=False)
        assert other.read_bytes() == content and not Path(f"{other}.shards").exists()

    def test_full_disk_refused_before_encoding_with_the_space_needed(self, tmp_path, monkeypatch):
        import varmixup_aug._cache as cache_module

        usage = shutil.disk_usage(tmp_path)
        monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda path: usage._replace(free=1000))
        vae = CountingVAE(_vae())
        with pytest.raises(VarMixupError, match=r"needs 16\.78 MB for 40 items \(40 bytes each\) but only 1\.00 KB "
                                                r"are free.*nothing was encoded"):
            VarMixupDataset(_data(40), vae, cache_path=tmp_path, batch_size=8, progress=False)
        assert vae.encode_calls == 1 and not list(tmp_path.rglob("shard-*"))  # one batch, to learn the size

    def test_a_small_tmpfs_is_refused_before_encoding(self, tmp_path):
        mount = tmp_path / "tmpfs"
        mount.mkdir()
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root and mount(8)")
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                             check=False)
        if res.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
        try:
            data = TensorDataset(torch.rand(64, 3, 8, 8), torch.zeros(64, dtype=torch.long))
            with pytest.raises(VarMixupError, match=r"needs 16\.88 MB for 64 items \(1544 bytes each\) but only "
                                                    r"1\.0\d MB are free"):
                VarMixupDataset(data, IdentityVAE(), cache_path=mount, batch_size=16, progress=False)
        finally:
            subprocess.run(["umount", str(mount)], check=False)


class _BoundMethods:
    """A VAE wrapper holding bound methods of a ConvVAE (no module in its attributes)."""

    def __init__(self, vae: ConvVAE) -> None:
        self.encode, self.decode, self.channels, self.image_size = vae.encode, vae.decode, 3, 8


class _Normal(torch.nn.Module):
    """A VAE whose encode returns a torch.distributions.Normal."""

    def __init__(self, vae: ConvVAE) -> None:
        super().__init__()
        self.vae, self.channels, self.image_size = vae, 3, 8

    def encode(self, x):
        mu, logvar = self.vae.encode(x)
        return torch.distributions.Normal(mu, (0.5 * logvar).exp())

    def decode(self, z):
        return self.vae.decode(z)


def _scale(s):
    return lambda x: x * s


class TestStale:
    def test_same_size_copy_with_the_same_mtime(self, tmp_path):
        data = _folder(tmp_path / "data")
        first = VarMixupDataset(_image_folder(data), CountingVAE(_vae()), cache_path=tmp_path / "cache",
                                progress=False)
        target, source = data / "c0" / "2.bmp", data / "c1" / "3.bmp"
        stat = target.stat()
        time.sleep(0.05)  # the ctime clock ticks every few ms
        subprocess.run(["cp", "-p", str(source), str(target)], check=True)
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert (target.stat().st_size, target.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
        vae = CountingVAE(_vae())
        again = VarMixupDataset(_image_folder(data), vae, cache_path=tmp_path / "cache", progress=False)
        assert vae.encode_calls == 1 and again.cache_file != first.cache_file
        assert not torch.equal(again.mu, first.mu)

    def test_content_mode_shares_a_cache_between_copies_and_sees_changes(self, tmp_path):
        data = _folder(tmp_path / "data")
        first = VarMixupDataset(_image_folder(data), CountingVAE(_vae()), cache_path=tmp_path / "cache",
                                progress=False, file_fingerprint="content")
        copy = tmp_path / "elsewhere" / "data"
        shutil.copytree(data, copy)  # another machine's copy: new paths, inodes and ctimes
        vae = CountingVAE(_vae())
        ds = VarMixupDataset(_image_folder(copy), vae, cache_path=tmp_path / "cache", progress=False,
                             file_fingerprint="content")
        assert vae.encode_calls == 0 and ds.cache_file == first.cache_file
        VarMixupDataset(_image_folder(copy), vae, cache_path=tmp_path / "cache", progress=False)
        assert vae.encode_calls == 1  # stat mode sees other files
        (copy / "c0" / "0.bmp").write_bytes((copy / "c1" / "1.bmp").read_bytes())
        VarMixupDataset(_image_folder(copy), vae, cache_path=tmp_path / "cache", progress=False,
                        file_fingerprint="content")
        assert vae.encode_calls == 2
        with pytest.raises(VarMixupError, match="file_fingerprint must be one of"):
            VarMixupDataset(_image_folder(copy), vae, cache_path=tmp_path, file_fingerprint="mtime")

    def test_a_changed_lambda_transform(self, tmp_path):
        from torchvision.transforms import Lambda

        data, cache = _folder(tmp_path / "data"), tmp_path / "cache"

        def build(transform):
            vae = CountingVAE(_vae())
            ds = VarMixupDataset(_image_folder(data, transform), vae, cache_path=cache, progress=False)
            return vae.encode_calls, ds.cache_file

        calls, half = build(Lambda(lambda x: x * 0.5))
        assert calls == 1 and build(Lambda(lambda x: x * 0.5)) == (0, half)  # the same code: reused
        assert build(Lambda(lambda x: x * 0.25))[0] == 1  # another constant
        assert build(Lambda(_scale(0.5)))[0] == 1 and build(Lambda(_scale(0.5)))[0] == 0
        assert build(Lambda(_scale(0.75)))[0] == 1  # another closure value
        lock = threading.Lock()  # a C object: nothing to fingerprint
        opaque = Lambda(lambda x: x if lock else -x)
        with pytest.raises(VarMixupError, match=r"cannot fingerprint dataset\.transform\.transforms\[1\]\.lambd.*"
                                                r"<closure lock> for the latent cache: a lock has no attributes.*"
                                                r"cache_key="):
            VarMixupDataset(_image_folder(data, opaque), _vae(), cache_path=cache, progress=False)
        vae = CountingVAE(_vae())
        VarMixupDataset(_image_folder(data, opaque), vae, cache_path=cache, cache_key="lock v1", progress=False)
        assert vae.encode_calls == 1

    def test_a_vae_wrapper_holding_bound_methods(self, tmp_path):
        data = _data()
        a = VarMixupDataset(data, _BoundMethods(_vae(0)), cache_path=tmp_path, progress=False)
        b = VarMixupDataset(data, _BoundMethods(_vae(1)), cache_path=tmp_path, progress=False)
        assert a.cache_file != b.cache_file and not torch.equal(a.mu, b.mu)
        torch.testing.assert_close(b.mu, _vae(1).encode(data.tensors[0])[0])

    def test_a_vae_whose_encode_returns_a_normal(self, tmp_path):
        vae = _vae()
        ds = VarMixupDataset(_data(), _Normal(vae), cache_path=tmp_path, progress=False)
        mu, logvar = vae.encode(_data().tensors[0])
        torch.testing.assert_close(ds.mu, mu)
        torch.testing.assert_close(ds.logvar, logvar, atol=1e-5, rtol=1e-5)
