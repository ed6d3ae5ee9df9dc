"""The importance renderer (coarse + fine pass, merge, compositing, chunks) against closed forms."""

import math

import pytest
import torch

from training.rendering import renderer, triplane


def _axis_rays(n=2, r=5, dtype=torch.float64):
    """Rays from z = -2 along +z, spread a little in x and y (all cross the unit cube)."""
    g = torch.Generator().manual_seed(0)
    origins = torch.zeros(n, r, 3, dtype=dtype)
    origins[..., :2] = (torch.rand(n, r, 2, generator=g, dtype=dtype) - 0.5) * 0.4
    origins[..., 2] = -2
    dirs = torch.zeros(n, r, 3, dtype=dtype)
    dirs[..., 2] = 1
    return origins, dirs


def _options(**overrides):
    options = dict(ray_start=1.0, ray_end=3.0, box_warp=1.0, depth_resolution=16, depth_resolution_importance=16,
                   clamp_mode='softplus', jitter=False)
    options.update(overrides)
    return options


def _uniform_field(sigma, colour):
    def field(coordinates, directions):
        n, m, _ = coordinates.shape
        rgb = torch.tensor(colour, dtype=coordinates.dtype).expand(n, m, len(colour))
        return {'rgb': rgb, 'sigma': torch.full((n, m, 1), sigma, dtype=coordinates.dtype)}
    return field


def _slab_field(z0):
    """Empty space for z < z0, opaque for z > z0 (a smooth step of the raw density)."""
    def field(coordinates, directions):
        z = coordinates[..., 2:3]
        sigma = 200 * torch.sigmoid((z - z0) * 200) - 10
        return {'rgb': torch.ones_like(coordinates), 'sigma': sigma}
    return field


@pytest.mark.parametrize('importance', [0, 16])
def test_uniform_medium_matches_closed_form(importance):
    # Constant raw density d: every interval has sigma = softplus(d - 1), and the samples span
    # [ray_start, ray_end] in deterministic mode, so sum(weights) = 1 - exp(-sigma (end - start)).
    d, colour = 0.7, (0.2, 0.5, 0.9)
    origins, dirs = _axis_rays()
    rgb, depth, weight_sum = renderer.render_rays(_uniform_field(d, colour), origins, dirs,
                                                  _options(depth_resolution_importance=importance))
    sigma = math.log1p(math.exp(d - 1))
    total = 1 - math.exp(-sigma * 2.0)
    torch.testing.assert_close(weight_sum, torch.full_like(weight_sum, total), atol=1e-8, rtol=0)
    expected = torch.tensor(colour, dtype=torch.float64) * total * 2 - 1
    torch.testing.assert_close(rgb, expected.expand_as(rgb), atol=1e-8, rtol=0)
    assert bool(((depth >= 1.0) & (depth <= 3.0)).all())


def test_importance_pass_finds_the_surface():
    # A surface at z = 0.3 seen from z = -2 lies at depth 2.3; the fine samples concentrate there.
    origins, dirs = _axis_rays()
    errors = {}
    for importance in (0, 32):
        _, depth, weight_sum = renderer.render_rays(_slab_field(0.3), origins, dirs,
                                                    _options(depth_resolution=8, depth_resolution_importance=importance))
        errors[importance] = (depth - 2.3).abs().max().item()
        assert weight_sum.min().item() > 0.99
    assert errors[32] < 0.02
    assert errors[32] < errors[0] / 3, errors


def test_chunks_give_the_unchunked_render():
    origins, dirs = _axis_rays(n=2, r=37)
    field = _slab_field(0.1)
    whole = renderer.render_rays(field, origins, dirs, _options(ray_start='auto', ray_end='auto'), chunk=None)
    for chunk in (2, 9, 64):
        parts = renderer.render_rays(field, origins, dirs, _options(ray_start='auto', ray_end='auto'), chunk=chunk)
        for a, b in zip(whole, parts):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_depth_clamp_uses_the_whole_batch():
    # A ray through empty space has no weight: EG3D's depth is inf clamped to the largest depth of the
    # whole batch, which a chunk holding only that ray does not see (auto limits differ per ray).
    origins, dirs = _axis_rays(n=1, r=2)
    origins[0, 1, 2] = -0.9  # the second ray starts inside the box, so its limits end earlier

    def empty(coordinates, directions):
        return {'rgb': torch.zeros_like(coordinates), 'sigma': torch.full_like(coordinates[..., :1], -100.0)}

    options = _options(ray_start='auto', ray_end='auto', depth_resolution_importance=0)
    _, whole, _ = renderer.render_rays(empty, origins, dirs, options, chunk=None)
    _, chunked, _ = renderer.render_rays(empty, origins, dirs, options, chunk=1)
    assert whole[0, 0, 0].item() == pytest.approx(2.5)  # the first ray's far limit, the batch maximum
    torch.testing.assert_close(whole, chunked)
    torch.testing.assert_close(whole[0, 1], whole[0, 0])


def test_jitter_and_density_noise_are_random_but_seedable():
    origins, dirs = _axis_rays()
    field = _slab_field(0.0)
    det = renderer.render_rays(field, origins, dirs, _options())
    assert torch.equal(det[0], renderer.render_rays(field, origins, dirs, _options())[0])
    for overrides in (dict(jitter=True), dict(density_noise=1.0)):
        a = renderer.render_rays(field, origins, dirs, _options(**overrides), generator=torch.Generator().manual_seed(3))
        b = renderer.render_rays(field, origins, dirs, _options(**overrides), generator=torch.Generator().manual_seed(3))
        assert torch.equal(a[1], b[1])
        assert not torch.equal(a[1], det[1])


def test_merge_samples_sorts_all_channels_together():
    depths1 = torch.tensor([0.0, 2.0, 4.0]).reshape(1, 1, 3, 1)
    depths2 = torch.tensor([3.0, 1.0]).reshape(1, 1, 2, 1)
    colors1, colors2 = depths1.expand(1, 1, 3, 2) * 10, depths2.expand(1, 1, 2, 2) * 10
    depths, colors, densities = renderer.merge_samples(depths1, colors1, -depths1, depths2, colors2, -depths2)
    assert depths.flatten().tolist() == [0, 1, 2, 3, 4]
    assert colors[..., 1].flatten().tolist() == [0, 10, 20, 30, 40]
    assert densities.flatten().tolist() == [0, -1, -2, -3, -4]


def test_triplane_field_reads_planes_through_the_decoder():
    planes = torch.randn(1, 3, 4, 8, 8, dtype=torch.float64)
    points = torch.rand(1, 6, 3, dtype=torch.float64) - 0.5
    seen = {}

    def decoder(features, directions):
        seen['features'] = features
        return {'rgb': features.mean(1), 'sigma': features.mean(1)[..., :1]}

    out = renderer.triplane_field(planes, decoder, box_warp=1.0)(points, torch.zeros_like(points))
    torch.testing.assert_close(seen['features'], triplane.sample_from_planes(planes, points, box_warp=1.0))
    assert out['rgb'].shape == (1, 6, 4)
