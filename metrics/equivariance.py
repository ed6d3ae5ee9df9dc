"""Equivariance metrics of StyleGAN3 (Karras et al. 2021): EQ-T, EQ-T_frac and EQ-R as PSNRs in dB.

For every sample, the generator renders a reference image with the identity input transform and,
per metric, an image with a random transform written into `synthesis.input.transform`. The
reference is transformed the same way in image space and compared with the transformed output over
the pixels where the transformed reference is valid (a mask). PSNR is for the [-1, 1] range from the
mean squared error over all masked pixels and channels of all samples and processes.

Conventions: translations are in units of the image size (+x right, +y down), angles turn the
content counterclockwise on screen, both as `training.generation.set_input_transform`. Pixel
coordinates put pixel centres at integers, the rotation centre at ((W-1)/2, (H-1)/2).

Resampling of the reference:
- EQ-T: integer shift, no resampling; valid where the source pixel lies in the image.
- EQ-T_frac: separable Lanczos (a = 3) interpolation with the 6 taps normalised to sum 1 (constants
  stay exact); valid where all 6 taps on both axes lie in the image.
- EQ-R: band-limited rotation. With R the content rotation, the image is interpolated onto a 4x
  finer grid by a windowed sinc (cutoff half a cycle per pixel, i.e. the square S = [-1/2, 1/2]^2 in
  frequency), low-passed on the fine grid by the same kernel rotated, k(R u), whose pass band is
  R^-1 S, and the fine image is sampled at R^-1 (p - centre) + centre with a windowed-sinc
  interpolator (radius 4 fine samples; the content lies below 0.19 cycles per fine sample, where it
  is flat to about 1e-3). The rotated reference thus holds the frequencies of S ∩ R S. The
  generator's output gets the matching "pseudo-rotation": the same upsampling, the kernel k(R^-1 u)
  (pass band R S) and no rotation, so that both images carry the same band before they are compared.
  Both filtering steps run as one FFT product on a zero-padded grid. The kernel is sinc times a
  Kaiser window (beta 6) of radius 4 pixels: flat to 1e-3 up to 0.25 cycles/pixel, 0.5 at 0.5,
  about 1% left at 0.7 cycles/pixel. A pixel is valid when the whole support of the composite
  kernel around its source point lies in the image: a margin of 4 (1 + |cos| + |sin|) pixels
  (+ 1 pixel for the fine interpolator on the rotated side).

Determinism: global sample k is processed by rank k % num_gpus; its latent and label come from
`GeneratorSamples` and its transforms from numpy's default_rng([seed, 0x45510, k]) (integer and
fractional translations, then the angle, drawn every time in that order), so that any number of
processes gives the same number. Unlike the official code, which draws one transform per batch of 4,
every sample has its own transforms and is generated alone.
"""

import copy

import numpy as np
import torch

from metrics import metric_utils
from training import capabilities, generation

UPSAMPLING = 4              # fine-grid factor of the band-limited rotation
FILTER_RADIUS = 4           # pixels, support radius of the band-limiting windowed sinc
FILTER_BETA = 6.0           # Kaiser window shape
INTERP_RADIUS = 4           # fine samples, support radius of the interpolator on the fine grid
LANCZOS_A = 3
_TRANSFORM_STREAM = 0x45510  # keeps the transform draws independent of GeneratorSamples' (seed, chunk) streams

# ----------------------------------------------------------------------------------------------
# 1-D kernels (numpy float64).


def lanczos(t, a=LANCZOS_A):
    t = np.asarray(t, dtype=np.float64)
    return np.where(np.abs(t) < a, np.sinc(t) * np.sinc(t / a), 0.0)


def windowed_sinc(t, radius, beta=FILTER_BETA):
    """sinc(t) (cutoff half a cycle per unit) under a Kaiser window reaching zero at |t| = radius."""
    t = np.asarray(t, dtype=np.float64)
    window = np.i0(beta * np.sqrt(np.clip(1 - np.square(t / radius), 0, None))) / np.i0(beta)
    return np.where(np.abs(t) < radius, np.sinc(t) * window, 0.0)


def _windowed_sinc_torch(t, radius, beta=FILTER_BETA):
    window = torch.special.i0(beta * (1 - (t / radius).square()).clamp(min=0).sqrt()) / float(np.i0(beta))
    return torch.where(t.abs() < radius, torch.sinc(t) * window, torch.zeros_like(t))


# ----------------------------------------------------------------------------------------------
# Translations. Images are [N, C, H, W]; masks are [H, W] bool.


def _shift_slices(shift, size):
    dst = slice(max(shift, 0), size + min(shift, 0))
    src = slice(max(-shift, 0), size + min(-shift, 0))
    return dst, src


def translate_integer(images, dx, dy):
    """Move the content by (dx, dy) whole pixels; (shifted, mask) with zeros where the source is outside."""
    height, width = images.shape[-2:]
    out = torch.zeros_like(images)
    mask = torch.zeros([height, width], dtype=torch.bool, device=images.device)
    if abs(dx) >= width or abs(dy) >= height:
        return out, mask
    (dst_y, src_y), (dst_x, src_x) = _shift_slices(int(dy), height), _shift_slices(int(dx), width)
    out[..., dst_y, dst_x] = images[..., src_y, src_x]
    mask[dst_y, dst_x] = True
    return out, mask


def _lanczos_shift_axis(images, shift, dim):
    """out[x] = sum_m w_m in[x - n - m], n = floor(shift), w_m = L(m - frac) normalised; valid [size] bool."""
    size = images.shape[dim]
    whole = int(np.floor(shift))
    taps = np.arange(1 - LANCZOS_A, LANCZOS_A + 1)
    weights = lanczos(taps - (shift - whole))
    weights /= weights.sum()
    dst = torch.arange(size, device=images.device)
    out = torch.zeros_like(images)
    valid = torch.ones([size], dtype=torch.bool, device=images.device)
    for tap, weight in zip(taps, weights):
        src = dst - whole - int(tap)
        valid &= (src >= 0) & (src < size)
        out += float(weight) * images.index_select(dim, src.clamp(0, size - 1))
    return out, valid


def translate_lanczos(images, dx, dy):
    """Move the content by (dx, dy) pixels (any reals) with separable Lanczos-3; (shifted, mask)."""
    out, valid_x = _lanczos_shift_axis(images, dx, dim=-1)
    out, valid_y = _lanczos_shift_axis(out, dy, dim=-2)
    mask = valid_y[:, None] & valid_x[None, :]
    return out * mask, mask


# ----------------------------------------------------------------------------------------------
# Band-limited rotation.


def _rotation(angle):
    """Content rotation counterclockwise on screen, in (x, y-down) coordinates."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, s], [-s, c]])


def filter_margin(angle, radius=FILTER_RADIUS):
    """Half-extent (pixels) along x and y of the upsampling kernel convolved with the rotated one."""
    return radius * (1 + abs(np.cos(angle)) + abs(np.sin(angle)))


def _upsampling_kernel(radius):
    """1-D interpolation kernel on the fine grid, offsets -U*radius..U*radius; each phase sums to 1."""
    offsets = np.arange(-UPSAMPLING * radius, UPSAMPLING * radius + 1)
    kernel = windowed_sinc(offsets / UPSAMPLING, radius)
    for phase in range(UPSAMPLING):
        kernel[offsets % UPSAMPLING == phase] /= kernel[offsets % UPSAMPLING == phase].sum()
    return offsets, kernel


def _oriented_kernel(angle, radius):
    """k(R u) on fine-grid offsets u, k the separable windowed sinc: pass band R^-1 S. Sums to 1."""
    extent = int(np.ceil(UPSAMPLING * radius * (abs(np.cos(angle)) + abs(np.sin(angle)))))
    offsets = np.arange(-extent, extent + 1)
    uy, ux = np.meshgrid(offsets / UPSAMPLING, offsets / UPSAMPLING, indexing='ij')
    rotation = _rotation(angle)
    rx = rotation[0, 0] * ux + rotation[0, 1] * uy
    ry = rotation[1, 0] * ux + rotation[1, 1] * uy
    kernel = windowed_sinc(rx, radius) * windowed_sinc(ry, radius)
    return offsets, kernel / kernel.sum()


def _circular(offsets_y, offsets_x, kernel, shape, device):
    """Place a kernel given on integer offsets into a periodic array of `shape` (offset 0 at index 0)."""
    array = torch.zeros(shape, dtype=torch.float32, device=device)
    iy = torch.as_tensor(np.mod(offsets_y, shape[0]), device=device)
    ix = torch.as_tensor(np.mod(offsets_x, shape[1]), device=device)
    array[iy[:, None], ix[None, :]] = torch.as_tensor(kernel, dtype=torch.float32, device=device)
    return array


def _band_limited_fine(images, filter_angle, radius, pad):
    """The image interpolated onto the 4x grid and low-passed by k(R(filter_angle) u).

    Fine index k is pixel coordinate k / UPSAMPLING - pad; the convolution is circular over the
    padded grid, so `pad` must cover the kernel's extent for the valid pixels to be exact.
    """
    n, c, height, width = images.shape
    fine_shape = (UPSAMPLING * (height + 2 * pad), UPSAMPLING * (width + 2 * pad))
    stuffed = images.new_zeros([n, c, *fine_shape])
    stuffed[..., UPSAMPLING * pad:UPSAMPLING * (pad + height):UPSAMPLING,
            UPSAMPLING * pad:UPSAMPLING * (pad + width):UPSAMPLING] = images
    up_offsets, up_kernel = _upsampling_kernel(radius)
    rot_offsets, rot_kernel = _oriented_kernel(filter_angle, radius)
    zero = np.zeros([1], dtype=np.int64)
    spectrum = torch.fft.rfft2(_circular(up_offsets, zero, up_kernel[:, None], fine_shape, images.device))
    spectrum = spectrum * torch.fft.rfft2(_circular(zero, up_offsets, up_kernel[None, :], fine_shape, images.device))
    spectrum = spectrum * torch.fft.rfft2(_circular(rot_offsets, rot_offsets, rot_kernel, fine_shape, images.device))
    return torch.fft.irfft2(torch.fft.rfft2(stuffed) * spectrum, s=fine_shape)


def _interp_weights(position):
    """Fine-grid taps (floor - R + 1 .. floor + R) and their normalised windowed-sinc weights, per position."""
    base = torch.floor(position)
    taps = torch.arange(1 - INTERP_RADIUS, INTERP_RADIUS + 1, device=position.device, dtype=position.dtype)
    index = base[..., None] + taps
    weights = _windowed_sinc_torch(position[..., None] - index, INTERP_RADIUS).to(torch.float32)
    return index.long(), weights / weights.sum(dim=-1, keepdim=True)


def _sample_fine(fine, fx, fy):
    """fine [N, C, Hf, Wf] interpolated at fine coordinates (fx, fy) [H, W]; indices clamped to the grid."""
    n, c, fine_h, fine_w = fine.shape
    index_x, weight_x = _interp_weights(fx)
    index_y, weight_y = _interp_weights(fy)
    index_x, index_y = index_x.clamp(0, fine_w - 1), index_y.clamp(0, fine_h - 1)
    flat = fine.reshape(n, c, fine_h * fine_w)
    out = torch.zeros([n, c, *fx.shape], dtype=fine.dtype, device=fine.device)
    for j in range(index_y.shape[-1]):
        row = torch.zeros_like(out)
        for i in range(index_x.shape[-1]):
            gathered = flat[:, :, (index_y[..., j] * fine_w + index_x[..., i]).reshape(-1)].reshape(out.shape)
            row += weight_x[..., i] * gathered
        out += weight_y[..., j] * row
    return out


def _inside(coord, margin, size):
    # The tolerance keeps exact quarter turns, whose coordinates carry rounding noise, at full size.
    return (coord >= margin - 1 - 1e-6) & (coord <= size - margin + 1e-6)


def rotate_band_limited(images, angle, radius=FILTER_RADIUS):
    """Turn the content counterclockwise by `angle` radians about the image centre, band-limited to S ∩ R S.

    Returns (rotated, mask); see the module docstring for the filter and the validity margin.
    """
    height, width = images.shape[-2:]
    margin = filter_margin(angle, radius) + INTERP_RADIUS / UPSAMPLING
    pad = int(np.ceil(margin)) + 1
    fine = _band_limited_fine(images, angle, radius, pad)
    py, px = torch.meshgrid(torch.arange(height, dtype=torch.float64, device=images.device),
                            torch.arange(width, dtype=torch.float64, device=images.device), indexing='ij')
    cx, cy = (width - 1) / 2, (height - 1) / 2
    inverse = _rotation(angle).T
    qx = inverse[0, 0] * (px - cx) + inverse[0, 1] * (py - cy) + cx
    qy = inverse[1, 0] * (px - cx) + inverse[1, 1] * (py - cy) + cy
    out = _sample_fine(fine, UPSAMPLING * (qx + pad), UPSAMPLING * (qy + pad))
    mask = _inside(qx, margin, width) & _inside(qy, margin, height)
    return out * mask, mask


def pseudo_rotate(images, angle, radius=FILTER_RADIUS):
    """The band limit of `rotate_band_limited(., angle)` on an already rotated image: S ∩ R S, no motion."""
    height, width = images.shape[-2:]
    margin = filter_margin(angle, radius)
    pad = int(np.ceil(margin)) + 1
    fine = _band_limited_fine(images, -angle, radius, pad)
    start = UPSAMPLING * pad
    out = fine[..., start:start + UPSAMPLING * height:UPSAMPLING, start:start + UPSAMPLING * width:UPSAMPLING]
    coords = torch.arange(max(height, width), dtype=torch.float64, device=images.device)
    mask = _inside(coords[:height, None], margin, height) & _inside(coords[None, :width], margin, width)
    return out * mask, mask


# ----------------------------------------------------------------------------------------------
# Error sums and PSNR.


def masked_error_sums(a, b, mask):
    """(sum of squared differences over masked pixels and channels, number of those values), float64."""
    diff = (a.to(torch.float64) - b.to(torch.float64)).square()
    weight = mask.to(torch.float64).expand_as(diff)
    return torch.stack([(diff * weight).sum(), weight.sum()])


def psnr_from_sums(error_sum, count):
    """PSNR in dB for images in [-1, 1]: 20 log10(2) - 10 log10(error_sum / count)."""
    mse = float(error_sum) / float(count)
    return float('inf') if mse == 0 else float(20 * np.log10(2) - 10 * np.log10(mse))


# ----------------------------------------------------------------------------------------------
# The metric.


def draw_transforms(seed, index, translate_max, rotate_max):
    """(t_int, t_frac, angle) of global sample `index`: translations in units of the image size (t_int
    before rounding to whole pixels), the angle in radians."""
    rng = np.random.default_rng([seed, _TRANSFORM_STREAM, index])
    t_int = rng.uniform(-1, 1, size=2) * translate_max
    t_frac = rng.uniform(-1, 1, size=2) * translate_max
    angle = rng.uniform(-1, 1) * np.pi * rotate_max
    return t_int, t_frac, angle


def _synthesize(G, ws, c):
    """Constant noise and fp32 layers (the protocol); the camera only for synthesis networks that take it."""
    kwargs = dict(force_fp32=True) if capabilities.accepts(G, 'force_fp32') else {}
    return generation.synthesize(G, ws, c, noise_mode='const', **kwargs).to(torch.float32)


def _transformed(G, ws, c, translate=(0, 0), angle=0.0):
    generation.set_input_transform(G, translate=translate, rotate=float(np.degrees(angle)))
    return _synthesize(G, ws, c)


def _sample_sums(G, samples, index, transforms, wanted):
    """[len(wanted), 2] (error sum, count) of global sample `index` for the requested metrics.

    A sample runs on its own (batch of 1): the input transform is one per forward pass, and the
    numbers then do not depend on how samples are grouped into batches and processes.
    """
    z, c = samples.get([index])
    ws = G.mapping(z, c)
    reference = _transformed(G, ws, c)
    t_int, t_frac, angle = transforms
    height, width = reference.shape[-2:]
    size = np.array([width, height])
    sums = []
    if 'eqt_int' in wanted:
        shift = np.round(t_int * size).astype(np.int64)
        image = _transformed(G, ws, c, translate=shift / size)
        ref, mask = translate_integer(reference, int(shift[0]), int(shift[1]))
        sums.append(masked_error_sums(image, ref, mask))
    if 'eqt_frac' in wanted:
        image = _transformed(G, ws, c, translate=t_frac)
        ref, mask = translate_lanczos(reference, *(t_frac * size))
        sums.append(masked_error_sums(image, ref, mask))
    if 'eqr' in wanted:
        image, image_mask = pseudo_rotate(_transformed(G, ws, c, angle=angle), angle)
        ref, mask = rotate_band_limited(reference, angle)
        sums.append(masked_error_sums(image, ref, mask & image_mask))
    return torch.stack(sums).cpu()


def _local_indices(samples, batch_index, batch_size, num_samples):
    return [k for k in samples.rank_indices(batch_index, batch_size) if k < num_samples]


def compute_equivariances(opts, num_samples, batch_size, translate_max=0.125, rotate_max=1,
                          compute_eqt_int=False, compute_eqt_frac=False, compute_eqr=False):
    """PSNRs (dB) of EQ-T, EQ-T_frac and EQ-R, those requested, in that order; the same on every rank.

    `translate_max` bounds the translations (units of the image size), `rotate_max` the angle (units
    of pi). `batch_size` samples per process make one step of the loop and of its RNG stream; each
    sample is still generated alone (see `_sample_sums`). The generator runs on a copy with constant
    noise and fp32 layers; opts.G_kwargs are not used.
    """
    flags = dict(eqt_int=compute_eqt_int, eqt_frac=compute_eqt_frac, eqr=compute_eqr)
    wanted = [name for name, flag in flags.items() if flag]
    if not capabilities.accepts(opts.G, 'transform'):
        raise metric_utils.MetricError(f'Equivariance metrics need a StyleGAN3-type generator with an input transform '
                                       f'(synthesis.input.transform); this {type(opts.G).__name__} has none.')
    if not wanted:
        return ()
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    opts = copy.copy(opts)
    opts.G = G
    samples = metric_utils.GeneratorSamples(opts)
    progress = metric_utils.ProgressMonitor(opts, 'equivariance', num_samples)
    sums = torch.zeros([len(wanted), 2], dtype=torch.float64)
    batch_index = 0
    while indices := _local_indices(samples, batch_index, batch_size, num_samples):
        with torch.no_grad(), metric_utils.seeded_torch_rng(opts, batch_index):
            for k in indices:
                sums += _sample_sums(G, samples, k, draw_transforms(opts.seed, k, translate_max, rotate_max), wanted)
        batch_index += 1
        progress.update(batch_index * batch_size * opts.num_gpus)
    if samples.dataset is not None:
        samples.dataset.close()
    progress.update(num_samples)
    if opts.num_gpus > 1:
        total = sums.to(metric_utils._collective_device(opts))
        torch.distributed.all_reduce(total)
        sums = total.cpu()
    if (sums[:, 1] == 0).any():
        raise metric_utils.MetricError(f'The {G.img_resolution}-pixel images leave no valid pixels after the '
                                       f'equivariance transforms; use a larger generator or smaller translate_max.')
    return tuple(psnr_from_sums(error, count) for error, count in sums.tolist())
