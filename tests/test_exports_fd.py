"""Exports (PNG folder, npz, grid), the Frechet distance on pluggable features, and the heatmap."""
from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
from PIL import Image

from minisims import exports, features, metrics
from minisims.plots import fd_heatmap, format_count


def images(n, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def assert_close(name, mine, ref, rtol, atol=0.0):
    mine, ref = np.asarray(mine, np.float64), np.asarray(ref, np.float64)
    err = np.abs(mine - ref)
    ok = err <= atol + rtol * np.abs(ref)
    assert ok.all(), (f"{name}: max |diff| {err.max():.3g}; first values "
                      f"{mine.ravel()[:4]} vs {ref.ravel()[:4]}")


# ------------------------------------------------------------------------------------------------
# Exports
# ------------------------------------------------------------------------------------------------

def test_pngs_round_trip_exactly(tmp_path):
    x = images(5)
    seeds = [0, 7, 123, 999999, 42]
    paths = exports.write_pngs(x, seeds, str(tmp_path / "samples"))
    assert [os.path.basename(p) for p in paths] == \
        ["000000.png", "000007.png", "000123.png", "999999.png", "000042.png"]
    for image, path in zip(x, paths):
        with Image.open(path) as im:
            assert im.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(im), image)  # lossless, bit for bit
    assert not [f for f in os.listdir(tmp_path / "samples") if f.startswith(".tmp-")]


def test_pngs_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        exports.write_pngs(images(2).astype(np.float32), [0, 1], str(tmp_path))
    with pytest.raises(ValueError, match="seeds"):
        exports.write_pngs(images(2), [0], str(tmp_path))
    with pytest.raises(ValueError, match="distinct"):
        exports.write_pngs(images(2), [3, 3], str(tmp_path))


def test_png_zip_round_trips_and_reads_as_edm_reads_it(tmp_path):
    """EDM's fid.py (training/dataset.py ImageFolderDataset) lists a zip's names, keeps those
    with an image extension, sorts them and opens each with PIL: the same images come back."""
    import zipfile
    x, seeds = images(4), [5, 0, 17, 3]
    path = str(tmp_path / "samples.zip")
    exports.write_png_zip(x, seeds, path)
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if os.path.splitext(n)[1].lower() in Image.EXTENSION)
        assert names == ["000000.png", "000003.png", "000005.png", "000017.png"]
        for name in names:
            with z.open(name) as f, Image.open(f) as im:
                np.testing.assert_array_equal(np.asarray(im), x[seeds.index(int(name[:6]))])
    assert os.listdir(tmp_path) == ["samples.zip"]  # no temporary file left
    with pytest.raises(ValueError, match="distinct"):
        exports.write_png_zip(x, [1, 1, 2, 3], str(tmp_path / "bad.zip"))
    assert not (tmp_path / "bad.zip").exists()


def test_npz_round_trip(tmp_path):
    x = images(6)
    path = str(tmp_path / "samples.npz")
    exports.write_npz(x, path)
    with np.load(path, allow_pickle=False) as data:
        assert data.files == ["arr_0"]
        assert data["arr_0"].dtype == np.uint8
        np.testing.assert_array_equal(data["arr_0"], x)


def test_image_grid_writes_a_png(tmp_path):
    path = str(tmp_path / "grid.png")
    exports.image_grid(images(7), path, cols=4, labels=[f"w={i}" for i in range(7)])
    with Image.open(path) as im:
        w, h = im.size
    assert w == 4 * (64 + 2) + 2 and h == 2 * (64 + 12 + 2) + 2  # 4 columns, 2 rows, scale 2


# ------------------------------------------------------------------------------------------------
# Frechet distance from statistics
# ------------------------------------------------------------------------------------------------

def test_fd_from_stats_equals_frechet_distance():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((200, 6)) + 0.3
    mu, S = metrics.feature_stats(a)
    assert mu.dtype == np.float64 and mu.shape == (6,) and S.shape == (6, 6)
    assert_close("sigma, n-1", S, np.cov(a, rowvar=False), rtol=1e-12)
    fd = metrics.fd_from_stats(*metrics.feature_stats(a), *metrics.feature_stats(b))
    assert fd == metrics.frechet_distance(a, b)  # the same arithmetic, bit for bit


def test_fd_of_a_set_with_itself_is_zero_and_fd_is_symmetric():
    extract = features.get_extractor("randconv")
    mu, S = metrics.feature_stats(extract(images(30, seed=2)))  # 448 features: S is singular
    mu2, S2 = metrics.feature_stats(extract(images(30, seed=3)))
    scale = np.trace(S) + np.trace(S2)  # the size of the terms that cancel
    assert metrics.fd_from_stats(mu, S, mu, S) <= 1e-8 * scale
    ab, ba = metrics.fd_from_stats(mu, S, mu2, S2), metrics.fd_from_stats(mu2, S2, mu, S)
    assert ab > 0
    # eigvals of S1 S2 vs S2 S1: S is singular (30 images, 448 features), and the square root of
    # an eigenvalue that is zero up to rounding (1e-18) is 1e-9, so the two orders agree to about
    # 1e-9 of the cancelled terms (measured 1.2e-9); 1e-8 as for FD(a, a)
    assert abs(ab - ba) <= 1e-8 * scale, (ab, ba, scale)


def test_stats_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    mu, S = metrics.feature_stats(rng.standard_normal((50, 5)))
    path = str(tmp_path / "ref.npz")
    metrics.save_stats(path, mu, S)
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["mu", "sigma"]
    mu2, S2 = metrics.load_stats(path)
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(S2, S)
    np.savez(str(tmp_path / "bad.npz"), mean=mu, cov=S)
    with pytest.raises(ValueError, match="lacks mu, sigma"):
        metrics.load_stats(str(tmp_path / "bad.npz"))


# ------------------------------------------------------------------------------------------------
# Features
# ------------------------------------------------------------------------------------------------

def test_default_features_are_randconv_and_labelled_fd():
    assert features.DEFAULT_FEATURES == "randconv"
    assert features.fd_label("randconv") == "FD_randconv"
    assert features.fd_label("pixels") == "FD_pixels"
    assert features.fd_label("inception") == "FD_inception"
    with pytest.raises(ValueError, match="unknown features"):
        features.fd_label("nope")


@pytest.mark.parametrize("name", ["randconv", "pixels"])
def test_features_deterministic_and_batch_independent(name):
    x = images(23, seed=5)
    f1 = features.get_extractor(name)(x)  # two fresh builds: the weights come from a fixed seed
    f2 = features.get_extractor(name)(x)
    assert f1.dtype == np.float64 and f1.shape == (23, features.FEATURES[name]().dim)
    np.testing.assert_array_equal(f1, f2)
    # batches of 4 (ragged last batch) vs the default: float64 GEMMs of different heights may
    # round differently; measured equal bit for bit here, so 1e-12 relative is generous
    f3 = features.get_extractor(name)(x, batch=4)
    assert_close(f"{name} batch 4 vs default", f3, f1, rtol=1e-12, atol=1e-14)


def test_features_reject_float_images():
    with pytest.raises(ValueError, match="uint8"):
        features.fd_images(images(4).astype(np.float32), images(4))


def test_fd_grows_with_noise_on_photo_patches():
    pytest.importorskip("skimage", reason="photo patches come from scikit-image's bundled images")
    A, B = features.photo_patches(photos=("astronaut.png", "chelsea.png", "coffee.png"),
                                  scales=(1,))
    rng = np.random.default_rng(2)
    n = 100
    A, B = A[rng.permutation(len(A))[:n]], B[rng.permutation(len(B))[:n]]
    extract = features.get_extractor("randconv")
    stats = {"A": metrics.feature_stats(extract(A)), 0: metrics.feature_stats(extract(B))}
    for sigma in (8, 16, 32):  # grey levels
        stats[sigma] = metrics.feature_stats(extract(features.add_noise(B, sigma, rng)))
    # against the same patches, clean: any noise shows, more noise shows more
    own = [metrics.fd_from_stats(*stats[0], *stats[s]) for s in (8, 16, 32)]
    assert 0 < own[0] < own[1] < own[2], own
    # against other patches, where sample noise sets a floor (measured ratios at n = 120, three
    # seeds: 1.13-1.43 at sigma 16, 2.3-3.6 at sigma 32; sigma 8 is lost in the floor there)
    other = [metrics.fd_from_stats(*stats["A"], *stats[s]) for s in (0, 16, 32)]
    assert other[0] < other[1] < other[2], other
    assert other[2] > 1.5 * other[0], other


# ------------------------------------------------------------------------------------------------
# Real FID: opt-in, and a clear error when it cannot run
# ------------------------------------------------------------------------------------------------

def test_inception_unavailable_says_what_to_do():
    try:
        import torch  # noqa: F401
        import pytorch_fid  # noqa: F401
        pytest.skip("torch and pytorch_fid are installed here")
    except ImportError:
        pass
    with pytest.raises(features.FeaturesUnavailable) as err:
        features.fd_images(images(4), images(4), "inception")
    msg = str(err.value)
    assert isinstance(err.value, RuntimeError) and "\n" not in msg
    assert "pip install torch pytorch-fid" in msg and "not installed" in msg


def test_inception_cache_check(monkeypatch, tmp_path):
    hub = tmp_path / "hub"
    torch = types.ModuleType("torch")
    torch.hub = types.SimpleNamespace(get_dir=lambda: str(hub))
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "pytorch_fid", types.ModuleType("pytorch_fid"))
    expected = hub / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    with pytest.raises(features.FeaturesUnavailable, match="never downloads") as err:
        features.check_inception()
    assert str(expected) in str(err.value)
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"")
    assert features.check_inception() == str(expected)


# ------------------------------------------------------------------------------------------------
# Figure 3 heatmap
# ------------------------------------------------------------------------------------------------

def test_format_count():
    assert [format_count(n) for n in (500, 50_000, 1_000_000, 2_500_000)] == \
        ["500", "50k", "1M", "2.5M"]


def test_fd_heatmap_writes_a_png(tmp_path):
    fd = np.array([[9.1, 8.2, 7.9], [9.1, 7.4, np.nan]])
    path = str(tmp_path / "fig3.png")
    fd_heatmap(fd, [50_000, 1_000_000], [0, 1, 2], path, base_fd=9.1)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 200
    with pytest.raises(ValueError, match="shape"):
        fd_heatmap(fd.T, [50_000, 1_000_000], [0, 1, 2], path)


class _Identity:
    """A generator whose every resample is the set itself (rows 0..n-1 in order)."""
    def integers(self, lo, hi, size):
        return np.arange(size)


def test_fd_bootstrap_of_the_set_itself_is_its_fd_and_equal_sets_differ_by_zero():
    rng = np.random.default_rng(0)
    ref = metrics.feature_stats(rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)))
    for n in (5, 300):  # fewer and more samples than dimensions: both of the Gram forms
        a = rng.normal(size=(n, 6)) + 0.3
        got = metrics.fd_bootstrap([a, 2 * a], *ref, _Identity(), reps=1)
        want = [metrics.fd_from_stats(*metrics.feature_stats(x), *ref) for x in (a, 2 * a)]
        # fd_from_stats takes the square roots of the eigenvalues of the non-symmetric S1 S2, whose
        # zero eigenvalues (rank n - 1 < 6) come out near 1e-16, so sqrt adds about 1e-8
        np.testing.assert_allclose(got[0], want, rtol=1e-7)
        same = metrics.fd_bootstrap([a, a.copy()], *ref, np.random.default_rng(1), reps=20)
        assert np.array_equal(same[:, 0], same[:, 1])  # the same rows in every set: paired


def test_fd_bootstrap_standard_error_matches_the_delta_method():
    """One feature, N(m, 1) samples against N(0, 1): FD = mean^2 + (sd - 1)^2, whose standard error
    is 2 |m| / sqrt(n) to first order (the (sd - 1)^2 term's is second order near sd = 1)."""
    m, n = 1.0, 4000
    x = np.random.default_rng(2).normal(m, 1.0, size=(n, 1))
    boot = metrics.fd_bootstrap([x], np.zeros(1), np.eye(1), np.random.default_rng(3), reps=400)
    se = boot[:, 0].std(ddof=1)
    assert abs(se / (2 * m / np.sqrt(n)) - 1) < 0.15, se  # 400 resamples: about 3.5% of its own
    with pytest.raises(ValueError, match="equal shape"):
        metrics.fd_bootstrap([x, x[:10]], np.zeros(1), np.eye(1), np.random.default_rng(0))
