"""EQ-T, EQ-T_frac and EQ-R: the resampling helpers against analytic signals, the PSNR sums against
numpy, and the whole metric on analytic generators whose errors are recomputed here in float64."""

import json
import os
import sys
import textwrap

import numpy as np
import pytest
import torch

import metric_fixtures as fx
import tiny_networks
from metrics import equivariance as eq
from metrics import metric_utils
from multiproc import REPO_ROOT, run_processes

RES = 32


def cosines(x, y, freqs, phases, amps):
    """sum_k a_k cos(2 pi (f_k . (x, y)) + phase_k) in float64; x, y in pixels."""
    out = np.zeros(np.broadcast(x, y).shape)
    for (fx_, fy_), phase, amp in zip(freqs, phases, amps):
        out += amp * np.cos(2 * np.pi * (fx_ * x + fy_ * y) + phase)
    return out


def random_cosines(rng, count, max_freq):
    radius = np.sqrt(rng.uniform(0, 1, count)) * max_freq
    direction = rng.uniform(0, 2 * np.pi, count)
    return np.stack([radius * np.cos(direction), radius * np.sin(direction)], 1), rng.uniform(0, 2 * np.pi, count)


def as_image(values):
    return torch.tensor(values, dtype=torch.float32)[None, None]


def pixel_grid(size=RES):
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    return xs, ys


def rotated_sources(angle, size=RES):
    """Source (x, y) of every output pixel when the content turns counterclockwise on screen (y down)."""
    xs, ys = pixel_grid(size)
    centre = (size - 1) / 2
    c, s = np.cos(angle), np.sin(angle)
    return c * (xs - centre) - s * (ys - centre) + centre, s * (xs - centre) + c * (ys - centre) + centre


# ----------------------------------------------------------------------------------------------
# Resampling helpers.


@pytest.mark.parametrize('dx, dy', [(2, -3), (0, 0), (-4, 6), (9, 1), (-1, -7)])
def test_integer_translation_is_roll_with_mask(dx, dy):
    images = torch.randn([2, 3, 7, 9])
    out, mask = eq.translate_integer(images, dx, dy)
    expected_mask = np.zeros([7, 9], dtype=bool)
    for y in range(7):
        for x in range(9):
            expected_mask[y, x] = 0 <= y - dy < 7 and 0 <= x - dx < 9
    rolled = np.roll(images.numpy(), (dy, dx), axis=(2, 3))
    np.testing.assert_array_equal(mask.numpy(), expected_mask)
    np.testing.assert_array_equal(out.numpy(), rolled * expected_mask)


@pytest.mark.parametrize('shift, first, last', [(0.0, 3, 7), (0.5, 3, 7), (2.25, 5, 9), (-1.5, 1, 5), (-0.75, 2, 6)])
def test_lanczos_mask_holds_the_pixels_whose_six_taps_are_inside(shift, first, last):
    # out[x] = sum over m in -2..3 of w_m in[x - floor(shift) - m]; width 10.
    _, mask = eq.translate_lanczos(torch.zeros([1, 1, 10, 10]), shift, 0)
    expected = np.zeros(10, dtype=bool)
    expected[first:last + 1] = True
    np.testing.assert_array_equal(mask.numpy()[5], expected)


def test_lanczos_translation_of_a_band_limited_signal():
    # Lanczos-3 itself is flat to about 0.5% below 0.1 cycles/pixel, so that is the tolerance.
    rng = np.random.default_rng(1)
    freqs, phases = random_cosines(rng, 6, 0.1)
    amps = np.full(6, 0.15)
    xs, ys = pixel_grid()
    image = as_image(cosines(xs, ys, freqs, phases, amps))
    for dx, dy in [(0, 0), (0.5, -0.5), (3.3, 1.7), (-2.25, 0.1)]:
        out, mask = eq.translate_lanczos(image, dx, dy)
        truth = cosines(xs - dx, ys - dy, freqs, phases, amps)
        error = np.abs(out[0, 0].numpy() - truth)[mask.numpy()]
        assert mask.sum() > 400 and error.max() < 0.006 * amps.sum(), (dx, dy, error.max())
    out, mask = eq.translate_lanczos(image, 0, 0)
    np.testing.assert_allclose(out[0, 0].numpy()[mask.numpy()], image[0, 0].numpy()[mask.numpy()], atol=1e-6)


@pytest.mark.parametrize('angle', [0.0, 0.3, np.pi / 4, np.pi / 2, 2.0, -2.9, np.pi])
def test_band_limited_rotation_of_a_band_limited_pattern(angle):
    # Content below 0.25 cycles/pixel is in the flat part of the filters (measured: max error ~6e-4
    # of the amplitude sum).
    rng = np.random.default_rng(2)
    freqs, phases = random_cosines(rng, 8, 0.25)
    amps = np.full(8, 0.15)
    xs, ys = pixel_grid()
    image = as_image(cosines(xs, ys, freqs, phases, amps))
    out, mask = eq.rotate_band_limited(image, angle)
    truth = cosines(*rotated_sources(angle), freqs, phases, amps)
    assert mask.sum() > 100
    assert np.abs(out[0, 0].numpy() - truth)[mask.numpy()].max() < 1e-3 * amps.sum()
    assert not out[0, 0].numpy()[~mask.numpy()].any()
    filtered, filtered_mask = eq.pseudo_rotate(image, angle)
    assert np.abs(filtered[0, 0].numpy() - image[0, 0].numpy())[filtered_mask.numpy()].max() < 1e-3 * amps.sum()


def test_rotation_masks_on_hand_computed_cases():
    # Margin at angle 0 and at quarter turns: 4 (1 + 1) pixels of filter, + 1 of fine interpolation.
    image = torch.zeros([1, 1, RES, RES])
    inside = np.zeros([RES, RES], dtype=bool)
    inside[8:24, 8:24] = True  # 8 <= q <= 32 - 9
    for angle in [0.0, np.pi / 2, -np.pi / 2, np.pi]:
        _, mask = eq.rotate_band_limited(image, angle)
        np.testing.assert_array_equal(mask.numpy(), inside)
    filtered = np.zeros([RES, RES], dtype=bool)
    filtered[7:25, 7:25] = True  # 7 <= p <= 32 - 8
    np.testing.assert_array_equal(eq.pseudo_rotate(image, 0.0)[1].numpy(), filtered)
    # At 45 degrees the margin is 4 (1 + sqrt 2) + 1 = 10.66 pixels around the rotated source.
    qx, qy = rotated_sources(np.pi / 4)
    expected = (qx >= 9.657) & (qx <= 21.343) & (qy >= 9.657) & (qy <= 21.343)
    np.testing.assert_array_equal(eq.rotate_band_limited(image, np.pi / 4)[1].numpy(), expected)


def test_rotation_and_pseudo_rotation_filter_the_same_band():
    # One cosine in the filters' transition band; an exactly rotated rendering, pseudo-rotated, must
    # match the rotated reference. The reverse orientation of the band (angle of the wrong sign)
    # misses by about 20x more, so this pins the orientation of the oriented low-pass.
    angle, freq = 0.5, np.array([0.199, 0.359])
    xs, ys = pixel_grid(64)
    render = lambda x, y: 0.5 * np.cos(2 * np.pi * (freq[0] * x + freq[1] * y) + 0.3)
    reference, ref_mask = eq.rotate_band_limited(as_image(render(xs, ys)), angle)
    rotated = as_image(render(*rotated_sources(angle, 64)))
    right, right_mask = eq.pseudo_rotate(rotated, angle)
    wrong, _ = eq.pseudo_rotate(rotated, -angle)
    mask = (ref_mask & right_mask).numpy()
    assert np.abs(reference[0, 0].numpy())[mask].max() < 0.47  # the band limit does act on it
    assert np.abs((reference - right)[0, 0].numpy())[mask].max() < 0.005
    assert np.abs((reference - wrong)[0, 0].numpy())[mask].max() > 0.03


def test_psnr_sums_match_numpy_float64():
    rng = np.random.default_rng(3)
    total_error, total_count = 0.0, 0
    sums = torch.zeros([2], dtype=torch.float64)
    for _ in range(5):
        a, b = rng.uniform(-1, 1, [2, 3, 6, 5]), rng.uniform(-1, 1, [2, 3, 6, 5])
        mask = rng.uniform(size=[6, 5]) < 0.6
        sums += eq.masked_error_sums(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32),
                                     torch.tensor(mask))
        a32, b32 = a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
        total_error += ((a32 - b32) ** 2 * mask).sum()
        total_count += mask.sum() * 2 * 3
    assert sums[1].item() == total_count
    np.testing.assert_allclose(sums[0].item(), total_error, rtol=1e-12)
    expected = 20 * np.log10(2) - 10 * np.log10(total_error / total_count)
    np.testing.assert_allclose(eq.psnr_from_sums(*sums.tolist()), expected, rtol=1e-12)
    assert eq.psnr_from_sums(0.0, 10) == float('inf')


# ----------------------------------------------------------------------------------------------
# Analytic generators.

FREQS = np.array([[0.06, 0.02], [-0.03, 0.08], [0.09, -0.05], [0.01, -0.04]])  # cycles/pixel
AMP = 0.2


class _Input(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer('transform', torch.eye(3))


class _Mapping(torch.nn.Module):
    def __init__(self, num_ws):
        super().__init__()
        self.num_ws = num_ws

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        return z.unsqueeze(1).repeat(1, self.num_ws, 1)


def latent_phases(w):
    """[N, len(FREQS), 3] phases of the cosines of each channel, from w [N, 8]."""
    return np.pi * np.stack([np.roll(w, -k, axis=1)[:, :3] for k in range(len(FREQS))], axis=1)


class _AnalyticSynthesis(torch.nn.Module):
    """Cosines below 0.1 cycles/pixel sampled at the pixel centres mapped through the input transform
    (exactly equivariant), or at the plain pixel centres (`follow_transform=False`)."""

    def __init__(self, resolution, follow_transform):
        super().__init__()
        self.input = _Input()
        self.resolution, self.follow_transform = resolution, follow_transform
        self.img_resolution, self.img_channels, self.w_dim, self.num_ws = resolution, 3, 8, 2

    def render(self, ws):
        units = (torch.arange(self.resolution, dtype=torch.float64) + 0.5) / self.resolution - 0.5
        gy, gx = torch.meshgrid(units, units, indexing='ij')
        t = self.input.transform.to(torch.float64) if self.follow_transform else torch.eye(3, dtype=torch.float64)
        ux = (t[0, 0] * gx + t[0, 1] * gy + t[0, 2]) * self.resolution  # pixels from the centre
        uy = (t[1, 0] * gx + t[1, 1] * gy + t[1, 2]) * self.resolution
        phases = torch.from_numpy(latent_phases(ws[:, 0].double().numpy()))
        out = torch.zeros([ws.shape[0], 3, self.resolution, self.resolution], dtype=torch.float64)
        for k, (fx_, fy_) in enumerate(FREQS):
            arg = 2 * np.pi * (fx_ * ux + fy_ * uy)
            out += AMP * torch.cos(arg[None, None] + phases[:, k, :, None, None])
        return out.float()

    def forward(self, ws, noise_mode='const', force_fp32=False):
        return self.render(ws)


class _CameraSynthesis(_AnalyticSynthesis):
    """Takes the camera and adds a brightness from its position; fails without it."""

    def forward(self, ws, c=None, noise_mode='const'):
        assert c is not None and c.shape[1] == 25
        return self.render(ws) + 0.1 * c[:, 3, None, None, None]


class AnalyticGenerator(torch.nn.Module):
    def __init__(self, resolution=RES, follow_transform=True, camera=False):
        super().__init__()
        self.z_dim, self.w_dim, self.c_dim = 8, 8, 25 if camera else 0
        self.img_resolution, self.img_channels = resolution, 3
        synthesis_class = _CameraSynthesis if camera else _AnalyticSynthesis
        self.synthesis = synthesis_class(resolution, follow_transform)
        self.num_ws = self.synthesis.num_ws
        self.mapping = _Mapping(self.num_ws)


def documented_transforms(seed, index, translate_max, rotate_max):
    """The draws of sample `index`: default_rng([seed, 0x45510, index]), int translation, frac translation, angle."""
    rng = np.random.default_rng([seed, 0x45510, index])
    t_int = rng.uniform(-1, 1, 2) * translate_max
    t_frac = rng.uniform(-1, 1, 2) * translate_max
    return t_int, t_frac, rng.uniform(-1, 1) * np.pi * rotate_max


def expected_psnrs_of_a_still_generator(num, seed, translate_max, rotate_max):
    """PSNRs when G ignores the transform: the moved analytic reference against the unmoved one, float64.

    Masks from the documented rules: integer shift (source inside), Lanczos taps -2..3 inside, and the
    rotation margins 4 (1 + |cos| + |sin|) (+ 1 on the rotated side)."""
    z = fx.official_latents(seed, range(num), 8)
    xs, ys = pixel_grid()
    centre = (RES - 1) / 2
    sums = np.zeros([3, 2])
    for k in range(num):
        phases = latent_phases(z[k:k + 1])[0]
        field = lambda x, y: np.stack([cosines(x - centre, y - centre, FREQS, phases[:, ch], [AMP] * len(FREQS))
                                       for ch in range(3)])
        still = field(xs, ys)
        t_int, t_frac, angle = documented_transforms(seed, k, translate_max, rotate_max)
        s = np.round(t_int * RES)
        mask = (xs - s[0] >= 0) & (xs - s[0] < RES) & (ys - s[1] >= 0) & (ys - s[1] < RES)
        sums[0] += [((field(xs - s[0], ys - s[1]) - still) ** 2 * mask).sum(), mask.sum() * 3]
        d = t_frac * RES
        n = np.floor(d)
        mask = (xs >= n[0] + 3) & (xs <= RES - 3 + n[0]) & (ys >= n[1] + 3) & (ys <= RES - 3 + n[1])
        sums[1] += [((field(xs - d[0], ys - d[1]) - still) ** 2 * mask).sum(), mask.sum() * 3]
        margin = 4 * (1 + abs(np.cos(angle)) + abs(np.sin(angle)))
        qx, qy = rotated_sources(angle)
        inside = lambda v, m: (v >= m - 1) & (v <= RES - m)
        mask = inside(xs, margin) & inside(ys, margin) & inside(qx, margin + 1) & inside(qy, margin + 1)
        sums[2] += [((field(qx, qy) - still) ** 2 * mask).sum(), mask.sum() * 3]
    return [20 * np.log10(2) - 10 * np.log10(e / c) for e, c in sums]


ALL = dict(compute_eqt_int=True, compute_eqt_frac=True, compute_eqr=True)


def test_exactly_equivariant_generator_scores_above_50_db():
    # Measured: EQ-T exact (inf), EQ-T_frac 62.5 dB (Lanczos-3 ripple), EQ-R 89.5 dB.
    opts = metric_utils.MetricOptions(G=AnalyticGenerator(), seed=5)
    psnrs = eq.compute_equivariances(opts, num_samples=6, batch_size=4, **ALL)
    assert len(psnrs) == 3 and all(isinstance(p, float) for p in psnrs)
    assert min(psnrs) > 50, psnrs


def test_generator_ignoring_the_transform_matches_the_float64_recomputation():
    # EQ-T compares samples exactly; EQ-T_frac and EQ-R carry the resamplers' small errors.
    opts = metric_utils.MetricOptions(G=AnalyticGenerator(follow_transform=False), seed=7)
    psnrs = eq.compute_equivariances(opts, num_samples=5, batch_size=2, **ALL)
    expected = expected_psnrs_of_a_still_generator(5, seed=7, translate_max=0.125, rotate_max=1)
    np.testing.assert_allclose(psnrs[0], expected[0], atol=1e-4)
    np.testing.assert_allclose(psnrs[1], expected[1], atol=0.05)  # measured 0.013 dB apart
    np.testing.assert_allclose(psnrs[2], expected[2], atol=0.005)  # measured 0.0006 dB apart
    assert max(psnrs) < 30


def test_only_the_requested_metrics_in_order():
    opts = metric_utils.MetricOptions(G=AnalyticGenerator(follow_transform=False), seed=7)
    expected = expected_psnrs_of_a_still_generator(3, seed=7, translate_max=0.05, rotate_max=0.25)
    psnrs = eq.compute_equivariances(opts, 3, 4, translate_max=0.05, rotate_max=0.25, compute_eqt_int=True,
                                     compute_eqr=True)
    np.testing.assert_allclose(psnrs, [expected[0], expected[2]], atol=0.05)
    assert eq.compute_equivariances(opts, 3, 4) == ()


def test_camera_conditioned_generator_gets_the_dataset_cameras(tmp_path):
    data = fx.write_dataset(tmp_path / 'cams.zip', 4, labels=fx.camera_labels(4))
    opts = metric_utils.MetricOptions(G=AnalyticGenerator(camera=True), seed=1, num_workers=0,
                                      dataset_kwargs=fx.dataset_kwargs(data, use_labels=True))
    assert min(eq.compute_equivariances(opts, 3, 2, **ALL)) > 50


# ----------------------------------------------------------------------------------------------
# Real networks.


def test_tiny_stylegan3_scores_and_is_left_untouched():
    # Config R at initialisation is nearly equivariant to rotations, config T is not; measured
    # R: (95.5, 85.3, 87.1) dB, T: (64.5, 56.3, 29.3) dB. With the reference turned the wrong way
    # R's EQ-R drops to about 33 dB, so the gap also checks the sign of the rotation.
    G = tiny_networks.stylegan3_generator(radial=True)
    before = {name: value.clone() for name, value in G.state_dict().items()}
    psnrs_r = eq.compute_equivariances(metric_utils.MetricOptions(G=G), 4, 4, **ALL)
    psnrs_t = eq.compute_equivariances(metric_utils.MetricOptions(G=tiny_networks.stylegan3_generator(radial=False)),
                                       4, 4, **ALL)
    assert all(np.isfinite(psnrs_r + psnrs_t)) and min(psnrs_r + psnrs_t) > 15
    assert psnrs_r[2] > 60 and psnrs_t[2] < 40
    for name, value in G.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_stylegan2_is_refused_with_one_sentence():
    opts = metric_utils.MetricOptions(G=tiny_networks.stylegan2_generator())
    with pytest.raises(metric_utils.MetricError) as info:
        eq.compute_equivariances(opts, 4, 4, compute_eqt_int=True)
    message = str(info.value)
    assert 'StyleGAN3-type generator with an input transform' in message and '\n' not in message


_TWO_PROCESS_SCRIPT = textwrap.dedent('''
    import json, os, sys
    sys.path.insert(0, {repo!r})
    sys.path.append(os.path.join({repo!r}, 'tests'))
    import torch
    from torch_utils import distributed

    def main(out_dir):
        import tiny_networks
        from metrics import equivariance, metric_utils
        torch.set_num_threads(1)
        rank = distributed.get_rank()
        opts = metric_utils.MetricOptions(G=tiny_networks.stylegan3_generator(radial=False), seed=3,
                                          num_gpus=distributed.get_world_size(), rank=rank)
        psnrs = equivariance.compute_equivariances(opts, 5, 2, compute_eqt_int=True, compute_eqt_frac=True,
                                                   compute_eqr=True)
        with open(os.path.join(out_dir, f'rank{{rank}}.json'), 'w') as f:
            json.dump(list(psnrs), f)

    if __name__ == '__main__':
        distributed.launch(main, num_procs=2, args=(sys.argv[1],), device_type='cpu', timeout=60)
''')


def test_two_processes_give_the_single_process_numbers(tmp_path):
    script = tmp_path / 'entry.py'
    script.write_text(_TWO_PROCESS_SCRIPT.format(repo=REPO_ROOT))
    env = {key: value for key, value in os.environ.items()
           if key not in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')}
    env.update(CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    [(code, _out, err)] = run_processes([[sys.executable, str(script), str(tmp_path)]], timeout=120, envs=[env])
    assert code == 0, err[-3000:]
    opts = metric_utils.MetricOptions(G=tiny_networks.stylegan3_generator(radial=False), seed=3)
    single = eq.compute_equivariances(opts, 5, 2, **ALL)
    for rank in range(2):
        with open(tmp_path / f'rank{rank}.json') as f:
            np.testing.assert_allclose(json.load(f), single, rtol=1e-12)
