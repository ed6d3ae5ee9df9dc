"""The feature passes behind FID/KID/PR/IS: real and generated images, labels, quantisation and the cache.

Every value is checked against a recomputation written here: images read with PIL, features of the
stand-in detector in float64 numpy, FID with scipy's sqrtm, precision/recall by brute-force counting.
"""

import os

import numpy as np
import pytest
import torch

import metric_fixtures as fx
import tiny_networks
from metrics import (frechet_inception_distance, inception_score, kernel_inception_distance, metric_utils,
                     precision_recall)
from training import generation
from training.dataset import ImageFolderDataset

NUM_FEATURES = 8


@pytest.fixture(scope='module')
def detector(tmp_path_factory):
    path = tiny_networks.save_pooled_feature_detector(tmp_path_factory.mktemp('det') / 'pooled.pt', NUM_FEATURES)
    weight = tiny_networks.PooledFeatureDetector(NUM_FEATURES).weight.numpy()
    return path, weight


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))


def make_opts(G, data_path, detector_path, **kwargs):
    kwargs.setdefault('G_kwargs', dict(noise_mode='const'))
    kwargs.setdefault('num_workers', 0)
    return metric_utils.MetricOptions(G=G, dataset_kwargs=fx.dataset_kwargs(data_path, use_labels=G.c_dim > 0),
                                      detector_urls=dict(inception=detector_path, vgg16=detector_path), **kwargs)


def generated_images(G, num, seed=0, labels=None):
    """Generator output for samples 0..num-1 by the documented rule, recomputed here; uint8 NCHW."""
    z = torch.from_numpy(fx.official_latents(seed, range(num), G.z_dim))
    c = torch.zeros([num, G.c_dim]) if labels is None else torch.as_tensor(labels, dtype=torch.float32)
    with torch.no_grad():
        images = generation.synthesize(G, G.mapping(z, c), c=c, noise_mode='const')
    return fx.quantize(images.numpy())


def label_indices(seed, num, dataset_size, z_dim):
    """Dataset index of the label of samples 0..num-1: drawn after the chunk's latents from the same generator."""
    rng = np.random.default_rng([seed, 0])
    rng.standard_normal([1024, z_dim])
    return rng.integers(dataset_size, size=1024)[:num]


def test_fid_equals_a_scipy_recomputation_from_the_pixels(tmp_path, detector):
    data = fx.write_dataset(tmp_path / 'data.zip', 30)
    G = tiny_networks.stylegan2_generator()
    fid = frechet_inception_distance.compute_fid(make_opts(G, data, detector[0]), max_real=None, num_gen=24)
    real = fx.pooled_features(fx.read_dataset_images(data), detector[1])
    fake = fx.pooled_features(generated_images(G, 24), detector[1])
    expected = fx.fid_scipy(fake, real)
    assert expected > 0.01
    assert fid == pytest.approx(expected, rel=1e-5)


def test_generated_samples_do_not_depend_on_the_batch_size(tmp_path, detector):
    data = fx.write_dataset(tmp_path / 'data.zip', 8)
    G = tiny_networks.stylegan2_generator()
    opts = make_opts(G, data, detector[0])
    url = opts.detector_url('inception')
    a = metric_utils.compute_feature_stats_for_generator(opts, url, dict(return_features=True), capture_all=True, max_items=10)
    b = metric_utils.compute_feature_stats_for_generator(opts, url, dict(return_features=True), capture_all=True,
                                                         max_items=10, batch_size=6, batch_gen=3)
    np.testing.assert_allclose(a.get_all(), b.get_all(), rtol=1e-5, atol=1e-6)
    expected = fx.pooled_features(generated_images(G, 10), detector[1])
    np.testing.assert_allclose(a.get_all(), expected, rtol=1e-4, atol=1e-5)
    other_seed = metric_utils.compute_feature_stats_for_generator(make_opts(G, data, detector[0], seed=1), url,
                                                                  dict(return_features=True), capture_all=True, max_items=10)
    assert not np.allclose(other_seed.get_all(), a.get_all())


def test_kid_and_inception_score_from_the_recomputed_features(tmp_path, detector):
    data = fx.write_dataset(tmp_path / 'data.zip', 20)
    G = tiny_networks.stylegan2_generator()
    opts = make_opts(G, data, detector[0])
    real = fx.pooled_features(fx.read_dataset_images(data), detector[1])
    fake = fx.pooled_features(generated_images(G, 16), detector[1])
    kid = kernel_inception_distance.compute_kid(opts, max_real=None, num_gen=16, num_subsets=5, max_subset_size=10)
    assert kid == pytest.approx(kernel_inception_distance.kid_from_features(fake, real, 5, 10, seed=0), rel=1e-4, abs=1e-7)

    probs = np.exp(fake - fake.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    kl = [(p * (np.log(p) - np.log(p.mean(0)))).sum(1).mean() for p in np.split(probs, 4)]
    mean, std = inception_score.compute_is(opts, num_gen=16, num_splits=4)
    assert mean == pytest.approx(np.mean(np.exp(kl)), rel=1e-5)
    assert std == pytest.approx(np.std(np.exp(kl)), rel=1e-4, abs=1e-7)


def test_precision_recall_by_brute_force_counting(tmp_path, detector):
    data = fx.write_dataset(tmp_path / 'data.zip', 24)
    G = tiny_networks.stylegan2_generator()
    precision, recall = precision_recall.compute_pr(make_opts(G, data, detector[0]), max_real=None, num_gen=20,
                                                    nhood_size=3, row_batch_size=7)
    real = fx.pooled_features(fx.read_dataset_images(data), detector[1])
    fake = fx.pooled_features(generated_images(G, 20), detector[1])

    def coverage(probes, manifold):
        within = np.linalg.norm(manifold[:, None] - manifold[None], axis=2)
        radii = np.sort(within, axis=1)[:, 3]
        between = np.linalg.norm(probes[:, None] - manifold[None], axis=2)
        return float((between <= radii[None]).any(axis=1).mean())
    assert precision == pytest.approx(coverage(fake, real), abs=1e-6)
    assert recall == pytest.approx(coverage(real, fake), abs=1e-6)
    assert 0 < precision < 1 or 0 < recall < 1


def test_quantisation_is_that_of_a_saved_png():
    values = torch.tensor([-1.5, -1.0, -0.999, -0.0039215, 0.0, 0.0039216, 0.5, 0.99, 1.0, 2.0])
    images = (values.view(1, 1, 1, -1) + torch.zeros([2, 1, 3, 1])).to(torch.float32)
    out = metric_utils.to_detector_images(images)
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 3, values.numel())
    np.testing.assert_array_equal(out.numpy(), fx.quantize(images.numpy()))
    assert out[0, 0, 0].tolist() == [0, 0, 0, 127, 128, 128, 191, 254, 255, 255]


def test_grayscale_images_are_repeated_to_rgb_on_both_sides(tmp_path, detector):
    data = fx.write_dataset(tmp_path / 'gray.zip', 12, channels=1)
    G = tiny_networks.stylegan2_generator(channels=1)
    fid = frechet_inception_distance.compute_fid(make_opts(G, data, detector[0]), max_real=None, num_gen=12)
    real = fx.pooled_features(fx.read_dataset_images(data), detector[1])
    fake = fx.pooled_features(generated_images(G, 12), detector[1])
    assert fid == pytest.approx(fx.fid_scipy(fake, real), rel=1e-5)


def test_class_labels_are_drawn_from_the_dataset(tmp_path, detector, monkeypatch):
    classes = [i % 3 for i in range(9)]
    data = fx.write_dataset(tmp_path / 'classes.zip', 9, labels=classes)
    G = tiny_networks.stylegan2_generator(c_dim=3)
    seen = []
    original = type(G.mapping).forward
    monkeypatch.setattr(type(G.mapping), 'forward', lambda self, z, c, *a, **k: seen.append(c.clone()) or original(self, z, c, *a, **k))
    opts = make_opts(G, data, detector[0])
    metric_utils.compute_feature_stats_for_generator(opts, opts.detector_url('inception'), dict(return_features=True),
                                                     capture_mean_cov=True, max_items=8)
    labels = torch.cat(seen)[:8]
    expected = np.eye(3)[np.array(classes)[label_indices(0, 8, 9, G.z_dim)]]
    np.testing.assert_array_equal(labels.numpy(), expected)


def test_cameras_reach_the_synthesis_of_a_camera_conditioned_generator(tmp_path, detector, monkeypatch):
    poses = fx.camera_labels(10)
    data = fx.write_dataset(tmp_path / 'cams.zip', 10, labels=poses)
    G = tiny_networks.camera_generator()
    seen = []
    real_synthesize = generation.synthesize
    monkeypatch.setattr(generation, 'synthesize', lambda G, ws, c=None, **k: seen.append(c.clone()) or real_synthesize(G, ws, c=c, **k))
    opts = make_opts(G, data, detector[0])
    fid = frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=12)
    assert np.isfinite(fid)
    cams = torch.cat(seen)[:12].numpy()
    expected = np.array(poses, dtype=np.float32)[label_indices(0, 12, 10, G.z_dim)]
    np.testing.assert_array_equal(cams, expected)


# ----------------------------------------------------------------------------------------------
# The dataset statistics cache.


def _dataset_reads(monkeypatch):
    counter = []
    original = ImageFolderDataset._load_raw_image
    monkeypatch.setattr(ImageFolderDataset, '_load_raw_image', lambda self, i: counter.append(i) or original(self, i))
    return counter


def _real_stats(opts, **kwargs):
    return metric_utils.compute_feature_stats_for_dataset(opts, opts.detector_url('inception'), dict(return_features=True),
                                                          capture_mean_cov=True, **kwargs)


def test_cache_hit_reads_no_images_and_gives_the_same_statistics(tmp_path, detector, monkeypatch):
    data = fx.write_dataset(tmp_path / 'data.zip', 10)
    opts = make_opts(tiny_networks.stylegan2_generator(), data, detector[0])
    first = _real_stats(opts)
    files = os.listdir(tmp_path / 'cache' / 'gan-metrics')
    assert len(files) == 1 and files[0].startswith('data-pooled-') and files[0].endswith('.npz')
    reads = _dataset_reads(monkeypatch)
    second = _real_stats(opts)
    assert len(reads) <= 1  # opening the dataset reads image 0 for its shape; features come from the cache
    np.testing.assert_array_equal(first.get_mean_cov()[1], second.get_mean_cov()[1])
    expected = fx.pooled_features(fx.read_dataset_images(data), detector[1])
    np.testing.assert_allclose(second.get_mean_cov()[0], expected.mean(0), rtol=1e-5)


def test_cache_misses_when_the_dataset_detector_or_options_change(tmp_path, detector, monkeypatch):
    data = fx.write_dataset(tmp_path / 'data.zip', 10)
    opts = make_opts(tiny_networks.stylegan2_generator(), data, detector[0])
    _real_stats(opts)
    reads = _dataset_reads(monkeypatch)

    _real_stats(opts, max_items=5)
    assert len(reads) >= 5
    reads.clear()

    other_detector = tiny_networks.save_pooled_feature_detector(tmp_path / 'other.pt', NUM_FEATURES, seed=1)
    _real_stats(make_opts(opts.G, data, other_detector))
    assert len(reads) >= 10
    reads.clear()

    stat = os.stat(data)
    fx.write_dataset(data, 10, seed=5)  # re-packed in place
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    stats = _real_stats(opts)
    assert len(reads) >= 10
    expected = fx.pooled_features(fx.read_dataset_images(data), detector[1])
    np.testing.assert_allclose(stats.get_mean_cov()[0], expected.mean(0), rtol=1e-5)
    assert len(os.listdir(tmp_path / 'cache' / 'gan-metrics')) == 4


def test_options_that_change_nothing_share_the_cache_entry(tmp_path, detector, monkeypatch):
    data = fx.write_dataset(tmp_path / 'data.zip', 6, labels=[0, 1, 0, 1, 0, 1])
    G = tiny_networks.stylegan2_generator()
    training_kwargs = fx.dataset_kwargs(data, use_labels=True, max_size=None, xflip=False, xflip_camera_labels=False,
                                        resolution=16, random_seed=7)
    opts = make_opts(G, data, detector[0])
    opts.dataset_kwargs.update(resolution=16)
    _real_stats(metric_utils.MetricOptions(G=G, dataset_kwargs=training_kwargs, num_workers=0,
                                           detector_urls=dict(inception=detector[0])))
    reads = _dataset_reads(monkeypatch)
    _real_stats(opts)
    assert len(reads) <= 1


def test_without_cache_nothing_is_written(tmp_path, detector):
    data = fx.write_dataset(tmp_path / 'data.zip', 6)
    _real_stats(make_opts(tiny_networks.stylegan2_generator(), data, detector[0], cache=False))
    assert not os.path.exists(tmp_path / 'cache' / 'gan-metrics')


def test_random_noise_is_seeded_per_group_of_samples(tmp_path, detector):
    data = fx.write_dataset(tmp_path / 'data.zip', 8)
    G = tiny_networks.stylegan2_generator()
    for name, param in G.named_parameters():
        if name.endswith('noise_strength'):
            param.data.fill_(0.5)  # zero at initialisation
    opts = make_opts(G, data, detector[0], G_kwargs=dict(noise_mode='random'))
    url, kwargs = opts.detector_url('inception'), dict(return_features=True)
    big = metric_utils.compute_feature_stats_for_generator(opts, url, kwargs, capture_all=True, max_items=16, batch_size=16, batch_gen=4)
    small = metric_utils.compute_feature_stats_for_generator(opts, url, kwargs, capture_all=True, max_items=16, batch_size=4, batch_gen=4)
    np.testing.assert_allclose(big.get_all(), small.get_all(), rtol=1e-5, atol=1e-6)
    const = fx.pooled_features(generated_images(G, 16), detector[1])
    assert np.abs(big.get_all() - const).max() > 1e-3  # the noise is really random, not constant
