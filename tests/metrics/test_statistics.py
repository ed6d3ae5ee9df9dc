"""Feature statistics and the FID / KID / PR / IS mathematics, against closed forms and independent recomputations."""

import numpy as np
import pytest
import scipy.linalg
import torch

from metrics import frechet_inception_distance as fid
from metrics import inception_score, kernel_inception_distance as kid, precision_recall
from metrics.metric_utils import FeatureStats, stats_cache_path

# ----------------------------------------------------------------------------------------------
# FeatureStats.


def test_mean_and_covariance_over_n_in_float64():
    rng = np.random.RandomState(0)
    features = (rng.randn(300, 5) * [1, 2, 3, 4, 5] + 1000).astype(np.float32)  # large offset: float32 sums would drift
    stats = FeatureStats(capture_mean_cov=True)
    for part in np.array_split(features, 7):
        stats.append(part)
    mean, cov = stats.get_mean_cov()
    x64 = features.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x64, rowvar=False, bias=True), rtol=1e-7, atol=1e-7)
    assert stats.num_items == 300 and mean.dtype == np.float64


def test_max_items_and_capture_all():
    stats = FeatureStats(capture_all=True, capture_mean_cov=True, max_items=10)
    stats.append(np.arange(24, dtype=np.float32).reshape(8, 3))
    assert not stats.is_full()
    stats.append(np.arange(24, 48, dtype=np.float32).reshape(8, 3))
    assert stats.is_full() and stats.num_items == 10
    stats.append(np.ones([4, 3]))  # ignored once full
    np.testing.assert_array_equal(stats.get_all(), np.arange(30, dtype=np.float32).reshape(10, 3))
    np.testing.assert_allclose(stats.get_mean_cov()[0], np.arange(30).reshape(10, 3).mean(axis=0))
    with pytest.raises(ValueError):
        stats.append(np.ones([2, 4]))


def test_save_and_load_round_trip_without_pickle(tmp_path):
    stats = FeatureStats(capture_all=True, capture_mean_cov=True, max_items=100)
    stats.append(np.random.RandomState(1).randn(20, 4))
    path = tmp_path / 'stats.npz'
    stats.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['stats.npz']
    with np.load(path, allow_pickle=False) as data:
        assert 'raw_cov' in data
    loaded = FeatureStats.load(path)
    assert (loaded.num_items, loaded.num_features, loaded.max_items) == (20, 4, 100)
    np.testing.assert_array_equal(loaded.get_all(), stats.get_all())
    for a, b in zip(loaded.get_mean_cov(), stats.get_mean_cov()):
        np.testing.assert_array_equal(a, b)
    empty = FeatureStats(capture_mean_cov=True)
    empty.save(tmp_path / 'empty.npz')
    assert FeatureStats.load(tmp_path / 'empty.npz').num_items == 0


def test_cache_path_depends_on_every_key_item(tmp_path, monkeypatch):
    import dnnlib
    monkeypatch.setattr(dnnlib.util, '_dnnlib_cache_dir', str(tmp_path), raising=False)
    base = dict(dataset_kwargs=dict(path='a.zip', resolution=32), detector_url='u', detector_kwargs={}, stats_kwargs={})
    path = stats_cache_path('shapes', 'inception', **base)
    assert path.endswith('.npz') and 'gan-metrics' in path and 'shapes-inception-' in path
    assert stats_cache_path('shapes', 'inception', **base) == path
    for key, value in [('dataset_kwargs', dict(path='b.zip', resolution=32)), ('detector_url', 'v'),
                       ('stats_kwargs', dict(max_items=5))]:
        assert stats_cache_path('shapes', 'inception', **dict(base, **{key: value})) != path


# ----------------------------------------------------------------------------------------------
# FID.


def random_rotation(n, seed):
    q, r = np.linalg.qr(np.random.RandomState(seed).randn(n, n))
    return q * np.sign(np.diag(r))


def test_fid_of_gaussians_with_commuting_covariances_has_a_closed_form():
    # With S1 = Q D1 Q^T and S2 = Q D2 Q^T: FID = |mu1 - mu2|^2 + sum (sqrt(d1) - sqrt(d2))^2.
    rng = np.random.RandomState(3)
    d1, d2 = rng.uniform(0.1, 4, 16), rng.uniform(0.1, 4, 16)
    mu1, mu2 = rng.randn(16), rng.randn(16)
    for q in (np.eye(16), random_rotation(16, 4)):
        expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
        got = fid.fid_from_stats(mu1, q @ np.diag(d1) @ q.T, mu2, q @ np.diag(d2) @ q.T)
        assert got == pytest.approx(expected, rel=1e-10)


def test_fid_matches_scipy_sqrtm_for_general_covariances():
    rng = np.random.RandomState(5)
    a, b = rng.randn(40, 12), rng.randn(40, 12) @ rng.randn(12, 12)
    s1, s2 = np.cov(a, rowvar=False, bias=True), np.cov(b, rowvar=False, bias=True)
    mu1, mu2 = a.mean(0), b.mean(0)
    reference = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(s1 @ s2)))
    assert fid.fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)


def test_fid_of_identical_statistics_is_zero_even_when_rank_deficient():
    x = np.random.RandomState(6).randn(10, 30)  # 10 samples in 30 dimensions: singular covariance
    mu, sigma = x.mean(0), np.cov(x, rowvar=False, bias=True)
    value = fid.fid_from_stats(mu, sigma, mu, sigma)
    assert np.isfinite(value) and abs(value) < 1e-6 * np.trace(sigma)  # square roots of ~1e-16 eigenvalues


# ----------------------------------------------------------------------------------------------
# KID.


def test_mmd2_unbiased_matches_the_explicit_double_sum():
    rng = np.random.RandomState(7)
    x, y = rng.randn(6, 3), rng.randn(6, 3) + 0.3
    k = lambda a, b: (a @ b / 3 + 1) ** 3
    m = 6
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    across = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert kid.mmd2_unbiased(x, y) == pytest.approx(within - 2 * across, rel=1e-12)


def test_kid_estimates_the_population_mmd():
    # 1-D, X ~ N(0, 1), Y ~ N(mu, 1), k = (xy + 1)^3: MMD^2 = E k(X,X') + E k(Y,Y') - 2 E k(X,Y) from the moments.
    mu = 0.5
    ey, ey2, ey3 = mu, 1 + mu ** 2, mu ** 3 + 3 * mu
    expected = 4 + (ey3 ** 2 + 3 * ey2 ** 2 + 3 * ey ** 2 + 1) - 2 * (3 * ey2 + 1)
    estimates = [kid.kid_from_features(np.random.RandomState(s).randn(20000, 1) + mu, np.random.RandomState(s + 50).randn(20000, 1),
                                       num_subsets=40, max_subset_size=500, seed=s) for s in range(4)]
    assert np.mean(estimates) == pytest.approx(expected, rel=0.1)
    same = [kid.kid_from_features(np.random.RandomState(s).randn(5000, 4), np.random.RandomState(s + 9).randn(5000, 4),
                                  num_subsets=20, max_subset_size=500, seed=s) for s in range(4)]
    assert abs(np.mean(same)) < 0.02  # unbiased: about zero for two samples of one distribution
    shifted = kid.kid_from_features(np.random.RandomState(1).randn(5000, 4) + 0.5, np.random.RandomState(2).randn(5000, 4),
                                    num_subsets=20, max_subset_size=500, seed=0)
    assert shifted > 0.2


# ----------------------------------------------------------------------------------------------
# Precision / recall and IS.


def brute_force_coverage(probes, manifold, k):
    probes, manifold = np.asarray(probes, np.float64), np.asarray(manifold, np.float64)
    radii = [sorted(np.linalg.norm(manifold - point, axis=1))[k] for point in manifold]
    return np.mean([any(np.linalg.norm(p - q) <= r for q, r in zip(manifold, radii)) for p in probes])


def test_precision_recall_against_a_brute_force_count():
    rng = np.random.RandomState(8)
    real = rng.randn(60, 4)
    gen = rng.randn(50, 4) * 1.5 + 0.5
    expected = dict(precision=brute_force_coverage(gen, real, 3), recall=brute_force_coverage(real, gen, 3))
    for block in (7, 10000):
        got = precision_recall.precision_recall_from_features(real, gen, k=3, block=block)
        assert got['precision'] == pytest.approx(expected['precision'], abs=1e-6)
        assert got['recall'] == pytest.approx(expected['recall'], abs=1e-6)
    assert 0 < expected['precision'] < 1 and 0 < expected['recall'] < 1


def test_precision_of_a_set_against_itself_is_one():
    x = torch.randn(30, 5)
    assert precision_recall.precision_recall_from_features(x, x) == dict(precision=1.0, recall=1.0)


def test_inception_score_closed_forms():
    classes = 8
    confident = np.eye(classes)[np.arange(80) % classes] * (1 - 1e-12) + 1e-12 / classes
    mean, std = inception_score.inception_score_from_probs(confident, num_splits=10)
    assert mean == pytest.approx(classes, rel=1e-6) and std == pytest.approx(0, abs=1e-6)
    uniform = np.full([40, classes], 1 / classes)
    assert inception_score.inception_score_from_probs(uniform, num_splits=4) == pytest.approx((1.0, 0.0))
    # Two classes, each sample 3:1 sure, classes balanced: KL = log 2 - H(0.75, 0.25).
    probs = np.array([[0.75, 0.25], [0.25, 0.75]] * 10)
    entropy = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    assert inception_score.inception_score_from_probs(probs, num_splits=2)[0] == pytest.approx(np.exp(np.log(2) - entropy))
