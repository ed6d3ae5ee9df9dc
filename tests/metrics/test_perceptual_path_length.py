"""Perceptual path length on tiny networks: recomputation from the definition, closed forms, crop and
downsampling, camera-conditioned generators, errors, and 1 vs 2 processes."""

import json
import math
import os
import sys
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch

import tiny_networks
from metrics import detectors, lpips, metric_utils
from metrics import perceptual_path_length as ppl
from metrics.metric_utils import MetricError, MetricOptions
from multiproc import run_processes
from training import cameras

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LPIPS_WIDTHS = (4, 4, 8, 8, 8)


def random_lpips_state_dict(seed=0):
    """A narrow LPIPS VGG16 (16x16 inputs reach relu5_3 at 1x1) with random weights."""
    torch.manual_seed(seed)
    model = lpips.LPIPSVGG16(LPIPS_WIDTHS)
    state_dict = model.state_dict()
    for key, value in state_dict.items():
        value.copy_(torch.rand_like(value) if key.startswith('lin') else torch.randn_like(value) * 0.3)
    return state_dict


@pytest.fixture(scope='module')
def lpips_path(tmp_path_factory):
    path = tmp_path_factory.mktemp('lpips') / 'lpips_vgg16.pth'
    torch.save(random_lpips_state_dict(), path)
    return str(path)


@pytest.fixture(autouse=True)
def fresh_detector_cache(monkeypatch):
    monkeypatch.setattr(detectors, '_detector_cache', {})


def noisy_stylegan2(seed=0):
    """A tiny StyleGAN2 whose noise inputs matter (a fresh network has zero noise strengths)."""
    G = tiny_networks.stylegan2_generator(seed=seed)
    with torch.no_grad():
        for name, param in G.named_parameters():
            if name.endswith('noise_strength'):
                param.fill_(0.5)
    return G


def run_ppl(G, lpips_path, num_samples=8, epsilon=1e-2, space='w', sampling='end', crop=False, batch_size=2, **opts_kwargs):
    opts = MetricOptions(G=G, detector_urls={'vgg16': lpips_path}, **opts_kwargs)
    return ppl.compute_ppl(opts, num_samples=num_samples, epsilon=epsilon, space=space, sampling=sampling, crop=crop,
                           batch_size=batch_size)


def sample_latents(G, num_samples, **opts_kwargs):
    """z0, z1 and c of every sample, as documented: z_{2k}, z_{2k+1}, c_{2k} of GeneratorSamples."""
    z, c = metric_utils.GeneratorSamples(MetricOptions(G=G, **opts_kwargs)).get(list(range(2 * num_samples)))
    return z[0::2], z[1::2], c[0::2]


def trimmed_mean_by_sorting(dist):
    """1st percentile 'lower' = sorted[floor(0.01 (n-1))], 99th 'higher' = sorted[ceil(0.99 (n-1))]."""
    ordered = np.sort(dist)
    lo = ordered[math.floor(0.01 * (len(dist) - 1))]
    hi = ordered[math.ceil(0.99 * (len(dist) - 1))]
    return np.mean([d for d in dist if lo <= d <= hi])


def test_trimmed_mean_drops_the_tails():
    dist = np.random.default_rng(0).lognormal(size=250)
    dist[7], dist[100] = 1e6, 1e-9
    assert ppl.trimmed_mean(dist) == pytest.approx(trimmed_mean_by_sorting(dist), rel=1e-12)
    assert ppl.trimmed_mean(dist) < 10  # the outliers are gone
    assert ppl.trimmed_mean([3.0]) == 3.0


# ----------------------------------------------------------------------------------------------
# Against the definition.


def reference_ppl(G, detector, z0, z1, c, epsilon, synthesis=None):
    """Mapping, lerp in W at t=0 and epsilon, synthesis (noise as given), LPIPS distance / eps^2, trimmed mean."""
    synthesis = synthesis or (lambda ws, c: G.synthesis(ws, noise_mode='const'))
    dists = []
    with torch.no_grad():
        for k in range(len(z0)):
            w0, w1 = G.mapping(z0[k:k + 1], c[k:k + 1]), G.mapping(z1[k:k + 1], c[k:k + 1])
            images = [synthesis(w0 + t * (w1 - w0), c[k:k + 1]) for t in (0.0, epsilon)]
            a, b = [detector((x.to(torch.float64) + 1) * 127.5, resize_images=False, return_lpips=True) for x in images]
            dists.append(((a - b).to(torch.float64).square().sum()).item() / epsilon ** 2)
    return trimmed_mean_by_sorting(np.array(dists))


def test_matches_a_recomputation_from_the_definition(lpips_path):
    G = tiny_networks.stylegan2_generator(resolution=16)  # Zero noise strengths: the noise draws do not matter.
    detector = detectors.load_detector(lpips_path)
    z0, z1, c = sample_latents(G, 8, seed=3)
    expected = reference_ppl(G, detector, z0, z1, c, epsilon=1e-2)
    assert run_ppl(G, lpips_path, seed=3, batch_size=3) == pytest.approx(expected, rel=1e-4)
    # The official epsilon: float32 rounding of the tiny image differences limits the agreement.
    expected = reference_ppl(G, detector, z0, z1, c, epsilon=1e-4)
    assert run_ppl(G, lpips_path, seed=3, epsilon=1e-4) == pytest.approx(expected, rel=2e-2)


def test_noise_is_shared_by_both_endpoints_and_redrawn(lpips_path):
    G = noisy_stylegan2()
    saved = {name: buf.clone() for name, buf in G.named_buffers()}
    quiet = run_ppl(tiny_networks.stylegan2_generator(), lpips_path, epsilon=1e-4)
    noisy = run_ppl(G, lpips_path, epsilon=1e-4)
    assert noisy == run_ppl(G, lpips_path, epsilon=1e-4)  # deterministic
    assert noisy != quiet and noisy < 100 * quiet  # a noise change between endpoints would add ~|dn|^2 / eps^2
    assert noisy != run_ppl(G, lpips_path, epsilon=1e-4, seed=1)
    for name, buf in G.named_buffers():
        assert torch.equal(buf, saved[name])  # the metric works on a copy


class LinearGenerator(torch.nn.Module):
    """mapping: w = z A (every ws the same); synthesis: image = w B, linear, records its keywords."""

    def __init__(self, resolution=8, channels=3, z_dim=4, synthesis_takes_kwargs=False):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, 0, z_dim, 2
        self.img_resolution, self.img_channels = resolution, channels
        A = torch.randn([z_dim, z_dim], generator=gen)
        B = torch.randn([z_dim, channels * resolution * resolution], generator=gen) * 0.1
        self.mapping = lambda z, c: (z @ A).unsqueeze(1).repeat(1, 2, 1)
        self.A, self.B, self.calls = A, B, []
        shape = [channels, resolution, resolution]
        if synthesis_takes_kwargs:
            def synthesis(ws, **kwargs):
                self.calls.append(kwargs)
                return (ws[:, 0] @ B).view(-1, *shape)
        else:
            def synthesis(ws, noise_mode='random'):
                self.calls.append(dict(noise_mode=noise_mode))
                return (ws[:, 0] @ B).view(-1, *shape)
        self.synthesis = synthesis


def flatten_detector(images, resize_images=True, return_lpips=False):
    assert return_lpips and not resize_images
    return images.flatten(1)


@pytest.fixture
def identity_lpips(monkeypatch):
    """The 'vgg16' detector becomes flatten(): the distance is the squared difference of the 0..255 images."""
    inputs = []

    def fake_loader(opts, url):
        def detector(images, **kwargs):
            inputs.append(images.clone())
            return flatten_detector(images, **kwargs)
        return detector

    monkeypatch.setattr(metric_utils, 'get_feature_detector', fake_loader)
    return inputs


def test_closed_form_for_a_linear_generator(identity_lpips):
    G = LinearGenerator()
    z0, z1, _ = sample_latents(G, 150)
    # image(t) is linear in w, so |image(t + eps) - image(t)|^2 / eps^2 = 127.5^2 |(w1 - w0) B|^2 for any t and eps.
    closed = (127.5 ** 2 * (((z1 - z0) @ G.A @ G.B).to(torch.float64)).square().sum(1)).numpy()
    expected = trimmed_mean_by_sorting(closed)
    assert len(closed) > 101 and expected != closed.mean()  # the percentiles trim something
    for epsilon, sampling in [(1e-2, 'end'), (1e-3, 'end'), (1e-2, 'full')]:
        got = run_ppl(G, 'unused', num_samples=150, epsilon=epsilon, sampling=sampling, batch_size=16)
        assert got == pytest.approx(expected, rel=2e-3), (epsilon, sampling)
    assert G.calls[0] == dict(noise_mode='const')  # no force_fp32 for a synthesis that does not take it


def test_force_fp32_for_synthesis_taking_keywords(identity_lpips):
    G = LinearGenerator(synthesis_takes_kwargs=True)
    run_ppl(G, 'unused', num_samples=2)
    assert G.calls == [dict(noise_mode='const', force_fp32=True)]


def test_z_space_uses_slerp(identity_lpips):
    a, b = torch.randn([5, 4]), torch.randn([5, 4])
    torch.testing.assert_close(ppl.slerp(a, b, torch.zeros([5, 1])), a / a.norm(dim=1, keepdim=True))
    torch.testing.assert_close(ppl.slerp(a, b, torch.ones([5, 1])), b / b.norm(dim=1, keepdim=True))
    angle = lambda x, y: torch.acos((x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1)))
    torch.testing.assert_close(angle(a, ppl.slerp(a, b, torch.full([5, 1], 0.3))), 0.3 * angle(a, b), atol=1e-5, rtol=1e-4)

    # At t=0 the unit z moves along the great circle at speed angle(z0, z1): d/dt z = angle * unit(z1 - (z0.z1) z0).
    G = LinearGenerator()
    z0, z1, _ = sample_latents(G, 6)
    u0 = z0 / z0.norm(dim=1, keepdim=True)
    ortho = z1 - (u0 * z1).sum(1, keepdim=True) * u0
    velocity = angle(z0, z1).unsqueeze(1) * ortho / ortho.norm(dim=1, keepdim=True)
    closed = (127.5 ** 2 * (velocity @ G.A @ G.B).square().sum(1)).to(torch.float64).numpy()
    got = run_ppl(G, 'unused', num_samples=6, epsilon=1e-3, space='z')
    assert got == pytest.approx(closed.mean(), rel=5e-3)


# ----------------------------------------------------------------------------------------------
# What LPIPS sees.


def manual_lpips_input(images, crop):
    if crop:
        images = images[:, :, 192:448, 128:384]  # rows [3/8, 7/8), columns [2/8, 6/8) of 512
    n, c, h, w = images.shape
    images = images.reshape(n, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))  # 512 // 256 = 2
    return ((images + 1) * 127.5).repeat(1, 3, 1, 1)


@pytest.mark.parametrize('crop', [False, True])
def test_crop_and_downsample_of_a_512_output(identity_lpips, crop):
    G = LinearGenerator(resolution=512, channels=1)
    run_ppl(G, 'unused', num_samples=3, crop=crop, batch_size=3)
    [seen] = identity_lpips
    z0, z1, _ = sample_latents(G, 3)
    w0, w1 = G.mapping(z0, None), G.mapping(z1, None)
    images = G.synthesis(torch.cat([w0, w0 + 1e-2 * (w1 - w0)]))
    expected = manual_lpips_input(images, crop)
    assert seen.shape == (6, 3, 128 if crop else 256, 128 if crop else 256)
    torch.testing.assert_close(seen, expected, rtol=1e-5, atol=1e-3)
    assert not torch.equal(seen, seen.round())  # float, not quantised


def test_small_outputs_are_not_resized():
    images = torch.rand([2, 3, 256, 256]) * 2 - 1
    torch.testing.assert_close(ppl.lpips_input(images), (images + 1) * 127.5)


# ----------------------------------------------------------------------------------------------
# Camera-conditioned generators.


def camera_dataset(folder, num_images=4):
    folder.mkdir()
    poses = cameras.lookat_labels(torch.linspace(-0.4, 0.4, num_images), torch.linspace(0.2, -0.2, num_images))
    labels = []
    for i in range(num_images):
        PIL.Image.fromarray(np.full([16, 16, 3], 40 * i, dtype=np.uint8)).save(folder / f'img{i}.png')
        labels.append([f'img{i}.png', poses[i].tolist()])
    (folder / 'dataset.json').write_text(json.dumps({'labels': labels}))
    return dict(class_name='training.dataset.ImageFolderDataset', path=str(folder), use_labels=True)


def test_camera_conditioned_generator(tmp_path, lpips_path):
    G = tiny_networks.camera_generator(img_resolution=16)
    dataset_kwargs = camera_dataset(tmp_path / 'data')
    value = run_ppl(G, lpips_path, num_samples=6, dataset_kwargs=dataset_kwargs)
    z0, z1, c = sample_latents(G, 6, dataset_kwargs=dataset_kwargs)
    assert len({tuple(row) for row in c.tolist()}) > 1  # several cameras drawn from the dataset
    # The synthesis needs the camera (it reads c[:, [3, 7, 11]]); both endpoints get the sample's camera.
    expected = reference_ppl(G, detectors.load_detector(lpips_path), z0, z1, c, epsilon=1e-2,
                             synthesis=lambda ws, c: G.synthesis(ws, c=c))
    assert math.isfinite(value) and value == pytest.approx(expected, rel=1e-4)
    with pytest.raises(MetricError, match='dataset'):
        run_ppl(G, lpips_path)


def test_eg3d_renders_both_endpoints_deterministically(tmp_path, lpips_path):
    # EG3D's renderer jitters its depth samples; the metric renders in deterministic mode, so the value is the
    # definition's with jitter off, and does not depend on the random stream.
    G = tiny_networks.triplane_generator(resolution=16)
    dataset_kwargs = camera_dataset(tmp_path / 'data')
    values = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        values.append(run_ppl(G, lpips_path, num_samples=4, dataset_kwargs=dataset_kwargs))
    assert 'jitter' not in G.rendering_kwargs  # the caller's network is left as it was
    deterministic = tiny_networks.triplane_generator(resolution=16)
    deterministic.rendering_kwargs = dict(deterministic.rendering_kwargs, jitter=False)
    z0, z1, c = sample_latents(G, 4, dataset_kwargs=dataset_kwargs)
    expected = reference_ppl(deterministic, detectors.load_detector(lpips_path), z0, z1, c, epsilon=1e-2,
                             synthesis=lambda ws, c: deterministic.synthesis(ws, c, noise_mode='const')['image'])
    assert values[0] == values[1] and math.isfinite(values[0])
    assert values[0] == pytest.approx(expected, rel=1e-4)


# ----------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize('kwargs, words', [
    (dict(space='x'), ['space', "'x'"]),
    (dict(sampling='middle'), ['sampling', "'middle'"]),
    (dict(epsilon=0), ['epsilon']),
    (dict(num_samples=0), ['num_samples']),
])
def test_invalid_settings(lpips_path, kwargs, words):
    with pytest.raises(MetricError) as info:
        run_ppl(LinearGenerator(), lpips_path, **kwargs)
    message = str(info.value)
    assert '\n' not in message and message.endswith('.') and all(word in message for word in words), message


def test_detector_without_lpips(tmp_path):
    path = tmp_path / 'vgg16_torchvision.pth'
    torch.save(detectors.VGG16((4, 4, 8, 8, 8), fc_channels=8, num_classes=10).state_dict(), path)
    with pytest.raises(MetricError) as info:
        run_ppl(LinearGenerator(resolution=16), str(path))
    message = str(info.value)
    assert '\n' not in message and message.endswith('.'), message
    assert 'vgg16_torchvision.pth' in message and 'python -m metrics.lpips' in message and 'vgg16.pkl' in message


def test_detector_refusing_return_lpips(monkeypatch):
    def old_vgg(images, return_features=False):
        return images.flatten(1)
    monkeypatch.setattr(metric_utils, 'get_feature_detector', lambda opts, url: old_vgg)
    with pytest.raises(MetricError, match='cannot compute LPIPS .*TypeError'):
        run_ppl(LinearGenerator(), 'old.pt', num_samples=2)


# ----------------------------------------------------------------------------------------------
# Several processes.

_SCRIPT = textwrap.dedent('''
    import json, os, sys
    # The repository first: tests/ has folders named like its packages.
    sys.path[:0] = [os.path.dirname(sys.argv[1]), sys.argv[1]]
    import torch
    from metrics import perceptual_path_length, metric_utils
    from torch_utils import distributed
    import tiny_networks

    def main(tests_dir, lpips_path, out_dir):
        G = tiny_networks.stylegan2_generator(seed=0)
        with torch.no_grad():
            for name, param in G.named_parameters():
                if name.endswith('noise_strength'):
                    param.fill_(0.5)
        rank, world = distributed.get_rank(), distributed.get_world_size()
        opts = metric_utils.MetricOptions(G=G, num_gpus=world, rank=rank, detector_urls={'vgg16': lpips_path})
        value = perceptual_path_length.compute_ppl(opts, num_samples=9, epsilon=1e-4, space='w', sampling='full',
                                                   crop=False, batch_size=2)
        with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
            json.dump(value, f)

    if __name__ == '__main__':
        distributed.launch(main, num_procs=2, args=tuple(sys.argv[1:]), device_type='cpu', timeout=60)
''')


def test_one_and_two_processes_agree(tmp_path, lpips_path):
    script = tmp_path / 'entry.py'
    script.write_text(_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE')}
    env.update(CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    [(code, _out, err)] = run_processes([[sys.executable, str(script), TESTS_DIR, lpips_path, str(tmp_path)]],
                                        timeout=120, envs=[env])
    assert code == 0, err[-3000:]
    # At epsilon=1e-4 the distance amplifies float32 rounding, which depends on the thread count:
    # compute the single-process value with the workers' single thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = run_ppl(noisy_stylegan2(), lpips_path, num_samples=9, epsilon=1e-4, sampling='full', batch_size=2)
    finally:
        torch.set_num_threads(threads)
    two = [json.loads((tmp_path / f'rank{rank}.json').read_text()) for rank in range(2)]
    assert two[0] == two[1]
    assert two[0] == pytest.approx(one, rel=1e-6)
