"""Ray marching, tri-plane sampling and chunked evaluation, against independent oracles and closed forms."""

import math

import numpy as np
import pytest
import torch

from training.rendering import chunks, marching, triplane

# ----------------------------------------------------------------------------------------------
# Ray marching.


def _numpy_march(colors, densities, depths, white_back):
    """Loop-by-loop float64 recomputation of EG3D's compositing formulas."""
    colors, densities, depths = (np.asarray(a, dtype=np.float64) for a in (colors, densities, depths))
    N, R, S, C = colors.shape
    rgb = np.zeros((N, R, C))
    depth = np.zeros((N, R, 1))
    weights = np.zeros((N, R, S - 1, 1))
    lo, hi = depths.min(), depths.max()
    for n in range(N):
        for r in range(R):
            transmittance = 1.0
            total = 0.0
            depth_sum = 0.0
            for i in range(S - 1):
                delta = depths[n, r, i + 1, 0] - depths[n, r, i, 0]
                d_mid = (densities[n, r, i, 0] + densities[n, r, i + 1, 0]) / 2
                sigma = math.log1p(math.exp(d_mid - 1))
                alpha = 1 - math.exp(-sigma * delta)
                w = alpha * transmittance
                transmittance *= 1 - alpha + 1e-10
                weights[n, r, i, 0] = w
                total += w
                rgb[n, r] += w * (colors[n, r, i] + colors[n, r, i + 1]) / 2
                depth_sum += w * (depths[n, r, i, 0] + depths[n, r, i + 1, 0]) / 2
            d = depth_sum / total if total > 0 else math.inf
            depth[n, r, 0] = min(max(d, lo), hi)
            if white_back:
                rgb[n, r] += 1 - total
    return rgb * 2 - 1, depth, weights


def _random_rays(gen, N=2, R=5, S=12, C=3, dtype=torch.float64):
    colors = torch.rand(N, R, S, C, generator=gen, dtype=dtype)
    densities = torch.randn(N, R, S, 1, generator=gen, dtype=dtype) * 3
    steps = torch.rand(N, R, S, 1, generator=gen, dtype=dtype) * 0.2 + 0.01
    depths = 2.0 + torch.cumsum(steps, dim=2)
    return colors, densities, depths


@pytest.mark.parametrize('white_back', [False, True])
def test_marcher_matches_numpy_oracle(white_back):
    gen = torch.Generator().manual_seed(0)
    colors, densities, depths = _random_rays(gen)
    rgb, depth, weights = marching.march_rays(colors, densities, depths, white_back=white_back)
    ref_rgb, ref_depth, ref_weights = _numpy_march(colors.numpy(), densities.numpy(), depths.numpy(), white_back)
    assert rgb.shape == (2, 5, 3) and depth.shape == (2, 5, 1) and weights.shape == (2, 5, 11, 1)
    np.testing.assert_allclose(weights.numpy(), ref_weights, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rgb.numpy(), ref_rgb, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(depth.numpy(), ref_depth, rtol=1e-10, atol=1e-12)


def test_marcher_float32_matches_float64_and_keeps_dtype():
    gen = torch.Generator().manual_seed(1)
    colors, densities, depths = _random_rays(gen)
    out64 = marching.march_rays(colors, densities, depths, white_back=True)
    out32 = marching.march_rays(colors.float(), densities.float(), depths.float(), white_back=True)
    for a, b in zip(out32, out64):
        assert a.dtype == torch.float32 and b.dtype == torch.float64
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)


def test_marcher_options_dict_and_clamp_mode():
    gen = torch.Generator().manual_seed(2)
    colors, densities, depths = _random_rays(gen)
    a = marching.march_rays_with_options(colors, densities, depths, {'clamp_mode': 'softplus', 'white_back': True})
    b = marching.march_rays(colors, densities, depths, white_back=True)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match='softplus'):
        marching.march_rays(colors, densities, depths, clamp_mode='relu')


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_single_opaque_slab_gives_its_colour_and_mid_depth(dtype):
    S, k = 10, 4
    depths = torch.linspace(1.0, 3.0, S, dtype=dtype).reshape(1, 1, S, 1)
    densities = torch.full((1, 1, S, 1), -100.0, dtype=dtype)  # softplus(-101) ~ 1e-44: transparent
    densities[0, 0, k + 1, 0] = 2e4 + 100  # mid-point density of interval k is 1e4: opaque
    colour = torch.tensor([0.2, 0.7, 0.4], dtype=dtype)
    colors = torch.rand(1, 1, S, 3, generator=torch.Generator().manual_seed(3), dtype=dtype)
    colors[0, 0, k] = colour
    colors[0, 0, k + 1] = colour
    for white_back in (False, True):
        rgb, depth, weights = marching.march_rays(colors, densities, depths, white_back=white_back)
        torch.testing.assert_close(rgb[0, 0], colour * 2 - 1, rtol=0, atol=1e-6)
        mid = (depths[0, 0, k, 0] + depths[0, 0, k + 1, 0]) / 2
        torch.testing.assert_close(depth[0, 0, 0], mid, rtol=0, atol=1e-6)
        assert abs(weights[0, 0, k, 0].item() - 1) < 1e-6
        assert weights.sum().item() == pytest.approx(1, abs=1e-6)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_empty_rays_background_and_depth_nan_handling(dtype):
    S = 6
    # Ray 0 empty over [1, 2]; ray 1 empty over [0.5, 4]: depths min/max are over the whole tensor.
    depths = torch.stack([torch.linspace(1.0, 2.0, S, dtype=dtype), torch.linspace(0.5, 4.0, S, dtype=dtype)])
    depths = depths.reshape(1, 2, S, 1)
    densities = torch.full((1, 2, S, 1), -1e3, dtype=dtype)  # softplus(-1001) == 0 exactly
    colors = torch.rand(1, 2, S, 3, generator=torch.Generator().manual_seed(4), dtype=dtype)
    rgb, depth, weights = marching.march_rays(colors, densities, depths, white_back=True)
    assert torch.equal(weights, torch.zeros_like(weights))
    assert torch.equal(rgb, torch.ones_like(rgb))  # white: 0 + 1 - 0, then * 2 - 1
    # 0 / 0 = NaN -> inf -> clamped to max(depths) of the whole tensor, also for ray 0.
    assert torch.equal(depth, torch.full_like(depth, 4.0))
    assert torch.isfinite(depth).all()
    rgb, depth, _ = marching.march_rays(colors, densities, depths, white_back=False)
    assert torch.equal(rgb, -torch.ones_like(rgb))
    assert torch.equal(depth, torch.full_like(depth, 4.0))


def test_depth_clamped_to_global_sample_range():
    # A normal ray's composite depth lies within its own mid-points, hence within the clamp range.
    gen = torch.Generator().manual_seed(5)
    colors, densities, depths = _random_rays(gen, N=3, R=7)
    _, depth, _ = marching.march_rays(colors, densities, depths)
    assert (depth >= depths.min()).all() and (depth <= depths.max()).all()


def test_marcher_needs_two_samples():
    with pytest.raises(ValueError):
        marching.march_rays(torch.zeros(1, 1, 1, 3), torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1))


# ----------------------------------------------------------------------------------------------
# Tri-plane sampling.


def _linear_planes(H, W, dtype=torch.float64, N=1):
    """Planes whose channel 0 is the grid x (width) coordinate of each pixel centre, channel 1 the
    grid y (height) coordinate and channel 2 a constant plane index + 1 (align_corners=False)."""
    gx = (2 * torch.arange(W, dtype=dtype) + 1) / W - 1
    gy = (2 * torch.arange(H, dtype=dtype) + 1) / H - 1
    planes = torch.zeros(N, 3, 3, H, W, dtype=dtype)
    for p in range(3):
        planes[:, p, 0] = gx.reshape(1, W)
        planes[:, p, 1] = gy.reshape(H, 1)
        planes[:, p, 2] = p + 1
    return planes


def test_generate_planes_and_projection_axes():
    planes = triplane.generate_planes()
    assert planes.shape == (3, 3, 3) and planes.dtype == torch.float32
    pts = torch.tensor([[[0.1, 0.2, 0.3]]], dtype=torch.float64)
    proj = triplane.project_onto_planes(planes, pts)
    assert proj.shape == (1, 3, 1, 2)
    expected = torch.tensor([[0.1, 0.2], [0.1, 0.3], [0.3, 0.1]], dtype=torch.float64)  # XY, XZ, ZX
    torch.testing.assert_close(proj[0, :, 0], expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('box_warp', [2.0, 1.0, 3.5])
def test_bilinear_reproduces_linear_planes_and_reads_xy_xz_zx(dtype, box_warp):
    H, W = 8, 12
    planes = _linear_planes(H, W, dtype=dtype, N=2)
    # Scaled coordinates 2 p / box_warp, distinct per axis and inside [-1 + 1/H, 1 - 1/H].
    scaled = torch.tensor([[0.31, -0.47, 0.62], [-0.55, 0.12, -0.2], [0.0, 0.8, -0.7]], dtype=dtype)
    pts = (scaled * box_warp / 2).unsqueeze(0).expand(2, -1, -1).contiguous()
    out = triplane.sample_from_planes(planes, pts, box_warp=box_warp)
    assert out.shape == (2, 3, 3, 3) and out.dtype == dtype
    x, y, z = scaled[:, 0], scaled[:, 1], scaled[:, 2]
    reads = {0: (x, y), 1: (x, z), 2: (z, x)}  # (grid x = width, grid y = height) per plane
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for p, (u, v) in reads.items():
        torch.testing.assert_close(out[:, p, :, 0], u.expand(2, -1), rtol=0, atol=tol)
        torch.testing.assert_close(out[:, p, :, 1], v.expand(2, -1), rtol=0, atol=tol)
        torch.testing.assert_close(out[:, p, :, 2], torch.full_like(u, p + 1.0).expand(2, -1), rtol=0, atol=tol)


def test_points_outside_box_read_zeros():
    H, W = 8, 8
    planes = _linear_planes(H, W) + 5.0  # no zeros inside
    box_warp = 2.0
    # Every plane reads x, and one of y / z; each point is out of [-1, 1] on x, so all planes read 0.
    pts = torch.tensor([[[1.5, 0.0, 0.0], [-1.3, 0.2, -0.1], [3.0, 3.0, 3.0]]], dtype=torch.float64)
    out = triplane.sample_from_planes(planes, pts, box_warp=box_warp)
    assert torch.equal(out, torch.zeros_like(out))
    # Out of the box on y only: plane 0 (XY) reads zeros, planes 1 and 2 (XZ, ZX) do not.
    out = triplane.sample_from_planes(planes, torch.tensor([[[0.1, 1.5, 0.2]]], dtype=torch.float64), box_warp)
    assert torch.equal(out[0, 0], torch.zeros_like(out[0, 0]))
    assert (out[0, 1:] != 0).all()
    # box_warp scaling: the same point is inside a larger box.
    out = triplane.sample_from_planes(planes, pts[:, :2] / 2, box_warp=4.0)
    torch.testing.assert_close(out, triplane.sample_from_planes(planes, pts[:, :2] / 4, box_warp=2.0))


def test_sample_from_planes_matches_manual_grid_sample():
    gen = torch.Generator().manual_seed(6)
    planes = torch.randn(2, 3, 4, 6, 5, generator=gen)
    pts = torch.rand(2, 9, 3, generator=gen) * 2 - 1
    out = triplane.sample_from_planes(planes, pts, box_warp=1.6)
    s = pts * (2 / 1.6)
    for p, (a, b) in enumerate([(0, 1), (0, 2), (2, 0)]):
        grid = torch.stack([s[..., a], s[..., b]], dim=-1).unsqueeze(1)  # [N, 1, M, 2]
        ref = torch.nn.functional.grid_sample(planes[:, p], grid, mode='bilinear', padding_mode='zeros',
                                              align_corners=False)  # [N, C, 1, M]
        torch.testing.assert_close(out[:, p], ref[:, :, 0].permute(0, 2, 1), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        triplane.sample_from_planes(planes, pts, box_warp=1.6, padding_mode='border')


# ----------------------------------------------------------------------------------------------
# Chunked evaluation.


def test_run_in_chunks_pointwise_equals_unchunked():
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(2, 37, 5, generator=gen)
    b = torch.randn(2, 37, 5, generator=gen)
    fn = lambda x, y: x * 2 + torch.sin(y)  # noqa: E731
    full = fn(a, b)
    for chunk in (1, 4, 8, 36, 37, 100, None):
        assert torch.equal(chunks.run_in_chunks(fn, a, b, chunk=chunk), full)
    assert torch.equal(chunks.run_in_chunks(fn, a.transpose(0, 2), b.transpose(0, 2), chunk=3, dim=2),
                       full.transpose(0, 2))


def test_run_in_chunks_dict_and_tuple_outputs_and_call_sizes():
    gen = torch.Generator().manual_seed(8)
    pts = torch.randn(3, 50, 3, generator=gen, dtype=torch.float64)
    seen = []

    def fn(x):
        seen.append(x.shape[1])
        return {'rgb': torch.tanh(x) * 0.5, 'sigma': (x.sum(-1, keepdim=True), x[..., :1] ** 2)}

    full = fn(pts)
    seen.clear()
    out = chunks.run_in_chunks(fn, pts, chunk=16)
    assert seen == [16, 16, 16, 2]  # memory bounded by the chunk
    assert set(out) == {'rgb', 'sigma'} and isinstance(out['sigma'], tuple)
    assert torch.equal(out['rgb'], full['rgb'])
    assert torch.equal(out['sigma'][0], full['sigma'][0]) and torch.equal(out['sigma'][1], full['sigma'][1])


def test_run_in_chunks_triplane_out_dim_and_errors():
    gen = torch.Generator().manual_seed(9)
    planes = torch.randn(2, 3, 4, 8, 8, generator=gen)
    pts = torch.rand(2, 33, 3, generator=gen) - 0.5
    fn = lambda p: triplane.sample_from_planes(planes, p, box_warp=1.0)  # noqa: E731
    out = chunks.run_in_chunks(fn, pts, chunk=10, dim=1, out_dim=2)
    torch.testing.assert_close(out, fn(pts), rtol=0, atol=1e-7)
    with pytest.raises(ValueError):
        chunks.run_in_chunks(fn, pts, chunk=0)
    with pytest.raises(ValueError):
        chunks.run_in_chunks(lambda x, y: x, pts, pts[:, :5], chunk=4)


# ----------------------------------------------------------------------------------------------
# Gradients (training differentiates through both).


def test_gradients_flow_through_marcher_and_planes():
    gen = torch.Generator().manual_seed(10)
    colors, densities, depths = _random_rays(gen, N=1, R=2, S=5)
    colors.requires_grad_(True)
    densities.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c, d: marching.march_rays(c, d, depths, white_back=True)[:2],
                                    (colors, densities))
    planes = torch.randn(1, 3, 2, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    pts = torch.rand(1, 6, 3, generator=gen, dtype=torch.float64) - 0.5
    assert torch.autograd.gradcheck(lambda p: triplane.sample_from_planes(p, pts, box_warp=1.0), (planes,))


# ----------------------------------------------------------------------------------------------
# The CPU fast paths: the fused tri-plane mean and the merged marcher, against the plain functions.


def test_fused_plane_mean_equals_grid_sample_mean_inside_and_outside_the_box():
    gen = torch.Generator().manual_seed(5)
    planes = torch.randn(2, 3, 5, 7, 7, generator=gen, dtype=torch.float64)
    points = (torch.rand(2, 300, 3, generator=gen, dtype=torch.float64) - 0.5) * 1.6  # some beyond the box
    for box_warp in (1.0, 1.6):
        expected = triplane.sample_from_planes(planes, points, box_warp=box_warp).mean(1)
        fused = triplane.sample_mean_from_planes(planes, points, box_warp)
        torch.testing.assert_close(fused, expected, atol=1e-12, rtol=0)


def test_fused_plane_mean_gradients():
    gen = torch.Generator().manual_seed(6)
    planes = torch.randn(1, 3, 2, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    # Points away from pixel centres, where the bilinear interpolation is differentiable in the coordinates.
    points = ((torch.rand(1, 9, 3, generator=gen, dtype=torch.float64) - 0.5) * 0.9).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, x: triplane.sample_mean_from_planes(p, x, 1.0), (planes, points))


def test_merged_marcher_equals_merge_then_march():
    from training.rendering import renderer
    gen = torch.Generator().manual_seed(7)
    depths1 = torch.sort(torch.rand(2, 3, 6, 1, generator=gen, dtype=torch.float64) * 2 + 1, dim=-2)[0]
    depths2 = torch.rand(2, 3, 5, 1, generator=gen, dtype=torch.float64) * 2 + 1
    colors1, colors2 = (torch.rand(2, 3, k, 4, generator=gen, dtype=torch.float64) for k in (6, 5))
    densities1, densities2 = (torch.randn(2, 3, k, 1, generator=gen, dtype=torch.float64) * 3 for k in (6, 5))
    for white_back in (False, True):
        merged = renderer.merge_samples(depths1, colors1, densities1, depths2, colors2, densities2)
        rgb, depth, weights = marching.march_rays(merged[1], merged[2], merged[0], white_back=white_back)
        ours = marching.march_merged(depths1, colors1, densities1, depths2, colors2, densities2, white_back=white_back)
        torch.testing.assert_close(ours[0], rgb, atol=1e-12, rtol=0)
        torch.testing.assert_close(ours[1], depth, atol=1e-12, rtol=0)
        torch.testing.assert_close(ours[2], weights.sum(dim=-2), atol=1e-12, rtol=0)
    colors1.requires_grad_(True)
    densities2.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda c, d: marching.march_merged(depths1, c, densities1, depths2, colors2, d)[:2], (colors1, densities2))
