"""Small datasets, detectors and independent recomputations shared by the metric tests."""

import json
import os
import zipfile

import numpy as np
import PIL.Image
import scipy.linalg
import torch

from training import cameras


def write_dataset(path, num_images, resolution=16, channels=3, labels=None, seed=0):
    """A .zip dataset of random images (and dataset.json labels when given); returns its path."""
    rng = np.random.default_rng(seed)
    mode = 'RGB' if channels == 3 else 'L'
    with zipfile.ZipFile(path, 'w') as archive:
        names = []
        for i in range(num_images):
            # Smooth random images (low-res noise, upsampled) so that pooled features vary per image.
            small = rng.integers(0, 256, size=[4, 4, channels], dtype=np.uint8)
            image = PIL.Image.fromarray(small.squeeze(-1) if channels == 1 else small, mode).resize(
                (resolution, resolution), PIL.Image.BILINEAR)
            name = f'img{i:05d}.png'
            with archive.open(name, 'w') as f:
                image.save(f, format='png')
            names.append(name)
        if labels is not None:
            archive.writestr('dataset.json', json.dumps(dict(labels=[[n, l] for n, l in zip(names, labels)])))
    return str(path)


def camera_labels(count, seed=0):
    """`count` valid 25-float cameras on the usual sphere, as nested lists."""
    rng = np.random.default_rng(seed)
    yaw = torch.from_numpy(rng.uniform(-0.5, 0.5, count))
    pitch = torch.from_numpy(rng.uniform(-0.2, 0.2, count))
    return cameras.lookat_labels(yaw, pitch).to(torch.float32).tolist()


def dataset_kwargs(path, **kwargs):
    return dict(class_name='training.dataset.ImageFolderDataset', path=path, **kwargs)


def pooled_features(images_uint8, weight):
    """The PooledFeatureDetector recomputed in float64 numpy from uint8 NCHW images."""
    x = np.asarray(images_uint8, dtype=np.float64) / 255
    n, c, h, w = x.shape
    pooled = x.reshape(n, c, 2, h // 2, 2, w // 2).mean(axis=(3, 5)).reshape(n, c * 4)
    return pooled @ np.asarray(weight, dtype=np.float64)


def read_dataset_images(path):
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith('.png'))
        images = [np.array(PIL.Image.open(archive.open(n))) for n in names]
    images = np.stack(images)
    if images.ndim == 3:
        images = images[:, :, :, None].repeat(3, axis=3)
    return images.transpose(0, 3, 1, 2)


def fid_scipy(features_a, features_b):
    """FID from two feature sets with covariance over N and scipy's matrix square root."""
    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    sigma_a = np.cov(features_a, rowvar=False, bias=True)
    sigma_b = np.cov(features_b, rowvar=False, bias=True)
    root = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    return float(np.square(mu_a - mu_b).sum() + np.trace(sigma_a + sigma_b - 2 * np.real(root)))


def official_latents(seed, indices, z_dim):
    """Latent of generated sample k: row k % 1024 of default_rng([seed, k // 1024]).standard_normal([1024, z_dim])."""
    rows = []
    for k in indices:
        rng = np.random.default_rng([seed, k // 1024])
        rows.append(rng.standard_normal([1024, z_dim]).astype(np.float32)[k % 1024])
    return np.stack(rows)


def quantize(images):
    """Generator output -> uint8 like a saved PNG, independently of the metric code (float64 floor)."""
    x = np.floor(np.clip(np.asarray(images, dtype=np.float64) * 127.5 + 128, 0, 255)).astype(np.uint8)
    return x.repeat(3, axis=1) if x.shape[1] == 1 else x


def env_without_network(tmp_path):
    """Environment for a subprocess whose downloads fail at once and whose cache is empty."""
    env = dict(os.environ, DNNLIB_CACHE_DIR=str(tmp_path / 'empty-cache'), https_proxy='http://127.0.0.1:9',
               http_proxy='http://127.0.0.1:9', HTTPS_PROXY='http://127.0.0.1:9', HTTP_PROXY='http://127.0.0.1:9')
    env.pop('NO_PROXY', None)
    env.pop('no_proxy', None)
    return env
