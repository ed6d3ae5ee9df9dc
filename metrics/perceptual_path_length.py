"""Perceptual path length (Karras et al. 2019, "A Style-Based Generator Architecture") in NVIDIA's protocol.

`ppl2_wend` = `compute_ppl(opts, num_samples=50000, epsilon=1e-4, space='w', sampling='end', crop=False,
batch_size=2)`. Per sample: two latents and one dataset label c (the same for both endpoints, so the
metric works for camera-conditioned generators, whose synthesis receives c); the path point t (0 for
'end', U[0, 1) for 'full'); the images at t and t + epsilon along a lerp in W (or a slerp in Z); their
LPIPS distance from the 'vgg16' detector divided by epsilon^2. The result is the mean of those
distances between their 1st ('lower') and 99th ('higher') percentiles.
"""

import copy
import functools

import numpy as np
import torch
import torch.nn.functional as F

from metrics import detectors
from metrics import metric_utils
from metrics.metric_utils import MetricError
from training import capabilities, generation

SPACES = ('z', 'w')
SAMPLINGS = ('full', 'end')

# Seed streams of the path points and of the noise buffers, apart from GeneratorSamples' (seed, chunk).
_T_STREAM = 0x7074
_NOISE_STREAM = 0x6e6f
_T_CHUNK = 1024
_LPIPS_MAX_RESOLUTION = 256


def compute_ppl(opts, num_samples, epsilon, space, sampling, crop, batch_size):
    """PPL of opts.G, the same float on every process.

    What fixes the result: sample k uses z_{2k}, z_{2k+1} and the label c_{2k} of
    `metric_utils.GeneratorSamples` and a path point drawn from (opts.seed, k). The noise buffers
    (`*.noise_const`) are redrawn per *global batch* g (samples g*batch_size ... (g+1)*batch_size - 1)
    from (opts.seed, g) and synthesis runs with noise_mode='const', so both endpoints of a pair see
    the same noise, as in the official metric. Process r computes batches r, r + num_gpus, ...; the
    distances are gathered on every process. Hence, on one device type, the value depends on
    (G, seed, num_samples, epsilon, space, sampling, crop, batch_size) and not on the number of
    processes; batch_size matters because a batch shares its noise.

    Images: fp32 synthesis (`force_fp32=True` where the synthesis accepts it) with the camera for
    networks that take one (volume renderers in deterministic mode) and opts.G_kwargs['scale'] if set;
    then `lpips_input`.
    """
    _check_settings(opts, num_samples, epsilon, space, sampling, batch_size)
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    if capabilities.accepts(G, 'render'):
        # Volume renderers (EG3D) render both endpoints of a pair with the same depth samples: deterministic
        # rendering (rendering_kwargs['jitter'] = False), or the jitter would dominate the distance.
        G.rendering_kwargs = dict(G.rendering_kwargs, jitter=False)
    url = opts.detector_url('vgg16')
    detector = _lpips_detector(opts, url)
    samples = metric_utils.GeneratorSamples(opts)
    progress = metric_utils.ProgressMonitor(opts, 'ppl samples', num_samples)
    synthesis_kwargs = _synthesis_kwargs(G, opts)

    num_batches = (num_samples - 1) // batch_size + 1
    batch_dists = []
    with torch.no_grad():
        for count, batch_index in enumerate(range(opts.rank, num_batches, opts.num_gpus)):
            indices = list(range(batch_index * batch_size, min((batch_index + 1) * batch_size, num_samples)))
            _randomize_noise(G, opts.seed, batch_index, opts.device)
            images = _endpoint_images(G, samples, indices, opts.seed, epsilon, space, sampling, synthesis_kwargs)
            lpips0, lpips1 = _lpips_vectors(detector, url, lpips_input(images, crop)).chunk(2)
            dist = (lpips0 - lpips1).square().sum(dim=1).to(torch.float64) / epsilon ** 2
            batch_dists.append(F.pad(dist, [0, batch_size - len(indices)], value=float('nan')))
            progress.update((count + 1) * batch_size * opts.num_gpus)
    if samples.dataset is not None:
        samples.dataset.close()
    per_process = (num_batches - 1) // opts.num_gpus + 1
    dist = _gather_in_sample_order(opts, batch_dists, per_process, batch_size)[:num_samples]
    return trimmed_mean(dist)


def _check_settings(opts, num_samples, epsilon, space, sampling, batch_size):
    if space not in SPACES:
        raise MetricError(f'PPL space {space!r} is not one of {SPACES}; pass space=\'w\' (or \'z\').')
    if sampling not in SAMPLINGS:
        raise MetricError(f'PPL sampling {sampling!r} is not one of {SAMPLINGS}; pass sampling=\'end\' (or \'full\').')
    if not epsilon > 0:
        raise MetricError(f'PPL epsilon={epsilon} must be positive; the official value is 1e-4.')
    if not (isinstance(num_samples, int) and num_samples > 0 and isinstance(batch_size, int) and batch_size > 0):
        raise MetricError(f'PPL needs positive integer num_samples and batch_size, got {num_samples!r} and {batch_size!r}.')
    if not (hasattr(opts.G, 'mapping') and hasattr(opts.G, 'synthesis')):
        raise MetricError('PPL needs a generator with `mapping` and `synthesis` networks, which this one lacks.')
    if opts.G.c_dim and not opts.dataset_kwargs:
        raise MetricError('PPL draws the labels of this conditional generator from the dataset; pass its dataset.')


def _lpips_detector(opts, url):
    detector = metric_utils.get_feature_detector(opts, url)
    if isinstance(detector, (detectors.VGG16, detectors.FIDInceptionV3)):
        raise MetricError(_no_lpips_message(url, f'it is a plain {type(detector).__name__}'))
    return detector


def _no_lpips_message(url, reason):
    return (f'The vgg16 detector {url} cannot compute LPIPS ({reason}); pass the file made by `python -m metrics.lpips` '
            f'or NVIDIA\'s vgg16.pkl as the vgg16 detector.')


def _lpips_vectors(detector, url, images):
    try:
        vectors = detector(images, resize_images=False, return_lpips=True)
    except (TypeError, ValueError) as err:  # Detectors without the LPIPS calling convention.
        raise MetricError(_no_lpips_message(url, detectors._first_line(err).rstrip('.'))) from None
    if not isinstance(vectors, torch.Tensor) or vectors.ndim != 2 or vectors.shape[0] != images.shape[0]:
        raise MetricError(_no_lpips_message(url, 'it returned no [N, D] LPIPS vectors'))
    return vectors


def _synthesis_kwargs(G, opts):
    kwargs = dict(noise_mode='const')
    if capabilities.accepts(G, 'force_fp32'):
        kwargs['force_fp32'] = True
    if opts.G_kwargs.get('scale') is not None:
        kwargs['scale'] = opts.G_kwargs['scale']
    return kwargs


def _seed(*stream):
    return int(np.random.SeedSequence(list(stream)).generate_state(1)[0])


def _randomize_noise(G, seed, batch_index, device):
    """Redraw every noise buffer from (seed, batch_index): a batch shares it, as in the official metric."""
    generator = torch.Generator(device=device).manual_seed(_seed(seed, _NOISE_STREAM, batch_index))
    for name, buffer in G.named_buffers():
        if name.endswith('.noise_const'):
            buffer.copy_(torch.randn(buffer.shape, generator=generator, device=device, dtype=buffer.dtype))


@functools.lru_cache(maxsize=4)
def _t_chunk(seed, chunk_index):
    return np.random.default_rng([seed, _T_STREAM, chunk_index]).random(_T_CHUNK)


def path_points(seed, indices, sampling):
    """t of each sample: 0 for 'end', else U[0, 1) drawn from (seed, sample index)."""
    if sampling == 'end':
        return np.zeros(len(indices))
    return np.array([_t_chunk(seed, k // _T_CHUNK)[k % _T_CHUNK] for k in indices])


def slerp(a, b, t):
    """Spherical interpolation between the directions of a and b; unit-length result."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    cos = (a * b).sum(dim=-1, keepdim=True).clamp(-1, 1)
    angle = t * torch.acos(cos)
    ortho = b - cos * a
    ortho = ortho / ortho.norm(dim=-1, keepdim=True)
    result = a * torch.cos(angle) + ortho * torch.sin(angle)
    return result / result.norm(dim=-1, keepdim=True)


def _endpoint_images(G, samples, indices, seed, epsilon, space, sampling, synthesis_kwargs):
    """[2n, C, H, W]: the images at t for the n samples, then those at t + epsilon."""
    z, c = samples.get([2 * k + j for k in indices for j in (0, 1)])
    z0, z1, c = z[0::2], z[1::2], c[0::2]
    t = torch.from_numpy(path_points(seed, indices, sampling)).to(torch.float32).to(z.device).unsqueeze(1)
    if space == 'w':
        w0, w1 = G.mapping(torch.cat([z0, z1]), torch.cat([c, c])).chunk(2)
        ws = torch.cat([w0.lerp(w1, t.unsqueeze(2)), w0.lerp(w1, t.unsqueeze(2) + epsilon)])
    else:
        z_path = torch.cat([slerp(z0, z1, t), slerp(z0, z1, t + epsilon)])
        ws = G.mapping(z_path, torch.cat([c, c]))
    return generation.synthesize(G, ws, torch.cat([c, c]), **synthesis_kwargs).to(torch.float32)


def lpips_input(images, crop=False):
    """Generator output in [-1, 1] -> float 0..255 images as PPL feeds LPIPS (not quantised).

    With `crop` (FFHQ faces), rows [3/8, 7/8) and columns [2/8, 6/8) are kept (in units of size // 8).
    Images larger than 256 are then averaged over factor x factor blocks, factor = output height // 256
    (counted before the crop, as NVIDIA's PyTorch metric does with G.img_resolution; a remainder
    is dropped). Grayscale is repeated to 3 channels.
    """
    factor = images.shape[2] // _LPIPS_MAX_RESOLUTION
    if crop:
        row, col = images.shape[2] // 8, images.shape[3] // 8
        images = images[:, :, 3 * row:7 * row, 2 * col:6 * col]
    if factor > 1:
        images = F.avg_pool2d(images, kernel_size=factor)
    images = (images + 1) * (255 / 2)
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


def _gather_in_sample_order(opts, batch_dists, per_process, batch_size):
    """All processes' [batch_size] distance rows -> one float64 numpy vector ordered by global sample index."""
    local = torch.full([per_process, batch_size], float('nan'), dtype=torch.float64)
    if batch_dists:
        local[:len(batch_dists)] = torch.stack(batch_dists).cpu()
    if opts.num_gpus == 1:
        return local.flatten().numpy()
    device = metric_utils._collective_device(opts)
    gathered = [torch.empty_like(local, device=device) for _ in range(opts.num_gpus)]
    torch.distributed.all_gather(gathered, local.to(device))
    # Row i of process r is global batch i * num_gpus + r.
    return torch.stack([x.cpu() for x in gathered], dim=1).flatten().numpy()


def trimmed_mean(dist):
    """Mean of the distances within [1st percentile ('lower'), 99th percentile ('higher')], as a float."""
    dist = np.asarray(dist, dtype=np.float64)
    lo = np.percentile(dist, 1, method='lower')
    hi = np.percentile(dist, 99, method='higher')
    return float(dist[(dist >= lo) & (dist <= hi)].mean())
