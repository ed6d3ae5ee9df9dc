"""training/networks_gram.py and GRAM's cameras against closed forms and float64 re-derivations.

The oracles re-derive GRAM's rules (microsoft/GRAM generators/renderers/manifold_renderer.py and
generators/representations/gram.py, as described in the module docstring) with plain numpy loops:
its camera and ray grid, the first-crossing intersection search, and the compositing. The
official code's own outputs are compared in test_gram_official_parity.py.
"""

import io
import math
import pickle

import numpy as np
import pytest
import torch

from torch_utils import persistence
from training import cameras
from training import networks_gram as ng
from training.rendering import rays

TINY = dict(z_dim=8, img_size=8, representation_kwargs=dict(hidden_dim=16, hidden_dim_sample=16, center=(0, 0, -1.5)),
            renderer_kwargs=dict(num_samples=32, num_manifolds=12, levels_start=23, levels_end=8))


def tiny_gram(seed=0, **kwargs):
    torch.manual_seed(seed)
    options = dict(TINY, **kwargs)
    return ng.GramGenerator(**options).eval()


def poses(count=3):
    phi = torch.tensor([math.pi / 2, math.pi / 2 - 0.15, math.pi / 2 + 0.1][:count])
    theta = torch.tensor([math.pi / 2, math.pi / 2 + 0.4, math.pi / 2 - 0.3][:count])
    return phi, theta

# ----------------------------------------------------------------------------------------------
# Cameras.


def _gram_cam2world(origin):
    """GRAM's cam2world (OpenGL camera: x right, y up, looking down -z) of a camera at `origin`, in numpy."""
    forward = -origin / np.linalg.norm(origin)
    left = np.cross([0.0, 1.0, 0.0], forward)
    left /= np.linalg.norm(left)
    up = np.cross(forward, left)
    up /= np.linalg.norm(up)
    matrix = np.eye(4)
    matrix[:3, :3] = np.stack([-left, up, -forward], axis=-1)
    matrix[:3, 3] = origin
    return matrix


def test_gram_pose_to_label_places_and_aims_the_camera_like_gram():
    phi, theta = poses()
    c = cameras.gram_pose_to_label(phi, theta, fov_degrees=12)
    cameras.validate(c)
    cam2world, intrinsics = cameras.unpack(c)
    for i in range(3):
        p, t = float(phi[i]), float(theta[i])
        origin = np.array([math.sin(p) * math.cos(t), math.cos(p), math.sin(p) * math.sin(t)])
        gl = _gram_cam2world(origin)
        cv = gl @ np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV axes: y down, z forward
        np.testing.assert_allclose(cam2world[i].numpy(), cv, atol=1e-6)
    focal = 1 / (2 * math.tan(math.radians(6)))
    np.testing.assert_allclose(intrinsics[0].numpy(), [[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], rtol=1e-6)
    # The frontal camera is on +z; radius scales the position only.
    far = cameras.gram_pose_to_label(phi, theta, 12, radius=2.5)
    np.testing.assert_allclose(far[:, [3, 7, 11]].numpy(), 2.5 * c[:, [3, 7, 11]].numpy(), rtol=1e-6)
    np.testing.assert_allclose(c[0, [3, 7, 11]].numpy(), [0, 0, 1], atol=1e-7)


def test_gram_pose_from_label_inverts_gram_pose_to_label():
    gen = torch.Generator().manual_seed(0)
    phi = torch.rand(64, generator=gen) * 2.8 + 0.15
    theta = torch.rand(64, generator=gen) * 2 * math.pi - math.pi
    back_phi, back_theta = cameras.gram_pose_from_label(cameras.gram_pose_to_label(phi, theta, 30, radius=1.7))
    np.testing.assert_allclose(back_phi.numpy(), phi.numpy(), atol=2e-5)
    np.testing.assert_allclose(np.angle(np.exp(1j * (back_theta - theta).numpy())), 0, atol=2e-5)


@pytest.mark.parametrize('legacy', [True, False])
def test_rays_from_gram_labels_are_grams_rays(legacy):
    # GRAM: d_cam = normalize(x, y, -1 / tan(fov / 2)) with x = linspace(-1, 1) over the columns and
    # y = linspace(1, -1) over the rows (borders included), then rotated by its cam2world. Pixel
    # centres put x at (2 j + 1) / W - 1 instead.
    phi, theta = poses()
    fov, res = 12.0, 5
    c = cameras.gram_pose_to_label(phi, theta, fov)
    uv = rays.border_uv(res) if legacy else None
    origins, dirs = rays.sample_rays_from_labels(c.double(), res, uv=None if uv is None else uv.double())
    grid = np.linspace(-1, 1, res) if legacy else (2 * np.arange(res) + 1) / res - 1
    for i in range(3):
        p, t = float(phi[i]), float(theta[i])
        origin = np.array([math.sin(p) * math.cos(t), math.cos(p), math.sin(p) * math.sin(t)])
        gl = _gram_cam2world(origin)
        expected = []
        for row in range(res):
            for col in range(res):
                d = np.array([grid[col], -grid[row], -1 / math.tan(math.radians(fov) / 2)])
                expected.append(gl[:3, :3] @ (d / np.linalg.norm(d)))
        np.testing.assert_allclose(dirs[i].numpy(), np.array(expected), atol=1e-6)
        np.testing.assert_allclose(origins[i].numpy(), np.broadcast_to(origin, (res * res, 3)), atol=1e-6)


@pytest.mark.parametrize('mode', ['gaussian', 'uniform', 'spherical_uniform', 'fixed'])
def test_pose_prior_draws_grams_distributions(mode):
    gen = torch.Generator().manual_seed(0)
    h_mean, v_mean, h_std, v_std = math.pi / 2, 1.2, 0.3, 0.2
    phi, theta = cameras.sample_gram_poses(mode, h_mean, v_mean, h_std, v_std, 20000, generator=gen)
    if mode == 'gaussian':
        assert float(theta.mean()) == pytest.approx(h_mean, abs=0.01) and float(theta.std()) == pytest.approx(h_std, rel=0.03)
        assert float(phi.mean()) == pytest.approx(v_mean, abs=0.01) and float(phi.std()) == pytest.approx(v_std, rel=0.03)
    elif mode == 'uniform':
        assert float(theta.min()) >= h_mean - h_std and float(theta.max()) <= h_mean + h_std
        assert float(phi.var()) == pytest.approx(v_std ** 2 / 3, rel=0.05)
    elif mode == 'spherical_uniform':
        # cos(phi) = 1 - 2 v with v uniform on (v_mean +- v_std) / pi: cos(phi) is uniform.
        low, high = 1 - 2 * (v_mean + v_std) / math.pi, 1 - 2 * (v_mean - v_std) / math.pi
        cos = phi.cos()
        assert float(cos.min()) >= low - 1e-6 and float(cos.max()) <= high + 1e-6
        assert float(cos.mean()) == pytest.approx((low + high) / 2, abs=0.01)
        assert float(cos.var()) == pytest.approx((high - low) ** 2 / 12, rel=0.05)
    else:
        assert torch.all(theta == h_mean) and torch.allclose(phi, torch.full_like(phi, v_mean))

# ----------------------------------------------------------------------------------------------
# Intersections and compositing.


def _crossings_oracle(points, s, levels):
    """GRAM's search in float64 loops: per level the first interval with s_near >= l >= s_far among all
    but the last, else the last; linear interpolation unless the drop is at most 0.05."""
    n, r, count, _ = points.shape
    out = np.zeros((n, r, len(levels), 3))
    valid = np.zeros((n, r, len(levels)), dtype=bool)
    for a in range(n):
        for b in range(r):
            for k, level in enumerate(levels):
                index = count - 2
                for i in range(count - 2):
                    if s[a, b, i + 1] <= level <= s[a, b, i]:
                        index = i
                        break
                lo, hi = s[a, b, index], s[a, b, index + 1]
                crossing = hi <= level <= lo
                valid[a, b, k] = crossing
                if crossing and abs(hi - lo) > 0.05:
                    out[a, b, k] = ((hi - level) * points[a, b, index] + (level - lo) * points[a, b, index + 1]) / (hi - lo)
                else:
                    out[a, b, k] = points[a, b, index + 1]
    return out, valid


def test_first_crossings_match_the_search_rule():
    gen = np.random.RandomState(0)
    points = np.cumsum(gen.rand(2, 6, 10, 3), axis=2)
    s = np.cumsum(gen.randn(2, 6, 10) * 3, axis=2)   # wanders up and down: several crossings per level
    s[0, 0] = np.linspace(10, 0, 10)                  # one clean crossing per level
    s[0, 1, 5:7] = [2.0, 1.97]                        # a flat crossing: the far point
    s[0, 2, -2:] = [3.0, -3.0]                        # crossing only in the last interval
    levels = np.array([2.0, 1.98, 0.5, -1.0])
    ours, valid = ng.first_crossings(torch.from_numpy(points), torch.from_numpy(s), torch.from_numpy(levels))
    expected, expected_valid = _crossings_oracle(points, s, levels)
    np.testing.assert_array_equal(valid.numpy(), expected_valid)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-12)
    assert 0.2 < expected_valid.mean() < 0.9


def test_first_crossings_pass_gradients_only_through_the_field():
    points = torch.linspace(0, 1, 8, dtype=torch.float64).reshape(1, 1, 8, 1).expand(1, 1, 8, 3).contiguous()
    s = torch.linspace(1, -1, 8, dtype=torch.float64).reshape(1, 1, 8).requires_grad_(True)
    out, valid = ng.first_crossings(points, s, torch.tensor([0.3], dtype=torch.float64))
    assert bool(valid.all())
    # x* = x_near + (s_near - l) / (s_near - s_far) * (x_far - x_near): d x*/d s is the closed form.
    out[..., 0].sum().backward()
    i = 2  # s = 1 - 2 k / 7: the crossing of 0.3 is in interval [2, 3]
    s_near, s_far = s[0, 0, i].item(), s[0, 0, i + 1].item()
    dx = float(points[0, 0, i + 1, 0] - points[0, 0, i, 0])
    expected_near = dx * (0.3 - s_far) / (s_near - s_far) ** 2  # d/ds_near of (s_near - l) / (s_near - s_far)
    expected_far = dx * (s_near - 0.3) / (s_near - s_far) ** 2
    np.testing.assert_allclose(s.grad[0, 0, [i, i + 1]].numpy(), [expected_near, expected_far], rtol=1e-9)
    assert float(s.grad.abs().sum()) == pytest.approx(abs(expected_near) + abs(expected_far), rel=1e-9)


def _composite_oracle(rgb, sigma, depth, valid, background_index, delta_alpha, delta_final, white_back):
    n, r, k = sigma.shape
    colour, out_depth = np.zeros((n, r, 3)), np.zeros((n, r))
    for a in range(n):
        for b in range(r):
            order = np.argsort(depth[a, b], kind='stable')
            transmittance, total = 1.0, 0.0
            for position, i in enumerate(order):
                delta = delta_final if position == k - 1 or i == background_index else delta_alpha
                alpha = (1 - math.exp(-delta * sigma[a, b, i])) * valid[a, b, i]
                weight = alpha * transmittance
                colour[a, b] += weight * rgb[a, b, i]
                out_depth[a, b] += weight * depth[a, b, i]
                total += weight
                transmittance *= 1 - alpha + 1e-10
            out_depth[a, b] /= total
            if white_back:
                colour[a, b] += 1 - total
    return colour, out_depth


@pytest.mark.parametrize('background, white_back', [(True, False), (False, True)])
def test_composite_matches_grams_integration(background, white_back):
    gen = np.random.RandomState(1)
    n, r, k = 2, 5, 6
    rgb, sigma = gen.rand(n, r, k, 3), gen.rand(n, r, k) * 30
    depth = gen.rand(n, r, k) + 0.5
    valid = (gen.rand(n, r, k) > 0.3).astype(np.float64)
    background_index = k - 1 if background else None
    if background:
        valid[..., -1] = 1
    renderer = ng.ManifoldRenderer(num_manifolds=k, levels_start=1, levels_end=0, num_samples=4,
                                   white_back=white_back, background=background)
    colour, out_depth, _ = ng.composite(*(torch.from_numpy(x) for x in (rgb, sigma, depth, valid)), background_index,
                                        renderer)
    expected_colour, expected_depth = _composite_oracle(rgb, sigma, depth, valid, background_index, 0.04,
                                                        renderer.delta_final, white_back)
    np.testing.assert_allclose(colour.numpy(), expected_colour, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out_depth.numpy(), expected_depth, rtol=1e-9)

# ----------------------------------------------------------------------------------------------
# The generator.


def test_generator_renders_images_in_range_and_the_background_plane():
    G = tiny_gram()
    c = cameras.gram_pose_to_label(*poses(), 12)
    z = torch.randn([3, G.z_dim])
    with torch.no_grad():
        out = G(z, c, return_depth=True)
    assert out['image'].shape == (3, 3, 8, 8) and out['image_depth'].shape == (3, 1, 8, 8)
    assert out['image'].min() >= -1 - 2e-3 and out['image'].max() <= 1 + 2e-3
    # Depths lie between the nearest manifold sample and the background plane z = -0.12.
    frontal_far = 1.12 / math.cos(math.radians(6)) + 0.12
    assert float(out['image_depth'].min()) > 0.88 - 1e-6 and float(out['image_depth'].max()) < frontal_far + 0.2
    assert G.c_dim == 25 and G.img_resolution == 8 and G.num_ws == 1 and G.w_dim == 2 * 9 * 16


def _dense_radiance(self, ws, points, views, evaluate):
    """The radiance network at every sample (the official evaluation), for comparison."""
    frequencies, phases = ws[:, 0].chunk(2, dim=-1)
    n, r, k, _ = points.shape
    out = self.representation.rf_network.forward_with_frequencies_phase_shifts(
        points.reshape(n, r * k, 3), frequencies, phases, views.reshape(n, r * k, 3))
    return out.reshape(n, r, k, 4)


def test_evaluating_only_valid_samples_gives_the_dense_image_and_gradients(monkeypatch):
    c = cameras.gram_pose_to_label(*poses(2), 12)
    z = torch.randn([2, TINY['z_dim']], generator=torch.Generator().manual_seed(3))
    results = []
    for dense in (False, True):
        G = tiny_gram(seed=1).train()
        if dense:
            monkeypatch.setattr(ng.GramGenerator, '_radiance', _dense_radiance)
        image = G(z, c)
        (image * torch.linspace(-1, 1, image.numel()).reshape(image.shape)).sum().backward()
        results.append((image.detach(), {name: p.grad.clone() for name, p in G.named_parameters() if p.grad is not None}))
    (sparse_image, sparse_grads), (dense_image, dense_grads) = results
    torch.testing.assert_close(sparse_image, dense_image, rtol=0, atol=1e-6)
    assert sparse_grads.keys() == dense_grads.keys()
    assert any(name.startswith('representation.sample_network') for name in sparse_grads)
    for name in dense_grads:  # equal up to float32 summation order
        scale = float(dense_grads[name].abs().max())
        assert float((sparse_grads[name] - dense_grads[name]).abs().max()) <= 1e-5 * scale + 1e-9, name


def test_chunks_of_rays_render_the_same_image():
    c = cameras.gram_pose_to_label(*poses(2), 12)
    z = torch.randn([2, TINY['z_dim']])
    with torch.no_grad():
        whole = tiny_gram(ray_chunk=10 ** 6)(z, c)
        chunked = tiny_gram(ray_chunk=7)(z, c)
        default = tiny_gram()(z, c)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(default, whole, rtol=0, atol=1e-6)


def test_ray_chunk_counts_the_rays_of_the_whole_batch(monkeypatch):
    G = tiny_gram(ray_chunk=8)
    assert ng.default_ray_chunk('cpu') == ng.CPU_RAY_CHUNK and ng.default_ray_chunk('cuda') == ng.DEFAULT_RAY_CHUNK
    passes = []
    render_rays = G._render_rays
    monkeypatch.setattr(G, '_render_rays', lambda ws, o, d: passes.append(d.shape[:2]) or render_rays(ws, o, d))
    with torch.no_grad():
        G(torch.randn([2, G.z_dim]), cameras.gram_pose_to_label(*poses(2), 12), resolution=5)
    assert passes == [(2, 4)] * 6 + [(2, 1)]  # 8 rays a pass: 4 of each of the 2 images, 25 rays each


def test_resolution_renders_another_grid_of_the_same_camera():
    G = tiny_gram()
    c = cameras.gram_pose_to_label(*poses(1), 12)
    z = torch.randn([1, G.z_dim])
    with torch.no_grad():
        small, big = G(z, c, resolution=3), G(z, c, resolution=9)
    assert small.shape == (1, 3, 3, 3) and big.shape == (1, 3, 9, 9)
    # Pixel centres of 3 x 3 are every third pixel centre of 9 x 9, starting at the second.
    torch.testing.assert_close(small, big[:, :, 1::3, 1::3], rtol=0, atol=1e-6)


def test_lock_view_dependence_ignores_the_view_direction():
    G = tiny_gram()
    c = cameras.gram_pose_to_label(*poses(1), 12)
    z = torch.randn([1, G.z_dim])
    with torch.no_grad():
        free = G(z, c)
        G.renderer.lock_view_dependence = True
        locked = G(z, c)
    assert not torch.allclose(free, locked)
    # Locked, the image is the one of a radiance network that ignores its direction input.
    rf = G.representation.rf_network
    original = rf.forward_with_frequencies_phase_shifts
    def view_blind(points, frequencies, phases, directions, **kwargs):
        views = torch.zeros_like(directions)
        views[..., 2] = -1
        return original(points, frequencies, phases, views, **kwargs)
    G.renderer.lock_view_dependence = False
    rf.forward_with_frequencies_phase_shifts = view_blind
    with torch.no_grad():
        blind = G(z, c)
    torch.testing.assert_close(blind, locked, rtol=0, atol=0)


def test_truncation_lerps_towards_a_reproducible_average():
    G = tiny_gram()
    z = torch.randn([2, G.z_dim])
    w_avg = G.w_avg
    expected = torch.cat(G.representation.rf_network.mapping_network(
        torch.randn([ng.TRUNCATION_SAMPLES, G.z_dim], generator=torch.Generator().manual_seed(0))), dim=-1).mean(0)
    torch.testing.assert_close(w_avg, expected)
    ws = G.mapping(z, None)
    torch.testing.assert_close(G.mapping(z, None, truncation_psi=0.7), w_avg + 0.7 * (ws - w_avg))
    with torch.no_grad():
        G.representation.rf_network.mapping_network.network[0].bias.add_(1)
    assert not torch.allclose(G.w_avg, w_avg)  # recomputed after the weights change


def test_constructor_checks_the_contract():
    with pytest.raises(ValueError, match='img_size'):
        ng.GramGenerator(**dict(TINY, img_resolution=16))
    with pytest.raises(ValueError, match='25-float camera labels'):
        ng.GramGenerator(**dict(TINY, c_dim=3))
    G = ng.GramGenerator(**dict(TINY, img_size=None, img_resolution=8, c_dim=25, img_channels=3))
    assert G.img_size == 8

# ----------------------------------------------------------------------------------------------
# The discriminator.


def test_coordinate_channels_are_the_row_then_the_column_in_minus_one_to_one():
    x = torch.zeros(1, 2, 3, 5)
    out = ng.AddCoords()(x)
    np.testing.assert_allclose(out[0, 2].numpy(), np.repeat(np.linspace(-1, 1, 3)[:, None], 5, axis=1), atol=1e-7)
    np.testing.assert_allclose(out[0, 3].numpy(), np.repeat(np.linspace(-1, 1, 5)[None, :], 3, axis=0), atol=1e-7)


@pytest.mark.parametrize('size', [4, 16, 32])
def test_discriminator_gives_logits_and_pose(size):
    torch.manual_seed(0)
    D = ng.GramDiscriminator(img_resolution=size, c_dim=25)
    img = torch.randn(2, 3, size, size)
    logits = D(img, None)
    logits2, pose = D(img, None, return_pose=True)
    assert logits.shape == (2, 1) and pose.shape == (2, 2) and torch.equal(logits, logits2)
    assert len(D.layers) == int(math.log2(size)) - 1


def test_discriminator_refuses_other_sizes():
    with pytest.raises(ValueError, match='power-of-two'):
        ng.GramDiscriminator(img_size=24)

# ----------------------------------------------------------------------------------------------
# Pickles.


def test_pickles_rebuild_without_executing_code_and_keep_renderer_options():
    G = tiny_gram()
    G.renderer.lock_view_dependence = True
    G.epoch, G.step = 3, 1200
    D = ng.GramDiscriminator(img_size=8)
    buffer = io.BytesIO()
    pickle.dump(dict(G=G, D=D), buffer)
    buffer.seek(0)
    loaded = persistence.load(buffer)  # the no-exec loader
    c = cameras.gram_pose_to_label(*poses(2), 12)
    z = torch.randn([2, G.z_dim])
    with torch.no_grad():
        torch.testing.assert_close(loaded['G'](z, c), G(z, c), rtol=0, atol=0)
    assert loaded['G'].renderer.lock_view_dependence is True
    img = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(loaded['D'](img, None), D(img, None), rtol=0, atol=0)


def test_inference_fast_path_equals_the_autograd_path():
    # Without autograd each FiLM layer folds freq into its weights; with autograd it runs as GRAM writes it.
    G = tiny_gram(seed=2)
    c = cameras.gram_pose_to_label(*poses(3), 12)
    z = torch.randn([3, G.z_dim])
    with torch.no_grad():
        fast = G(z, c)
    slow = G(z, c)
    assert slow.requires_grad
    torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=2e-6)


def test_label_scale_renders_data_in_other_units_as_grams_world():
    # A camera at radius 2.7 with label_scale 1 / 2.7 sees what a camera at radius 1 sees; depth in label units.
    phi, theta = poses(2)
    z = torch.randn([2, TINY['z_dim']])
    with torch.no_grad():
        unit = tiny_gram()(z, cameras.gram_pose_to_label(phi, theta, 12), return_depth=True)
        scaled = tiny_gram(label_scale=1 / 2.7)(z, cameras.gram_pose_to_label(phi, theta, 12, radius=2.7),
                                                return_depth=True)
    torch.testing.assert_close(scaled['image'], unit['image'], rtol=0, atol=1e-5)
    torch.testing.assert_close(scaled['image_depth'], unit['image_depth'] * 2.7, rtol=1e-5, atol=1e-5)


def test_patches_are_the_row_major_pixel_ranges_of_the_image():
    G = tiny_gram()
    c = cameras.gram_pose_to_label(*poses(2), 12)
    z = torch.randn([2, G.z_dim])
    with torch.no_grad():
        ws = G.mapping(z, c)
        whole = G.synthesis(ws, c).reshape(2, 3, -1)
        patches = [G.synthesis(ws, c, patch=(i, 3)) for i in range(3)]
    assert [p.shape[-1] for p in patches] == [21, 21, 22]  # 64 pixels in 3 parts
    torch.testing.assert_close(torch.cat(patches, dim=-1), whole, rtol=0, atol=1e-6)


def test_scripts_ask_for_depth_through_the_declared_mode_options():
    # gen_images.py --image-mode=image_depth and the multi-view measure go through generation.synthesize.
    from training import capabilities, generation
    G = tiny_gram()
    c = cameras.gram_pose_to_label(*poses(2), 12)
    z = torch.randn([2, G.z_dim])
    assert capabilities.image_modes(G) == ('image', 'image_depth')
    assert capabilities.mode_kwargs(G, ['image']) == {}
    with torch.no_grad():
        ws = G.mapping(z, c)
        depth = generation.synthesize(G, ws, c, image_mode='image_depth')
        image = generation.synthesize(G, ws, c)
        expected = G.synthesis(ws, c, return_depth=True)
    torch.testing.assert_close(depth, expected['image_depth'])
    torch.testing.assert_close(image, expected['image'])
    assert generation.default_camera(G) == dict(radius=1.0, pivot=[0.0, 0.0, 0.0], focal=pytest.approx(cameras.gram_focal(12)))
