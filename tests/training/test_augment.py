"""ADA augmentation pipeline (training/augment.py) against closed forms and float64 numpy/scipy oracles.

Deterministic transforms come from `debug_percentile=q`, which replaces every random draw by its
q-quantile; the expected values below are computed from scipy's quantile functions, not from the
pipeline. Coordinates: x right, y down, centred on the image; "counter-clockwise" means as displayed.
"""

import copy
import inspect
import io
import itertools
import pickle
import random
from math import comb

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from scipy.stats import halfnorm, norm

from torch_utils import persistence
from training import augment
from training.augment import AugmentPipe, augpipe_specs

# ----------------------------------------------------------------------------------------------
# Independent derivations of the wavelets and the filter bank.


def _daubechies_factorisations(order):
    """Every real orthonormal low-pass with `order` vanishing moments, by spectral factorisation.

    |H(w)|^2 = 2 cos^(2N)(w/2) P(sin^2(w/2)) with P(y) = sum_k C(N-1+k, k) y^k; each root y of P gives
    the pair z, 1/z with y = (2 - z - 1/z) / 4, and a filter keeps one of each pair (conjugates together).
    """
    y_roots = np.roots([comb(order - 1 + k, k) for k in range(order)][::-1])
    groups, used = [], set()
    for i, y in enumerate(y_roots):
        if i in used:
            continue
        used.add(i)
        if abs(y.imag) < 1e-9:
            groups.append([y.real])
        else:
            j = min((j for j in range(len(y_roots)) if j not in used), key=lambda j: abs(y_roots[j] - np.conj(y)))
            used.add(j)
            groups.append([y, y_roots[j]])
    filters = []
    for choice in itertools.product([0, 1], repeat=len(groups)):
        poly = np.array([1.0 + 0j])
        for _ in range(order):
            poly = np.convolve(poly, [1, 1])
        for group, pick in zip(groups, choice):
            for y in group:
                z = sorted(np.roots([1, -(2 - 4 * y), 1]), key=abs)[pick]
                poly = np.convolve(poly, [1, -z])
        h = poly.real
        filters.append(h / h.sum() * np.sqrt(2))
    return filters


def _phase_nonlinearity(h):
    w = np.linspace(0, np.pi, 513)[1:-1]
    phase = np.unwrap(np.angle(np.exp(-1j * np.outer(w, np.arange(len(h)))) @ h))
    design = np.stack([w, np.ones_like(w)], axis=1)
    residual = phase - design @ np.linalg.lstsq(design, phase, rcond=None)[0]
    return np.sum(residual ** 2)


def _symlet(order):
    """The least asymmetric Daubechies filter (symlet), up to time reversal."""
    return min(_daubechies_factorisations(order), key=_phase_nonlinearity)


def _half_band_response(lowpass, w):
    """lo(w) = |H(w)|^2 / 2 on the frequencies `w`."""
    h = np.asarray(lowpass, dtype=np.float64)
    return np.abs(np.exp(-1j * np.outer(w, np.arange(len(h)))) @ h) ** 2 / 2


def _oracle_filter_bank(lowpass, taps=43, fft_size=128):
    """The 4-band bank from its frequency responses: band 3 = 1 - lo(w), band 2 = lo(w)(1 - lo(2w)),
    band 1 = lo(w) lo(2w) (1 - lo(4w)), band 0 = lo(w) lo(2w) lo(4w); taps by inverse DFT."""
    w = 2 * np.pi * np.arange(fft_size) / fft_size
    lo1, lo2, lo4 = (_half_band_response(lowpass, k * w) for k in (1, 2, 4))
    responses = [lo1 * lo2 * lo4, lo1 * lo2 * (1 - lo4), lo1 * (1 - lo2), 1 - lo1]
    half = taps // 2
    offsets = np.arange(-half, half + 1) % fft_size
    return np.stack([np.fft.ifft(r).real[offsets] for r in responses])


@pytest.mark.parametrize('name, order', [('SYM2', 2), ('SYM6', 6)])
def test_wavelet_constants_are_orthonormal_lowpass_filters_with_vanishing_moments(name, order):
    h = np.asarray(getattr(augment, name), dtype=np.float64)
    assert len(h) == 2 * order
    assert abs(h.sum() - np.sqrt(2)) < 1e-12
    for shift in range(order):
        assert abs(np.dot(h[:len(h) - 2 * shift], h[2 * shift:]) - (shift == 0)) < 1e-11
    # The matching high-pass g[n] = (-1)^n h[L-1-n] annihilates polynomials of degree < order.
    n = np.arange(len(h), dtype=np.float64)
    g = (-1.0) ** n * h[::-1]
    for k in range(order):
        assert abs(np.sum(g * n ** k)) < 1e-10 * np.sum(np.abs(g) * n ** k)  # published to ~16 digits
    assert abs(np.sum(g * n ** order)) > 1e-3  # exactly `order` moments, not more


@pytest.mark.parametrize('name, order', [('SYM2', 2), ('SYM6', 6)])
def test_wavelet_constants_are_the_least_asymmetric_spectral_factorisation(name, order):
    h = np.asarray(getattr(augment, name), dtype=np.float64)
    symlet = _symlet(order)
    assert min(np.abs(h - symlet).max(), np.abs(h - symlet[::-1]).max()) < 1e-10


def test_constructor_signature_and_buffers_match_the_official_pipeline():
    official = dict(xflip=0, rotate90=0, xint=0, xint_max=0.125, scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2,
                    rotate_max=1, aniso_std=0.2, xfrac_std=0.125, brightness=0, contrast=0, lumaflip=0, hue=0,
                    saturation=0, brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1, imgfilter=0,
                    imgfilter_bands=[1, 1, 1, 1], imgfilter_std=1, noise=0, cutout=0, noise_std=0.1,
                    cutout_size=0.5)
    # The persistence decorator wraps __init__ as (*args, **kwargs); the class it wraps has the signature.
    params = inspect.signature(AugmentPipe.__bases__[0].__init__).parameters
    assert list(params)[1:] == list(official)
    assert {name: params[name].default for name in official} == official
    assert list(inspect.signature(AugmentPipe.forward).parameters) == ['self', 'images', 'debug_percentile']

    pipe = AugmentPipe()
    buffers = dict(pipe.named_buffers())
    assert list(buffers) == ['p', 'Hz_geom', 'Hz_fbank'] and not list(pipe.parameters())
    assert buffers['p'].shape == () and buffers['p'].item() == 1
    # setup_filter keeps a 12-tap filter 1-D and normalises it to unit sum.
    sym6 = np.asarray(augment.SYM6)
    assert buffers['Hz_geom'].dtype == torch.float32 and buffers['Hz_geom'].shape == (12,)
    np.testing.assert_allclose(buffers['Hz_geom'].numpy(), sym6 / sym6.sum(), rtol=0, atol=1e-7)
    assert buffers['Hz_fbank'].dtype == torch.float32 and buffers['Hz_fbank'].shape == (4, 43)


def test_filter_bank_bands_are_octaves_that_sum_to_the_identity():
    bank = AugmentPipe().Hz_fbank.double().numpy()
    np.testing.assert_allclose(bank, _oracle_filter_bank(augment.SYM2), rtol=0, atol=1e-7)
    np.testing.assert_allclose(bank, bank[:, ::-1], rtol=0, atol=1e-7)  # zero phase
    impulse = np.zeros(43)
    impulse[21] = 1
    np.testing.assert_allclose(bank.sum(axis=0), impulse, rtol=0, atol=1e-7)
    # DC passes only the lowest band; Nyquist only the highest.
    np.testing.assert_allclose(bank.sum(axis=1), [1, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(bank @ (-1.0) ** np.arange(43), [0, 0, 0, -1], atol=1e-7)

# ----------------------------------------------------------------------------------------------
# Identity and probabilities.


def test_strength_zero_is_an_exact_identity():
    torch.manual_seed(0)
    images = torch.randn([6, 3, 16, 20])
    pipe = AugmentPipe(**augpipe_specs['bgcfnc'])
    pipe.p.zero_()
    assert torch.equal(pipe(images), images)
    # No group enabled: identity whatever the strength.
    assert torch.equal(AugmentPipe()(images), images)


def _fraction(mask):
    return mask.double().mean().item()


def _binomial_tolerance(probability, n):
    return 4.5 * np.sqrt(probability * (1 - probability) / n)


def test_effective_probability_is_multiplier_times_strength():
    torch.manual_seed(1)
    n, p = 4000, 0.3
    images = torch.randn([n, 1, 4, 4])

    # xflip: applied with probability p, and then flips or keeps with equal odds.
    pipe = AugmentPipe(xflip=1)
    pipe.p.fill_(p)
    out = pipe(images)
    flipped = (out == images.flip(3)).flatten(1).all(1)
    kept = (out == images).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert abs(_fraction(flipped) - p / 2) < _binomial_tolerance(p / 2, n)

    # A multiplier scales the probability.
    pipe = AugmentPipe(brightness=0.5)
    pipe.p.fill_(2 * p)
    changed = (pipe(images) != images).flatten(1).any(1)
    assert abs(_fraction(changed) - p) < _binomial_tolerance(p, n)

    # rotate90: applied with probability p, then 1, 2 or 3 quarter turns in 3 cases of 4.
    pipe = AugmentPipe(rotate90=1)
    pipe.p.fill_(p)
    changed = (pipe(images) != images).flatten(1).any(1)
    assert abs(_fraction(changed) - 0.75 * p) < _binomial_tolerance(0.75 * p, n)


def test_rotation_runs_with_total_probability_p_split_over_two_draws():
    torch.manual_seed(2)
    n, p = 2000, 0.6
    images = torch.randn([n, 1, 8, 8])
    pipe = AugmentPipe(rotate=1)
    pipe.p.fill_(p)
    changed = (pipe(images) - images).abs().flatten(1).amax(1) > 1e-4
    assert abs(_fraction(changed) - p) < _binomial_tolerance(p, n)


def test_randomness_comes_only_from_torch_and_replays_with_its_state():
    images = torch.randn([4, 3, 16, 16])
    pipe = AugmentPipe(**augpipe_specs['bgcfnc'])
    pipe.p.fill_(0.8)
    torch.manual_seed(5)
    np.random.seed(0)
    random.seed(0)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    first = pipe(images)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1]) and random.getstate() == python_state
    torch.manual_seed(5)
    np.random.seed(1)
    random.seed(1)
    assert torch.equal(pipe(images), first)
    torch.manual_seed(6)
    assert not torch.equal(pipe(images), first)

# ----------------------------------------------------------------------------------------------
# Pixel blitting: exact.


@pytest.mark.parametrize('shape', [(16, 16), (12, 20)])
def test_xflip_with_certainty_mirrors_every_image_exactly(shape):
    images = torch.randn([5, 3, *shape])
    pipe = AugmentPipe(xflip=1)
    for q, expected in [(0.3, images), (0.7, images.flip(3)), (1.0, images.flip(3))]:
        assert torch.equal(pipe(images, debug_percentile=q), expected)


def test_rotate90_turns_counter_clockwise_like_torch_rot90():
    images = torch.randn([3, 2, 16, 16])
    pipe = AugmentPipe(rotate90=1)
    for q, turns in [(0.1, 0), (0.3, 1), (0.6, 2), (0.9, 3), (1.0, 3)]:
        assert torch.equal(pipe(images, debug_percentile=q), torch.rot90(images, turns, dims=(2, 3))), q
    # The content turns counter-clockwise: the top-right corner lands top-left.
    corner = torch.zeros([1, 1, 4, 4])
    corner[0, 0, 0, 3] = 1
    assert pipe(corner, debug_percentile=0.3)[0, 0, 0, 0] == 1


def test_rotate90_of_a_rectangle_turns_its_central_square():
    images = torch.randn([2, 1, 12, 16])
    out = AugmentPipe(rotate90=1)(images, debug_percentile=0.3)
    assert out.shape == images.shape
    assert torch.equal(out[:, :, :, 2:14], torch.rot90(images[:, :, :, 2:14], 1, dims=(2, 3)))


def _shift_with_reflection(image, dy, dx):
    """out[i, j] = image[i - dy, j - dx], positions outside mirrored back in (numpy 'reflect')."""
    h, w = image.shape[-2:]
    pad = [(0, 0)] * (image.ndim - 2) + [(max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))]
    padded = np.pad(image, pad, mode='reflect')
    y0, x0 = max(-dy, 0), max(-dx, 0)
    return padded[..., y0:y0 + h, x0:x0 + w]


@pytest.mark.parametrize('shape, q, xint_max, shift', [
    ((16, 16), 0.75, 0.125, (1, 1)),     # (2q - 1) * xint_max * size = 1 pixel right and down
    ((16, 16), 0.0, 0.125, (-2, -2)),
    ((16, 24), 0.9, 0.125, (2, 2)),      # 0.1 * 16 = 1.6 -> 2 rows, 0.1 * 24 = 2.4 -> 2 columns
    ((8, 8), 1.0, 0.5, (4, 4)),
])
def test_integer_translation_moves_content_by_whole_pixels_with_mirrored_borders(shape, q, xint_max, shift):
    images = torch.randn([2, 3, *shape])
    out = AugmentPipe(xint=1, xint_max=xint_max)(images, debug_percentile=q)
    assert np.array_equal(out.numpy(), _shift_with_reflection(images.numpy(), *shift))


def test_blits_compose_flip_then_quarter_turns_then_shift():
    images = torch.randn([2, 3, 16, 16])
    out = AugmentPipe(**augpipe_specs['blit'])(images, debug_percentile=0.8)
    # q = 0.8: flip (floor(1.6) = 1), 3 quarter turns (floor(3.2)), shift round(0.6 * 0.125 * 16) = 1.
    expected = np.rot90(images.numpy()[..., ::-1], 3, axes=(2, 3))
    assert np.array_equal(out.numpy(), _shift_with_reflection(expected, 1, 1))


def test_blitted_images_stay_exact_in_a_batch_where_others_are_resampled():
    torch.manual_seed(3)
    images = torch.randn([64, 1, 8, 8])
    pipe = AugmentPipe(xflip=1, scale=1)
    pipe.p.fill_(0.5)
    out = pipe(images)
    exact = (out == images).flatten(1).all(1) | (out == images.flip(3)).flatten(1).all(1)
    far = ((out - images).abs().flatten(1).amax(1) > 1e-3) & ((out - images.flip(3)).abs().flatten(1).amax(1) > 1e-3)
    assert bool((exact | far).all())
    # Scaling is drawn for half of the images.
    assert abs(_fraction(exact) - 0.5) < _binomial_tolerance(0.5, 64)

# ----------------------------------------------------------------------------------------------
# General geometric transforms, against a smooth analytic image.


def _smooth_image(G_inv, height, width):
    """f(G_inv @ q) at every pixel centre q for a smooth (well below Nyquist) function f, and G_inv @ q."""
    ys, xs = np.meshgrid(np.arange(height) - (height - 1) / 2, np.arange(width) - (width - 1) / 2, indexing='ij')
    X, Y, _ = G_inv @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    f = (np.cos(2 * np.pi * X / 16 + 0.3) + 0.5 * np.sin(2 * np.pi * (0.6 * X + Y) / 20)
         + 0.3 * np.cos(2 * np.pi * Y / 13))
    return f.reshape(height, width), X.reshape(height, width), Y.reshape(height, width)


def _rotation_inv(theta):
    # Content turned counter-clockwise by theta (y down): output q shows input at [[c, -s], [s, c]] q.
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


GEOMETRIC_CASES = {
    # name: (pipe kwargs, q, inverse transform in centred pixels)
    'scale': (dict(scale=1), 0.8, np.diag([2 ** -(norm.ppf(0.8) * 0.2)] * 2 + [1])),
    'rotate': (dict(rotate=1, rotate_max=1 / 3), 0.75, _rotation_inv(np.pi / 6)),
    'aniso': (dict(aniso=1), 0.2, np.diag([2 ** -(norm.ppf(0.2) * 0.2), 2 ** (norm.ppf(0.2) * 0.2), 1])),
    'xfrac': (dict(xfrac=1), 0.6, np.array([[1, 0, -norm.ppf(0.6) * 0.125 * 32],
                                            [0, 1, -norm.ppf(0.6) * 0.125 * 24], [0, 0, 1]])),
}


@pytest.mark.parametrize('name', sorted(GEOMETRIC_CASES))
def test_general_transforms_match_the_analytic_image(name):
    kwargs, q, G_inv = GEOMETRIC_CASES[name]
    height, width = 24, 32
    source, _, _ = _smooth_image(np.eye(3), height, width)
    out = AugmentPipe(**kwargs)(torch.tensor(source, dtype=torch.float32)[None, None], debug_percentile=q)
    expected, X, Y = _smooth_image(G_inv, height, width)
    # Where the sampled point has real image (not mirrored padding) around it.
    inside = (np.abs(X) < (width - 1) / 2 - 3) & (np.abs(Y) < (height - 1) / 2 - 3)
    assert inside.mean() > 0.3
    assert np.abs(out[0, 0].numpy() - expected)[inside].max() < 0.02


def test_resampled_quarter_turn_agrees_with_the_exact_blit():
    # rotate_max = 0.5 and q = 1 give a rotation by exactly pi/2 through the resampling path; it
    # must turn the same way, about the same centre, as the pixel-exact rotate90.
    source, _, _ = _smooth_image(np.eye(3), 24, 24)
    images = torch.tensor(source, dtype=torch.float32)[None, None]
    resampled = AugmentPipe(rotate=1, rotate_max=0.5)(images, debug_percentile=1.0)
    blitted = AugmentPipe(rotate90=1)(images, debug_percentile=0.3)
    assert torch.equal(blitted, torch.rot90(images, 1, dims=(2, 3)))
    assert (resampled - blitted)[..., 3:-3, 3:-3].abs().max() < 0.01


def test_resampling_the_identity_reconstructs_any_image():
    # Upsampling by h and downsampling by reversed h leaves the autocorrelation of an orthonormal
    # filter, a unit impulse at the kept phase: exact even for white noise.
    images = torch.randn([3, 2, 12, 16], dtype=torch.float64)
    out = augment.resample(images, torch.eye(3, dtype=torch.float64).expand(3, 3, 3), AugmentPipe().Hz_geom)
    assert (out - images).abs().max() < 1e-5

# ----------------------------------------------------------------------------------------------
# Colour.


def _luma_flip(rgb):
    return rgb - 2 * rgb.mean(axis=1, keepdims=True)


def _hue_rotation(rgb, theta):
    axis = np.ones(3) / np.sqrt(3)
    matrix = Rotation.from_rotvec(theta * axis).as_matrix()
    return np.einsum('ij,njhw->nihw', matrix, rgb)


def _saturation(rgb, s):
    mean = rgb.mean(axis=1, keepdims=True)
    return mean + s * (rgb - mean)


COLOUR_CASES = {
    'brightness': (dict(brightness=1), 0.8, lambda c: c + norm.ppf(0.8) * 0.2),
    'contrast': (dict(contrast=1), 0.3, lambda c: c * 2 ** (norm.ppf(0.3) * 0.5)),
    'lumaflip on': (dict(lumaflip=1), 0.7, _luma_flip),
    'lumaflip off': (dict(lumaflip=1), 0.3, lambda c: c),
    'hue': (dict(hue=1), 0.8, lambda c: _hue_rotation(c, 0.6 * np.pi)),
    'hue half range': (dict(hue=1, hue_max=0.5), 0.1, lambda c: _hue_rotation(c, -0.4 * np.pi)),
    'saturation': (dict(saturation=1), 0.2, lambda c: _saturation(c, 2 ** norm.ppf(0.2))),
    'all, in order': (augpipe_specs['color'], 0.65, lambda c: _saturation(_hue_rotation(_luma_flip(
        (c + norm.ppf(0.65) * 0.2) * 2 ** (norm.ppf(0.65) * 0.5)), 0.3 * np.pi), 2 ** norm.ppf(0.65))),
}


@pytest.mark.parametrize('name', sorted(COLOUR_CASES))
def test_colour_transforms_match_their_closed_forms(name):
    kwargs, q, expected = COLOUR_CASES[name]
    images = torch.randn([3, 3, 8, 8], dtype=torch.float64)
    out = AugmentPipe(**kwargs)(images, debug_percentile=q)
    np.testing.assert_allclose(out.numpy(), expected(images.numpy()), rtol=0, atol=1e-5)


def test_hue_rotation_keeps_luma_and_chroma_norm_and_zero_saturation_gives_grey():
    images = torch.randn([4, 3, 8, 8], dtype=torch.float64)
    out = AugmentPipe(hue=1)(images, debug_percentile=0.9)
    mean_in, mean_out = images.mean(1, keepdim=True), out.mean(1, keepdim=True)
    assert torch.allclose(mean_out, mean_in, atol=1e-6)
    assert torch.allclose((out - mean_out).norm(dim=1), (images - mean_in).norm(dim=1), atol=1e-6)
    assert not torch.allclose(out, images, atol=1e-2)
    # A saturation factor of 2^(-30 * 2.33) is zero for all purposes: every pixel becomes its grey.
    grey = AugmentPipe(saturation=1, saturation_std=30)(images, debug_percentile=0.01)
    assert torch.allclose(grey, mean_in.expand_as(images), atol=1e-6)


def test_grayscale_images_use_the_average_row():
    images = torch.randn([3, 1, 8, 8], dtype=torch.float64)
    out = AugmentPipe(**augpipe_specs['color'])(images, debug_percentile=0.7)
    # Brightness, contrast, then the luma flip negates grey; hue and saturation leave grey alone.
    expected = -(images.numpy() + norm.ppf(0.7) * 0.2) * 2 ** (norm.ppf(0.7) * 0.5)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-5)
    # The whole pipeline runs on one channel.
    pipe = AugmentPipe(**augpipe_specs['bgcfnc'])
    assert pipe(images.float()).shape == images.shape


def test_colour_needs_one_channel_or_rgb_triples():
    for channels in (2, 4):
        images = torch.randn([2, channels, 8, 8])
        with pytest.raises(ValueError, match='1 channel or RGB triples'):
            AugmentPipe(brightness=1)(images)
        assert AugmentPipe(**augpipe_specs['bg'])(images, debug_percentile=0.7).shape == images.shape


def test_stacked_rgb_images_share_each_samples_colour_transform():
    """EG3D augments [image, raw image] as one 6-channel stack: each triple gets the 3-channel result."""
    images = torch.randn([3, 6, 8, 8], dtype=torch.float64)
    kwargs, q, expected = COLOUR_CASES['all, in order']
    out = AugmentPipe(**kwargs)(images, debug_percentile=q)
    for half in (slice(0, 3), slice(3, 6)):
        np.testing.assert_allclose(out[:, half].numpy(), expected(images[:, half].numpy()), rtol=0, atol=1e-5)
    # Random draws: geometry and colour are drawn per sample, so each half equals the 3-channel pipe
    # run on it from the same random state.
    pipe = AugmentPipe(**augpipe_specs['bgc'])  # strength p = 1
    images = images.float()
    torch.manual_seed(5)
    stacked = pipe(images)
    for half in (slice(0, 3), slice(3, 6)):
        torch.manual_seed(5)
        np.testing.assert_allclose(stacked[:, half].numpy(), pipe(images[:, half].contiguous()).numpy(),
                                   rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Image-space filtering.


def _band_gains(q, band_strengths, std=1.0):
    """Each enabled band's gain with the all-band rescaling that keeps the expected 1/f power."""
    expected_power = np.array([10, 1, 1, 1]) / 13
    gains = np.ones(4)
    for band, strength in enumerate(band_strengths):
        if strength > 0:
            t = np.ones(4)
            t[band] = 2 ** (norm.ppf(q) * std)
            gains *= t / np.sqrt(np.sum(expected_power * t ** 2))
    return gains


@pytest.mark.parametrize('bands, q', [([1, 1, 1, 1], 0.8), ([0, 0, 1, 0], 0.2), ([1, 0, 0, 2], 0.9)])
def test_band_filter_matches_separable_float64_filtering(bands, q):
    images = torch.randn([2, 3, 32, 28], dtype=torch.float64)
    out = AugmentPipe(imgfilter=1, imgfilter_bands=bands)(images, debug_percentile=q)
    kernel = _band_gains(q, bands) @ _oracle_filter_bank(augment.SYM2)
    padded = np.pad(images.numpy(), [(0, 0), (0, 0), (21, 21), (21, 21)], mode='reflect')
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode='valid'), 3, padded)
    expected = np.apply_along_axis(lambda c: np.convolve(c, kernel, mode='valid'), 2, rows)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-5)


def test_band_filter_scales_a_constant_image_by_the_squared_lowest_gain():
    # Only band 0 passes DC, and the filter runs once along x and once along y.
    gain = _band_gains(0.8, [1, 1, 1, 1])[0]
    out = AugmentPipe(imgfilter=1)(torch.full([1, 1, 16, 16], 0.5), debug_percentile=0.8)
    assert torch.allclose(out, torch.full_like(out, 0.5 * gain ** 2), atol=1e-6)

# ----------------------------------------------------------------------------------------------
# Corruptions.


def test_noise_has_the_drawn_standard_deviation():
    torch.manual_seed(4)
    images = torch.randn([4, 3, 64, 64])
    noise = AugmentPipe(noise=1)(images, debug_percentile=0.6) - images
    sigma = halfnorm.ppf(0.6) * 0.1
    assert abs(noise.mean().item()) < 4 * sigma / np.sqrt(noise.numel())
    assert abs(noise.std().item() / sigma - 1) < 0.02
    # Random levels: |N(0, 1)| * 0.1 per image, so the mean level is 0.1 * sqrt(2 / pi).
    images = torch.zeros([512, 1, 32, 32])
    pipe = AugmentPipe(noise=1)
    levels = pipe(images).flatten(1).std(dim=1).numpy()
    assert abs(levels.mean() - 0.1 * np.sqrt(2 / np.pi)) < 4 * 0.1 * np.sqrt(1 - 2 / np.pi) / np.sqrt(512) + 2e-3


@pytest.mark.parametrize('q, rows', [(0.5, slice(4, 12)), (0.25, slice(0, 8)), (0.9, slice(10, 16))])
def test_cutout_zeroes_the_square_around_the_drawn_centre(q, rows):
    images = torch.rand([2, 3, 16, 16]) + 1
    out = AugmentPipe(cutout=1)(images, debug_percentile=q)
    # Square of side 0.5 * 16 = 8 pixels centred at (16 q, 16 q); pixels whose centres fall inside.
    mask = torch.ones([16, 16])
    mask[rows, rows] = 0
    assert torch.equal(out, images * mask)


def test_random_cutouts_are_squares_of_the_configured_side_clipped_by_the_border():
    torch.manual_seed(7)
    images = torch.ones([200, 1, 16, 16])
    pipe = AugmentPipe(cutout=1)
    pipe.p.fill_(0.5)
    zero = pipe(images)[:, 0] == 0
    has_cutout = zero.flatten(1).any(1)
    assert abs(_fraction(has_cutout) - 0.5) < _binomial_tolerance(0.5, 200)
    for mask in zero[has_cutout]:
        rows, cols = mask.any(1), mask.any(0)
        assert torch.equal(mask, rows[:, None] & cols[None, :])  # an axis-aligned rectangle
        for line in (rows, cols):
            index = line.nonzero()[:, 0]
            assert index[-1] - index[0] + 1 == len(index)  # contiguous
            assert len(index) == 8 or index[0] == 0 or index[-1] == 15

# ----------------------------------------------------------------------------------------------
# Gradients (R1 differentiates through the augmentation of real images).


def test_gradients_of_first_and_second_order_match_finite_differences():
    pipe = AugmentPipe(**augpipe_specs['bgcfnc'])

    def augment_fixed(x):
        torch.manual_seed(0)  # noise stays random in debug mode; keep it fixed across evaluations
        return pipe(x, debug_percentile=0.7)

    # fast_mode compares random projections of the Jacobian, which keeps float64 filtering cheap
    # enough; it flags a gradient that is 2% off.
    x = torch.randn([2, 3, 8, 8], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(augment_fixed, (x,), eps=1e-6, atol=1e-5, fast_mode=True)
    assert torch.autograd.gradgradcheck(augment_fixed, (x,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_r1_style_double_backward_runs_on_random_augmentations():
    torch.manual_seed(8)
    pipe = AugmentPipe(**augpipe_specs['bgcfnc'])
    pipe.p.fill_(0.9)
    images = torch.randn([4, 3, 16, 16], requires_grad=True)
    out = pipe(images)
    grad, = torch.autograd.grad((out.square() * torch.randn_like(out)).sum(), images, create_graph=True)
    grad.square().sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0

# ----------------------------------------------------------------------------------------------
# Presets and pickles.


def test_presets():
    colour = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
    assert augpipe_specs['color'] == colour
    assert augpipe_specs['bgc'] == dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, **colour)
    assert set(augpipe_specs) >= {'blit', 'geom', 'color', 'filter', 'noise', 'cutout', 'bg', 'bgc', 'bgcf',
                                  'bgcfn', 'bgcfnc'}
    # Camera-labelled data: the colour preset never moves pixels, so it commutes with any
    # rearrangement of them (same random draws on both sides).
    images = torch.rand([8, 3, 16, 16])
    shuffle = torch.randperm(16 * 16)
    pipe = AugmentPipe(**augpipe_specs['color'])
    torch.manual_seed(9)
    shuffled_after = pipe(images).flatten(2)[:, :, shuffle]
    torch.manual_seed(9)
    shuffled_before = pipe(images.flatten(2)[:, :, shuffle].reshape(images.shape)).flatten(2)
    assert torch.allclose(shuffled_after, shuffled_before, atol=1e-6)
    assert not torch.allclose(shuffled_after, images.flatten(2)[:, :, shuffle], atol=1e-3)
    for name, spec in augpipe_specs.items():
        assert AugmentPipe(**spec)(images).shape == images.shape, name


def _pipe_for_pickling():
    pipe = AugmentPipe(**augpipe_specs['bgcfnc'], xint_max=0.2, imgfilter_bands=[1, 0, 1, 1])
    pipe.p.fill_(0.37)
    return pipe


def _same_pipes(a, b):
    assert type(b).__name__ == 'AugmentPipe' and persistence.is_persistent(b)
    assert dict(a.init_kwargs) == dict(b.init_kwargs)
    for (name_a, tensor_a), (name_b, tensor_b) in zip(a.named_buffers(), b.named_buffers(), strict=True):
        assert name_a == name_b and torch.equal(tensor_a, tensor_b)
    images = torch.randn([3, 3, 16, 16])
    torch.manual_seed(10)
    out_a = a(images)
    torch.manual_seed(10)
    assert torch.equal(b(images), out_a)


def test_pickle_round_trip_trusted_and_no_exec():
    pipe = _pipe_for_pickling()
    data = pickle.dumps(dict(augment_pipe=pipe, training_set_kwargs=dict(resolution=16)))
    _same_pipes(pipe, pickle.loads(data)['augment_pipe'])
    loaded = persistence.load(io.BytesIO(data))
    assert type(loaded['augment_pipe']) is AugmentPipe
    _same_pipes(pipe, loaded['augment_pipe'])


def test_official_augment_sources_are_recognised_without_executing_them(monkeypatch):
    pipe = _pipe_for_pickling()
    data = pickle.dumps(pipe)

    def as_official(meta):
        # What an official pickle embeds: a different file with the same top-level names; it
        # raises if executed.
        meta.module_src = '\n'.join([
            'raise RuntimeError("the embedded source was executed")', 'import torch',
            'def matrix(*rows, device=None):', '    pass',
            'def translate2d(tx, ty, **kwargs):', '    pass',
            'class AugmentPipe(torch.nn.Module):', '    pass', ''])
        return meta
    monkeypatch.setattr(persistence, '_import_hooks', [as_official])
    loaded = persistence.load(io.BytesIO(data))
    assert type(loaded) is AugmentPipe
    _same_pipes(pipe, loaded)


_LOAD_WITHOUT_TRAINING = r'''
import importlib.abc, pickle, sys, torch

class NoTraining(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == 'training' or name.startswith('training.'):
            raise ImportError('the training package is hidden in this test')
        return None

sys.meta_path.insert(0, NoTraining())
with open(sys.argv[1], 'rb') as f:
    data = pickle.load(f)
torch.manual_seed(10)
out = data['augment_pipe'](data['images'])
assert not any(m == 'training' or m.startswith('training.') for m in sys.modules)
torch.save(out, sys.argv[2])
'''


def test_pickles_load_and_run_where_only_dnnlib_and_torch_utils_import(tmp_path):
    import subprocess
    import sys
    pipe = _pipe_for_pickling()
    images = torch.randn([3, 3, 16, 16])
    with open(tmp_path / 'pipe.pkl', 'wb') as f:
        pickle.dump(dict(augment_pipe=pipe, images=images), f)
    script = tmp_path / 'load.py'
    script.write_text(_LOAD_WITHOUT_TRAINING)
    result = subprocess.run([sys.executable, str(script), str(tmp_path / 'pipe.pkl'), str(tmp_path / 'out.pt')],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    torch.manual_seed(10)
    assert torch.equal(torch.load(tmp_path / 'out.pt'), pipe(images))


def test_deepcopy_keeps_the_pipe():
    # The training loop keeps the pipe in snapshots via copy.deepcopy.
    pipe = _pipe_for_pickling()
    _same_pipes(pipe, copy.deepcopy(pipe))

# ----------------------------------------------------------------------------------------------
# CUDA (run where a GPU is available).


@pytest.mark.gpu
def test_cuda_matches_cpu_in_debug_mode_and_stays_an_identity_at_zero_strength():
    images = torch.randn([4, 3, 32, 32])
    pipe = AugmentPipe(**augpipe_specs['bgcf'])
    expected = pipe(images, debug_percentile=0.7)
    gpu_pipe = copy.deepcopy(pipe).cuda()
    got = gpu_pipe(images.cuda(), debug_percentile=0.7)
    assert (got.cpu() - expected).abs().max() < 1e-4
    gpu_pipe.p.zero_()
    assert torch.equal(gpu_pipe(images.cuda()), images.cuda())
    gpu_pipe.p.fill_(0.8)
    torch.manual_seed(0)
    out = gpu_pipe(images.cuda())
    assert out.device.type == 'cuda' and torch.isfinite(out).all()

