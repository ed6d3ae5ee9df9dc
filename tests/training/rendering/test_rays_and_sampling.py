"""training.rendering.rays and training.rendering.sampling against closed forms and float64 recomputations."""

import math

import numpy as np
import pytest
import torch

from training import cameras
from training.rendering import rays, sampling

# ----------------------------------------------------------------------------------------------
# Rays.


def _pixel_index(i, j, res):
    return i * res + j


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_simple_camera_corners_and_centre(dtype):
    res, focal = 5, 1.7
    position = torch.tensor([0.3, -0.2, -2.5], dtype=dtype)
    cam2world = torch.eye(4, dtype=dtype)
    cam2world[:3, 3] = position
    intrinsics = torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], dtype=dtype)
    origins, dirs = rays.sample_rays(cam2world[None], intrinsics[None], res)
    assert origins.shape == dirs.shape == (1, res * res, 3)
    assert origins.dtype == dirs.dtype == dtype
    assert torch.equal(origins[0], position.expand(res * res, 3))
    for i, j in [(0, 0), (0, res - 1), (res - 1, 0), (res - 1, res - 1), (res // 2, res // 2)]:
        x = ((j + 0.5) / res - 0.5) / focal   # column -> camera x (right)
        y = ((i + 0.5) / res - 0.5) / focal   # row -> camera y (down)
        expected = np.array([x, y, 1.0]) / math.sqrt(x * x + y * y + 1)
        got = dirs[0, _pixel_index(i, j, res)].double().numpy()
        np.testing.assert_allclose(got, expected, atol=1e-6 if dtype == torch.float32 else 1e-12)
    np.testing.assert_allclose(dirs[0, _pixel_index(res // 2, res // 2, res)].double().numpy(), [0, 0, 1], atol=1e-7)


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def test_skewed_cameras_against_float64_inverse_intrinsics():
    rng = np.random.default_rng(0)
    n, res = 3, 7
    c2w = np.tile(np.eye(4), (n, 1, 1))
    K = np.tile(np.eye(3), (n, 1, 1))
    for k in range(n):
        c2w[k, :3, :3] = _random_rotation(rng)
        c2w[k, :3, 3] = rng.standard_normal(3)
        K[k, 0, 0], K[k, 1, 1] = rng.uniform(1, 5, 2)
        K[k, 0, 1] = rng.uniform(-0.3, 0.3)
        K[k, 0, 2], K[k, 1, 2] = rng.uniform(0.3, 0.7, 2)
    # Oracle: d = R K^-1 (u, v, 1), normalised; u the column, v the row, pixels row-major.
    expected = np.zeros((n, res * res, 3))
    for k in range(n):
        Kinv = np.linalg.inv(K[k])
        for i in range(res):
            for j in range(res):
                d = c2w[k, :3, :3] @ Kinv @ np.array([(j + 0.5) / res, (i + 0.5) / res, 1.0])
                expected[k, i * res + j] = d / np.linalg.norm(d)
    for dtype, atol in [(torch.float64, 1e-12), (torch.float32, 2e-6)]:
        origins, dirs = rays.sample_rays(torch.tensor(c2w, dtype=dtype), torch.tensor(K, dtype=dtype), res)
        np.testing.assert_allclose(dirs.double().numpy(), expected, atol=atol)
        np.testing.assert_allclose(origins.double().numpy(), np.repeat(c2w[:, None, :3, 3], res * res, 1), atol=1e-6)


def test_label_rays_pass_through_pivot_at_image_centre():
    res = 9
    yaw = torch.tensor([0.0, 0.4, -0.3])
    pitch = torch.tensor([0.0, -0.2, 0.25])
    c = cameras.lookat_labels(yaw, pitch)
    origins, dirs = rays.sample_rays_from_labels(c, res)
    centre = _pixel_index(res // 2, res // 2, res)
    pivot = torch.tensor(cameras.FFHQ_PIVOT)
    to_pivot = pivot - origins[:, centre]
    cross = torch.cross(dirs[:, centre], to_pivot, dim=-1)
    assert cross.norm(dim=-1).max() < 1e-5
    assert ((dirs[:, centre] * to_pivot).sum(-1) > 0).all()
    # The same pixel-centre convention as cameras.get_rays (no skew).
    cam2world, intrinsics = cameras.unpack(c)
    o_ref, d_ref = cameras.get_rays(cam2world, intrinsics, res, res)
    torch.testing.assert_close(dirs, d_ref.reshape(3, -1, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(origins, o_ref.reshape(3, -1, 3), atol=1e-6, rtol=0)


def test_image_points_per_camera_and_the_border_grid():
    c = cameras.lookat_labels(torch.tensor([1.4, 1.7]), torch.tensor([1.5, 1.6]))
    uv = torch.rand(2, 5, 2, generator=torch.Generator().manual_seed(0))
    origins, dirs = rays.sample_rays_from_labels(c, 4, uv=uv)
    for n in range(2):  # one set of image points per camera = each camera alone with its own points
        o, d = rays.sample_rays_from_labels(c[n:n + 1], 4, uv=uv[n])
        torch.testing.assert_close(dirs[n:n + 1], d)
        torch.testing.assert_close(origins[n:n + 1], o)
    grid = rays.border_uv(3)  # linspace(0, 1) over columns (u) and rows (v), row-major, borders included
    assert grid.tolist() == [[u, v] for v in (0.0, 0.5, 1.0) for u in (0.0, 0.5, 1.0)]


def test_sample_rays_rejects_bad_shapes():
    with pytest.raises(ValueError):
        rays.sample_rays(torch.eye(4), torch.eye(3), 4)
    with pytest.raises(ValueError):
        rays.sample_rays_from_labels(torch.zeros(2, 24), 4)

# ----------------------------------------------------------------------------------------------
# Ray limits.


def _slab_oracle(o, d, half):
    """Float64 closed-form slab intersection of one ray; None for a miss."""
    lo, hi = -np.inf, np.inf
    for a in range(3):
        if d[a] == 0:
            if abs(o[a]) > half:
                return None
            continue
        t1, t2 = (-half - o[a]) / d[a], (half - o[a]) / d[a]
        lo, hi = max(lo, min(t1, t2)), min(hi, max(t1, t2))
    return None if lo > hi else (lo, hi)


def test_ray_box_limits_against_slab_oracle_with_misses():
    rng = np.random.default_rng(1)
    half = 0.6
    o = rng.uniform(-3, 3, (200, 3))
    d = rng.standard_normal((200, 3))
    # Rays aimed at the box (hits) next to random ones (many misses); a ray parallel to an axis
    # outside the slab (miss) and one inside it (hit).
    d[:80] = rng.uniform(-0.4, 0.4, (80, 3)) - o[:80]
    o[198], d[198] = [2.0, 0.1, 0.1], [0.0, 1.0, 0.0]
    o[199], d[199] = [0.1, -2.0, 0.2], [0.0, 1.0, 0.0]
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    oracle = [_slab_oracle(o[k], d[k], half) for k in range(200)]
    hits = np.array([x is not None for x in oracle])
    assert 20 < hits.sum() < 190 and not hits[198] and hits[199]
    for dtype in (torch.float64, torch.float32):
        start, end = rays.ray_box_limits(torch.tensor(o, dtype=dtype).reshape(2, 100, 3),
                                         torch.tensor(d, dtype=dtype).reshape(2, 100, 3), 2 * half)
        assert start.shape == end.shape == (2, 100, 1) and start.dtype == dtype
        start, end = start.reshape(-1).double().numpy(), end.reshape(-1).double().numpy()
        tol = 1e-10 if dtype == torch.float64 else 2e-5
        for k in range(200):
            if oracle[k] is None:
                assert (start[k], end[k]) == (-1, -2)
            else:
                np.testing.assert_allclose([start[k], end[k]], oracle[k], atol=tol)
        # Entry and exit points lie on the cube's surface.
        for t in (start, end):
            points = o[hits] + t[hits, None] * d[hits]
            np.testing.assert_allclose(np.abs(points).max(axis=1), half, atol=10 * tol)


def test_fill_invalid_limits_and_fixed_bounds():
    start = torch.tensor([[[0.5], [-1.0], [1.5], [0.8]]])
    end = torch.tensor([[[2.0], [-2.0], [3.0], [0.8]]])
    s, e, valid = rays.fill_invalid_limits(start, end)
    assert valid.reshape(-1).tolist() == [True, False, True, False]
    assert s.reshape(-1).tolist() == [0.5, 0.5, 1.5, 0.5]
    assert e.reshape(-1).tolist() == [2.0, 1.5, 3.0, 1.5]   # EG3D: max of the valid *starts*
    assert start[0, 1, 0] == -1  # inputs untouched
    none_valid = rays.fill_invalid_limits(-torch.ones(1, 2, 1), -2 * torch.ones(1, 2, 1))
    assert not none_valid[2].any() and (none_valid[0] == -1).all()

    origins = torch.zeros(2, 3, 3, dtype=torch.float64)
    s, e, valid = rays.ray_limits(origins, origins, 2.25, 3.3)
    assert s.shape == (2, 3, 1) and s.dtype == torch.float64 and (s == 2.25).all() and (e == 3.3).all() and valid.all()
    origins = torch.tensor([[[0.0, 0.0, -2.0], [0.0, 5.0, -2.0]]])
    dirs = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])
    s, e, valid = rays.ray_limits(origins, dirs, 'auto', 'auto', box_warp=1.0)
    torch.testing.assert_close(s.reshape(-1), torch.tensor([1.5, 1.5]))
    torch.testing.assert_close(e.reshape(-1), torch.tensor([2.5, 1.5]))
    assert valid.reshape(-1).tolist() == [True, False]
    with pytest.raises(ValueError):
        rays.ray_limits(origins, dirs, 'auto', 3.0)

# ----------------------------------------------------------------------------------------------
# Stratified sampling.


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_stratified_deterministic_is_linspace(dtype):
    origins = torch.zeros(2, 5, 3, dtype=dtype)
    depths = sampling.sample_stratified(origins, 2.25, 3.3, 12, jitter=False)
    assert depths.shape == (2, 5, 12, 1) and depths.dtype == dtype
    assert torch.equal(depths, torch.linspace(2.25, 3.3, 12, dtype=dtype).reshape(1, 1, 12, 1).expand(2, 5, 12, 1))
    start = torch.rand(2, 5, 1, dtype=dtype, generator=torch.Generator().manual_seed(0)) + 1
    end = start + torch.rand(2, 5, 1, dtype=dtype, generator=torch.Generator().manual_seed(1)) + 0.1
    depths = sampling.sample_stratified(origins, start, end, 12, jitter=False)
    expected = np.stack([np.linspace(a, b, 12) for a, b in zip(start.double().reshape(-1).numpy(),
                                                               end.double().reshape(-1).numpy())])
    np.testing.assert_allclose(depths.double().reshape(10, 12).numpy(), expected,
                               atol=1e-6 if dtype == torch.float32 else 1e-14)
    disparity = sampling.sample_stratified(origins, 2.0, 4.0, 5, disparity_space_sampling=True, jitter=False)
    np.testing.assert_allclose(disparity[0, 0, :, 0].double().numpy(), 1 / np.linspace(1 / 2, 1 / 4, 5), rtol=1e-6)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_stratified_jitter_stays_in_its_stratum(dtype):
    origins = torch.zeros(3, 40, 3, dtype=dtype)
    start = 1 + torch.rand(3, 40, 1, dtype=dtype, generator=torch.Generator().manual_seed(2))
    end = start + 0.5 + torch.rand(3, 40, 1, dtype=dtype, generator=torch.Generator().manual_seed(3))
    base = sampling.sample_stratified(origins, start, end, 16, jitter=False)
    delta = ((end - start) / 15).unsqueeze(-2)
    a = sampling.sample_stratified(origins, start, end, 16, generator=torch.Generator().manual_seed(4))
    b = sampling.sample_stratified(origins, start, end, 16, generator=torch.Generator().manual_seed(5))
    a2 = sampling.sample_stratified(origins, start, end, 16, generator=torch.Generator().manual_seed(4))
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for x in (a, b):
        offset = x - base
        assert (offset >= -tol).all() and (offset < delta + tol).all()
        assert offset.std() > 0.2 * delta.mean()   # really jittered, over the whole stratum
    assert not torch.equal(a, b) and torch.equal(a, a2)
    fixed = sampling.sample_stratified(origins, 2.0, 3.0, 16, generator=torch.Generator().manual_seed(6))
    offset = fixed - torch.linspace(2.0, 3.0, 16, dtype=dtype).reshape(1, 1, 16, 1)
    assert (offset >= -tol).all() and (offset < 1 / 15 + tol).all()
    with pytest.raises(ValueError):
        sampling.sample_stratified(origins, 2.0, 3.0, 1)

# ----------------------------------------------------------------------------------------------
# Importance sampling.


def test_sample_pdf_deterministic_matches_analytic_inverse_cdf():
    rng = np.random.default_rng(7)
    rows, k, n = 6, 9, 33
    bins = np.sort(rng.uniform(1, 4, (rows, k + 1)), axis=1)
    weights = rng.uniform(0, 1, (rows, k))
    weights[0, 3] = 0.0  # an empty bin
    samples = sampling.sample_pdf(torch.tensor(bins), torch.tensor(weights), n, det=True)
    assert samples.shape == (rows, n) and samples.dtype == torch.float64
    u = np.linspace(0, 1, n)
    for r in range(rows):
        w = weights[r] + 1e-5
        cdf = np.concatenate([[0], np.cumsum(w / w.sum())])
        np.testing.assert_allclose(samples[r].numpy(), np.interp(u, cdf, bins[r]), atol=1e-10)
    # float32 agrees; batch dimensions are kept.
    s32 = sampling.sample_pdf(torch.tensor(bins, dtype=torch.float32).reshape(2, 3, k + 1),
                              torch.tensor(weights, dtype=torch.float32).reshape(2, 3, k), n, det=True)
    assert s32.shape == (2, 3, n)
    np.testing.assert_allclose(s32.reshape(rows, n).double().numpy(), samples.numpy(), atol=2e-5)


def test_sample_pdf_random_follows_the_pdf():
    bins = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
    weights = torch.tensor([[1.0, 0.0, 3.0]], dtype=torch.float64)
    samples = sampling.sample_pdf(bins, weights, 20000, generator=torch.Generator().manual_seed(8))
    frac = [float(((samples >= a) & (samples < a + 1)).double().mean()) for a in range(3)]
    assert abs(frac[0] - 0.25) < 0.02 and frac[1] < 0.001 and abs(frac[2] - 0.75) < 0.02
    again = sampling.sample_pdf(bins, weights, 20000, generator=torch.Generator().manual_seed(8))
    other = sampling.sample_pdf(bins, weights, 20000, generator=torch.Generator().manual_seed(9))
    assert torch.equal(samples, again) and not torch.equal(samples, other)


def test_smooth_weights_closed_form():
    w = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    expected = torch.tensor([[0.0, 0.5, 1.0, 0.5, 0.0, 0.0]], dtype=torch.float64) + 0.01
    torch.testing.assert_close(sampling.smooth_weights(w), expected)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('per_interval', [True, False])
def test_importance_samples_sorted_in_range_and_concentrated(dtype, per_interval):
    n, r, d, m = 2, 3, 16, 7
    origins = torch.zeros(n, r, 3, dtype=dtype)
    depths = sampling.sample_stratified(origins, 2.0, 3.0, d, generator=torch.Generator().manual_seed(10))
    w_count = d - 1 if per_interval else d
    weights = torch.zeros(n, r, w_count, 1, dtype=dtype)
    weights[:, :, m] = 1.0
    det = sampling.sample_importance(depths, weights, 64, det=True)
    rnd = sampling.sample_importance(depths, weights.requires_grad_(), 64, generator=torch.Generator().manual_seed(11))
    assert det.shape == rnd.shape == (n, r, 64, 1) and det.dtype == rnd.dtype == dtype and not rnd.requires_grad
    assert (det[:, :, 1:] >= det[:, :, :-1]).all()
    mids = 0.5 * (depths[:, :, :-1] + depths[:, :, 1:])
    for x in (det, rnd):
        assert (x >= mids[:, :, :1] - 1e-6).all() and (x <= mids[:, :, -1:] + 1e-6).all()
        assert (x >= depths[:, :, :1]).all() and (x <= depths[:, :, -1:]).all()
        # The smoothed peak (weights m - 1, m, m + 1) covers pdf bins m - 2 .. m, i.e. mids[m - 2] .. mids[m + 1].
        inside = (x >= mids[:, :, m - 2:m - 1]) & (x <= mids[:, :, m + 1:m + 2])
        assert inside.double().mean(dim=2).min() > 0.85
        core = (x >= mids[:, :, m - 1:m]) & (x <= mids[:, :, m:m + 1])
        assert core.double().mean(dim=2).min() > 0.35
    with pytest.raises(ValueError):
        sampling.sample_importance(depths, torch.ones(n, r, d - 3, 1, dtype=dtype), 8)

# ----------------------------------------------------------------------------------------------
