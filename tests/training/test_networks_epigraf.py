"""EpiGRAF's networks (training/networks_epigraf.py) compute the official function.

The oracle is EpiGRAF's render written out in float64 from the official formulas (bench/epigraf_cpu.py)
(src/training/rendering.py, networks_epigraf.py, training_utils.py of universome/epigraf), reading
only the network's tensors: its NDC ray grid with the patch remap, the look-at cam2world of
(yaw, pitch), the tri-plane lookup, the per-sample compositing, inverse-CDF importance sampling and
the merged second pass. Randomness is off on both sides (no stratified jitter, evenly spaced u).
"""

import copy
import math
import os
import sys

import numpy as np
import pytest
import torch

import tiny_networks
from training import cameras
from training import networks_epigraf as ne

SPEC_CFG = tiny_networks.EPIGRAF_CFG


def tiny_G(seed=0, camera_cond=False, legacy_rays=True, **cfg_overrides):
    cfg = copy.deepcopy(SPEC_CFG)
    cfg.update(cfg_overrides)
    torch.manual_seed(seed)
    G = ne.Generator(cfg, z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, legacy_rays=legacy_rays,
                     mapping_kwargs=dict(num_layers=2, camera_cond=camera_cond, mean_camera_pose=torch.tensor([0.1, 1.5, 0])),
                     channel_base=64, channel_max=16)
    with torch.no_grad():  # a density with structure inside the frustum, so that the importance pass matters
        G.synthesis.tri_plane_mlp.model[1].bias[-1] = 1.0
    return G.eval()


def angles(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(n, generator=gen) * 0.3, math.pi / 2 + torch.randn(n, generator=gen) * 0.15,
                        torch.zeros(n)], dim=1)


# ----------------------------------------------------------------------------------------------
# The official render: bench/epigraf_cpu.py's baseline, in float64.

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'bench'))
from epigraf_cpu import official_render as _official_render  # noqa: E402


def official_render(*args, **kwargs):
    with torch.no_grad():
        return _official_render(*args, **kwargs)


def ours(G, ws, c, **kwargs):
    with torch.no_grad():
        return G.synthesis(ws, c=c, jitter=False, det=True, **kwargs).double()

# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def legacy_G():
    return tiny_G()


def test_whole_image_equals_the_official_render(legacy_G):
    G = legacy_G
    a = angles(2)
    ws = G.mapping(torch.randn(2, 8), torch.zeros(2, 0))
    c = cameras.epigraf_angles_to_label(a, 12.0)
    ref = official_render(G, ws, a, 8)
    assert float(ref.std()) > 1e-3  # a picture, not a constant
    torch.testing.assert_close(ours(G, ws, c, resolution=8), ref, rtol=0, atol=2e-5)
    torch.testing.assert_close(ours(G, ws, c, resolution=8, return_depth=True), official_render(G, ws, a, 8, return_depth=True),
                               rtol=0, atol=2e-5)


def test_official_call_with_camera_angles_gives_the_same_image(legacy_G):
    G = legacy_G
    a = angles(2, seed=1)
    z = torch.randn(2, 8)
    with torch.no_grad():
        official_call = G(z, torch.zeros(2, 0), camera_angles=a, jitter=False, det=True)
        contract_call = G(z, cameras.epigraf_angles_to_label(a, 12.0), jitter=False, det=True)
    ref = official_render(G, G.mapping(z, torch.zeros(2, 0)), a, 8)
    torch.testing.assert_close(official_call.double(), ref, rtol=0, atol=2e-5)
    torch.testing.assert_close(contract_call, official_call, rtol=0, atol=1e-6)


def test_patches_equal_the_official_patch_render(legacy_G):
    G = legacy_G
    a = angles(2, seed=2)
    ws = G.mapping(torch.randn(2, 8), torch.zeros(2, 0))
    scales = torch.tensor([[0.5, 0.5], [0.25, 0.25]])
    offsets = torch.tensor([[0.1, 0.4], [0.7, 0.0]])
    ref = official_render(G, ws, a, 4, patch=(scales, offsets))
    got = ours(G, ws, cameras.epigraf_angles_to_label(a, 12.0), patch_params={'scales': scales, 'offsets': offsets})
    assert got.shape == (2, 3, 4, 4)  # cfg.patch.resolution
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-5)


def test_physical_rays_are_the_pixel_centres_and_a_patch_is_a_window_of_the_image():
    G = tiny_G(legacy_rays=False)
    a = angles(1, seed=3)
    ws = G.mapping(torch.randn(1, 8), torch.zeros(1, 0))
    c = cameras.epigraf_angles_to_label(a, 12.0)
    full = ours(G, ws, c, resolution=8)
    torch.testing.assert_close(full, official_render(G, ws, a, 8, pixel_centres=True), rtol=0, atol=2e-5)
    # EpiGRAF's y offset counts from the bottom: scale 1/2 at offset (1/2, 0) is the bottom-right quarter.
    patch = ours(G, ws, c, patch=(torch.full((1, 2), 0.5), torch.tensor([[0.5, 0.0]])))
    torch.testing.assert_close(patch, full[:, :, 4:, 4:], rtol=0, atol=2e-5)
    whole = ours(G, ws, c, patch=(torch.ones(1, 2), torch.zeros(1, 2)), resolution=8)
    torch.testing.assert_close(whole, full, rtol=0, atol=1e-6)


def test_training_mode_renders_the_patch_resolution_with_jitter_and_density_noise():
    G = tiny_G().train()
    G.progressive_update(1250)  # a quarter of nerf_noise_kimg_growth: std 0.75
    assert G.synthesis.nerf_noise_std == pytest.approx(0.75)
    G.progressive_update(6000)
    assert G.synthesis.nerf_noise_std == 0.0
    G.progressive_update(0)
    c = cameras.epigraf_angles_to_label(angles(2), 12.0)
    z = torch.randn(2, 8)
    with torch.no_grad():
        a, b = G(z, c), G(z, c)
    assert a.shape == (2, 3, 4, 4) and not torch.equal(a, b)  # stochastic in training, as EpiGRAF
    G.eval()
    with torch.no_grad():
        assert G(z, c).shape == (2, 3, 8, 8)


def test_stratified_jitter_stays_inside_the_mid_point_intervals():
    depths = torch.linspace(1, 2, 5, dtype=torch.float64).reshape(1, 1, 5, 1).repeat(3, 7, 1, 1)
    jittered = ne.stratify(depths, torch.Generator().manual_seed(0))
    mids = 0.5 * (depths[:, :, 1:] + depths[:, :, :-1])
    lower = torch.cat([depths[:, :, :1], mids], dim=2)
    upper = torch.cat([mids, depths[:, :, -1:]], dim=2)
    assert ((jittered >= lower) & (jittered <= upper)).all()
    assert (jittered != depths).any()


def test_gpc_encodes_raw_normalised_angles_and_uses_the_mean_pose_at_eval():
    G = tiny_G(camera_cond=True)
    mapping = G.mapping
    assert mapping.embed.weight.shape == (8, 2)  # raw yaw and pitch, as the official GPC entry
    a = torch.tensor([[-7.0, 1.5, 0.0], [0.5, 2.0, 0.0]])
    expected = np.sign(a[:, :2].numpy()) * (np.abs(a[:, :2].numpy()) % (2 * np.pi)) / (2 * np.pi)
    np.testing.assert_allclose(ne.normalise_angles(a).numpy(), expected, rtol=1e-6)
    z = torch.randn(2, 8)
    with torch.no_grad():
        at_mean = mapping(z, torch.zeros(2, 0))
        explicit = mapping(z, torch.zeros(2, 0), camera_angles=torch.tensor([[0.1, 1.5, 0.0]] * 2))
        other = mapping(z, torch.zeros(2, 0), camera_angles=a)
    torch.testing.assert_close(at_mean, explicit)
    assert not torch.allclose(at_mean, other)


def test_scalar_encoder_is_fourier_features_and_a_learned_embedding():
    torch.manual_seed(0)
    enc = ne.ScalarEncoder1d(coord_dim=3, x_multiplier=1000.0, const_emb_dim=256)
    np.testing.assert_allclose(enc.fourier_encoder.fourier_coefs.numpy(), np.pi * 2.0 ** np.arange(10) / 1024, rtol=1e-6)
    assert enc.get_dim() == 828
    x = torch.tensor([[0.5, 0.25, 0.0013]])
    out = enc(x).reshape(3, 276)
    raw = 1000 * x[0, :, None].double() * torch.tensor(np.pi * 2.0 ** np.arange(10) / 1024)
    torch.testing.assert_close(out[:, :20].double(), torch.cat([raw.sin(), raw.cos()], dim=1), rtol=0, atol=1e-4)  # float32 at ~800 rad
    torch.testing.assert_close(out[:, 20:], enc.const_embed.weight[[500, 250, 1]])


def test_hyper_modulation_scales_conv1_inputs_by_one_plus_tanh():
    torch.manual_seed(0)
    layer = ne.Conv2dLayer(4, 5, kernel_size=3, c_dim=6, hyper_mod=True, activation='lrelu')
    plain = ne.Conv2dLayer(4, 5, kernel_size=3, activation='lrelu')
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith('affine')})
    x, h = torch.randn(2, 4, 6, 6), torch.randn(2, 6)
    scale = 1 + torch.tanh(h @ (layer.affine.weight / math.sqrt(6)).T + layer.affine.bias)
    torch.testing.assert_close(layer(x, c=h), plain(x * scale[:, :, None, None]))


def test_discriminator_reads_the_patch_and_the_camera():
    cfg = {'patch': {'patch_params_cond': True}, 'num_additional_start_blocks': 1, 'camera_cond': True,
           'camera_cond_drop_p': 0.0, 'camera_cond_raw': False, 'hyper_mod': True}
    torch.manual_seed(0)
    D = ne.Discriminator(cfg, c_dim=0, img_resolution=8, img_channels=3, channel_base=128, channel_max=16,
                         mapping_kwargs={}, epilogue_kwargs={'mbstd_group_size': 2})
    assert D.block_resolutions == [16, 8] and D.b16.conv1.down == 1 and D.b8.conv1.down == 2
    img = torch.randn(2, 3, 8, 8)
    c = cameras.epigraf_angles_to_label(angles(2), 12.0)
    whole = {'scales': torch.ones(2, 2), 'offsets': torch.zeros(2, 2)}
    small = {'scales': torch.full((2, 2), 0.25), 'offsets': torch.full((2, 2), 0.5)}
    with torch.no_grad():
        logits = D(img, c, patch_params=whole)
        assert logits.shape == (2, 1) and torch.isfinite(logits).all()
        torch.testing.assert_close(D(img, c), logits)  # no patch = the whole image
        assert not torch.allclose(D(img, c, patch_params=small), logits)
        turned = cameras.epigraf_angles_to_label(angles(2) + torch.tensor([0.5, 0.0, 0.0]), 12.0)
        assert not torch.allclose(D(img, turned, patch_params=whole), logits)
        by_angles = D(img, torch.zeros(2, 0), patch_params=whole, camera_angles=cameras.epigraf_angles_from_label(c))
    torch.testing.assert_close(by_angles, logits)


def test_unsupported_options_are_refused_in_one_sentence():
    for override, words in [({'bg_model': {'type': 'cube'}}, "'cube'"), ({'backbone': 'raw_planes'}, 'backbone'),
                            ({'bg_model': dict(SPHERE_BG, fmm={'enabled': True, 'rank': 3})}, 'fmm')]:
        with pytest.raises(ValueError, match=words):
            tiny_G(**override)
    with pytest.raises(ValueError, match='c_dim'):
        ne.Generator(SPEC_CFG, z_dim=8, c_dim=3, w_dim=8, img_resolution=8, img_channels=3)


def test_pickles_rebuild_without_executing_code():
    import io
    import pickle
    from torch_utils import persistence
    G = tiny_G(camera_cond=True)
    G.synthesis.nerf_noise_std = 0.5
    D = ne.Discriminator({'patch': {'patch_params_cond': True}, 'num_additional_start_blocks': 1, 'camera_cond': False,
                          'camera_cond_drop_p': 0.0, 'hyper_mod': True}, c_dim=0, img_resolution=8, img_channels=3,
                         channel_base=128, channel_max=16, epilogue_kwargs={'mbstd_group_size': 2})
    buffer = io.BytesIO()
    pickle.dump(dict(G=G, D=D), buffer)
    buffer.seek(0)
    loaded = persistence.load(buffer)  # the no-exec loader
    c = cameras.epigraf_angles_to_label(angles(2), 12.0)
    z = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded['G'](z, c, jitter=False, det=True), G(z, c, jitter=False, det=True), rtol=0, atol=0)
        img = torch.randn(2, 3, 8, 8)
        torch.testing.assert_close(loaded['D'](img, c), D(img, c), rtol=0, atol=0)
    assert loaded['G'].synthesis.legacy_rays is True and loaded['G'].mapping.mean_camera_pose.tolist() == pytest.approx([0.1, 1.5, 0])


def test_a_camera_conditioned_discriminator_without_patches_has_its_head():
    # EpiGRAF's training=default (no patches) with camera_cond: the official D keeps cmap_dim 512 without a
    # head mapping and fails; ours gives the camera its head.
    torch.manual_seed(0)
    D = ne.Discriminator({'patch': {'patch_params_cond': False}, 'num_additional_start_blocks': 0, 'camera_cond': True,
                          'camera_cond_drop_p': 0.0, 'hyper_mod': False}, c_dim=0, img_resolution=8, img_channels=3,
                         channel_base=128, channel_max=16, epilogue_kwargs={'mbstd_group_size': 2})
    img = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        a = D(img, cameras.epigraf_angles_to_label(angles(2), 12.0))
        b = D(img, cameras.epigraf_angles_to_label(angles(2) + torch.tensor([0.4, 0.0, 0.0]), 12.0))
    assert a.shape == (2, 1) and not torch.allclose(a, b)


def test_gpc_noise_is_added_to_the_raw_angles():
    torch.manual_seed(0)
    noisy = ne.MappingNetwork(z_dim=8, c_dim=0, w_dim=8, num_ws=2, camera_cond=True, camera_cond_noise_std=0.5,
                              mean_camera_pose=torch.tensor([0.0, 1.5, 0.0])).eval()
    z, a = torch.randn(2, 8), torch.tensor([[0.1, 1.5, 0.0], [0.2, 1.4, 0.0]])
    torch.manual_seed(1)
    got = noisy(z, torch.zeros(2, 0), camera_angles=a)
    torch.manual_seed(1)
    expected = noisy.camera_scalar_enc(ne.normalise_angles(a + torch.randn_like(a) * 0.5))
    noisy.camera_cond_noise_std = 0.0
    torch.testing.assert_close(got, ne.sg2.MappingNetwork.forward(noisy, z, expected))



def test_the_plane_background_equals_the_official_composite():
    G = tiny_G(bg_model={'type': 'plane'})
    assert G.synthesis.tri_plane_decoder.out_channels == 3 * 4 + 3
    a = angles(2, seed=4)
    ws = G.mapping(torch.randn(2, 8), torch.zeros(2, 0))
    c = cameras.epigraf_angles_to_label(a, 12.0)
    torch.testing.assert_close(ours(G, ws, c, resolution=8), official_render(G, ws, a, 8), rtol=0, atol=2e-5)
    patch = (torch.tensor([[0.5, 0.5], [0.25, 0.25]]), torch.tensor([[0.1, 0.4], [0.7, 0.0]]))
    torch.testing.assert_close(ours(G, ws, c, patch=patch), official_render(G, ws, a, 4, patch=patch), rtol=0, atol=2e-5)
    alone = ours(G, ws, c, resolution=8, bg_only=True)
    without = ours(G, ws, c, resolution=8, ignore_bg=True)
    assert alone.shape == without.shape == (2, 3, 8, 8) and not torch.allclose(alone, without)
    with pytest.raises(ValueError, match='bg_only'):
        tiny_G()(torch.randn(1, 8), c[:1], bg_only=True)


# ----------------------------------------------------------------------------------------------
# The sphere background (bg_model.type 'sphere'): NeRF++'s inverted sphere, INR-GAN's network. Its official
# function is pinned by tests/training/test_epigraf_official_parity.py; here its geometry and contract.

SPHERE_BG = dict(type='sphere', output_channels=4, coord_dim=4, num_blocks=2, cbase=32768, cmax=16, num_fp16_blocks=0,
                 fmm={'enabled': False, 'rank': 3, 'activation': 'demod'}, posenc_period_len=64.0, num_steps=8, start=1.0)


def test_inverted_sphere_points_are_the_ray_points_at_radius_one_over_the_disparity():
    gen = np.random.default_rng(0)
    n, r = 2, 64
    origins = gen.normal(size=(n, r, 3))
    origins *= (gen.uniform(0.0, 1.0, size=(n, r, 1)) ** (1 / 3)) / np.linalg.norm(origins, axis=-1, keepdims=True)
    origins[0, 0] = [0.0, 0.0, 1.0]  # a camera on the sphere whose ray passes through the centre
    dirs = gen.normal(size=(n, r, 3)) * gen.uniform(0.5, 2.0, size=(n, r, 1))
    dirs[0, 0] = [0.0, 0.0, -3.0]
    s = np.concatenate([np.linspace(1.0, 0.0, 8)[None, None].repeat(n, 0).repeat(r, 1)[:, :, :7],
                        gen.uniform(0.01, 1.0, size=(n, r, 1))], axis=2)  # [N, R, 8]
    got = ne.inverted_sphere_points(*(torch.tensor(x, dtype=torch.float32) for x in (origins, dirs, s))).double().numpy()
    # Oracle: the far root t of |o + t d| = 1 / s in float64, and the direction of o + t d.
    d = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    b = (origins * d).sum(-1, keepdims=True)                                   # [N, R, 1]
    c = (origins ** 2).sum(-1, keepdims=True)
    radius = 1 / np.maximum(s, 1e-300)
    t = -b + np.sqrt(b ** 2 - c + radius ** 2)                                 # [N, R, S]
    x = origins[:, :, None] + t[..., None] * d[:, :, None]
    expected = x / np.linalg.norm(x, axis=-1, keepdims=True)
    zero = s == 0  # the linspace's last disparity
    expected[zero] = np.broadcast_to(d[:, :, None], expected.shape)[zero]      # the point at infinity: the ray's direction
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[..., :3], expected, atol=2e-6)
    np.testing.assert_allclose(got[..., 3], s, atol=1e-7)
    np.testing.assert_allclose(got[0, 0, :, :3], [[0.0, 0.0, -1.0]] * 8, atol=1e-6)


def test_the_sphere_background_is_the_cameras_sphere_at_any_radius():
    # EpiGRAF's cameras sit on its unit background sphere; cameras scaled to radius 2.7 (with the rest of the
    # scene) see the same background.
    unit = tiny_G(bg_model=SPHERE_BG)
    assert unit.num_ws == unit.synthesis.tri_plane_decoder.num_ws + 4
    scaled_cfg = copy.deepcopy(SPEC_CFG)
    scaled_cfg['dataset'] = copy.deepcopy(SPEC_CFG['dataset'])
    scaled_cfg['dataset']['camera'] = dict(SPEC_CFG['dataset']['camera'], radius=2.7)
    scaled = tiny_G(bg_model=SPHERE_BG, dataset=scaled_cfg['dataset'])
    scaled.load_state_dict(unit.state_dict())
    ws = unit.mapping(torch.randn(2, 8), torch.zeros(2, 0))
    a = angles(2, seed=5)
    with torch.no_grad():
        near = unit.synthesis(ws, c=cameras.epigraf_angles_to_label(a, 12.0, radius=1.0), bg_only=True)
        far = scaled.synthesis(ws, c=cameras.epigraf_angles_to_label(a, 12.0, radius=2.7), bg_only=True)
        composite = unit.synthesis(ws, c=cameras.epigraf_angles_to_label(a, 12.0, radius=1.0), jitter=False, det=True)
        foreground = unit.synthesis(ws, c=cameras.epigraf_angles_to_label(a, 12.0, radius=1.0), jitter=False, det=True,
                                    ignore_bg=True)
    assert near.shape == (2, 3, 8, 8) and near.std() > 1e-3
    torch.testing.assert_close(far, near, rtol=0, atol=1e-5)
    assert not torch.allclose(composite, foreground)


def test_the_sphere_background_trains_and_pickles_without_code():
    import io
    import pickle
    from torch_utils import persistence
    G = tiny_G(bg_model=SPHERE_BG).train()
    c = cameras.epigraf_angles_to_label(angles(2), 12.0)
    img = G(torch.randn(2, 8), c)
    img.square().mean().backward()
    grads = [p.grad for name, p in G.named_parameters() if name.startswith('synthesis.bg_model.') and p.grad is not None]
    assert len(grads) == 20 and all(torch.isfinite(g).all() for g in grads) and any(g.abs().max() > 0 for g in grads)
    G.eval()
    loaded = persistence.load(io.BytesIO(pickle.dumps(G)))
    z = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, c, jitter=False, det=True), G(z, c, jitter=False, det=True), rtol=0, atol=0)
