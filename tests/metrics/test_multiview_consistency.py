"""metrics/multiview_consistency.py against closed forms and independent oracles (small images, seconds)."""

import math

import pytest
import torch

from metrics import multiview_consistency as mv
from tests import tiny_networks
from training import cameras, synthetic_shapes


def _label(cam2world, intrinsics, dtype=torch.float64):
    return cameras.pack(cam2world, intrinsics).to(dtype)


def test_projection_matches_a_hand_computed_pinhole():
    # Camera at (0, 0, -3) with the identity rotation (looking along world +z), skewed intrinsics.
    cam2world = torch.eye(4)
    cam2world[2, 3] = -3
    k = torch.tensor([[2.0, 0.1, 0.5], [0, 2.5, 0.4], [0, 0, 1]])
    c = _label(cam2world, k)
    uv, z, distance = mv.project(torch.tensor([[[0.3, -0.2, 1.0]]], dtype=torch.float64), c)
    # local (0.3, -0.2, 4): u = (2 * 0.3 + 0.1 * -0.2) / 4 + 0.5, v = 2.5 * -0.2 / 4 + 0.4
    assert torch.allclose(uv[0, 0], torch.tensor([0.645, 0.275], dtype=torch.float64), atol=1e-12)
    assert float(z[0, 0]) == pytest.approx(4.0)
    assert float(distance[0, 0]) == pytest.approx(math.sqrt(0.09 + 0.04 + 16))


def test_unprojected_pixels_project_back_onto_their_centres_for_ray_and_z_depth():
    c = cameras.lookat_labels([0.3], [-0.1]).double()
    res = 5
    depth = 2 + torch.rand([1, 1, res, res], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    uv, _, distance = mv.project(mv.unproject(depth, c), c)
    steps = (torch.arange(res, dtype=torch.float64) + 0.5) / res
    v, u = torch.meshgrid(steps, steps, indexing='ij')
    assert torch.allclose(uv[0], torch.stack([u.reshape(-1), v.reshape(-1)], -1), atol=1e-10)
    assert torch.allclose(distance[0], depth.reshape(-1), atol=1e-10)  # ray depth = distance from the centre
    points_z = mv.unproject(depth, c, depth_kind='z')
    _, z, _ = mv.project(points_z, c)
    assert torch.allclose(z[0], depth.reshape(-1), atol=1e-10)


# A textured plane: world z = 0, colours a smooth function of the world point; cameras on the +z side.

def _plane_view(c, res, texture=True):
    from training.rendering import rays
    origins, dirs = rays.sample_rays_from_labels(c, res)
    t = -origins[..., 2] / dirs[..., 2]                               # ray distance to z = 0
    p = origins + t.unsqueeze(-1) * dirs
    x, y = p[..., 0], p[..., 1]
    rgb = torch.stack([0.5 + 0.4 * torch.sin(9 * x) * torch.cos(7 * y), 0.5 + 0.4 * torch.cos(11 * x + 3 * y),
                       0.5 + 0.3 * torch.sin(5 * y - 4 * x)], dim=1)   # [N, 3, R]
    n = c.shape[0]
    return rgb.reshape(n, 3, res, res) * 2 - 1, t.reshape(n, 1, res, res)


def _plane_cameras(yaw_a=-0.15, yaw_b=0.15):
    return (cameras.lookat_labels([yaw_a], [0.05], pivot=(0, 0, 0)).double(),
            cameras.lookat_labels([yaw_b], [-0.05], pivot=(0, 0, 0)).double())


def test_a_textured_plane_warps_with_near_zero_error_and_a_wrong_depth_does_not():
    c_a, c_b = _plane_cameras()
    res = 48
    image_a, depth_a = _plane_view(c_a, res)
    image_b, depth_b = _plane_view(c_b, res)
    right = mv.warp_error(image_a, depth_a, c_a, image_b, c_b, depth_b=depth_b)
    wrong = mv.warp_error(image_a, depth_a * 1.2, c_a, image_b, c_b)  # no occlusion test: compare the colours
    assert float(right['error']) < 0.6                                 # bilinear interpolation of a smooth texture
    assert float(right['valid_fraction']) > 0.8                        # a 0.3 rad turn keeps most of the frame
    assert float(wrong['error']) > 10 * float(right['error']) and float(wrong['error']) > 5
    assert float(right['unwarped_error']) > 10 * float(right['error'])  # the views did move
    # z-depth gives the same measure once declared.
    from training.rendering import rays
    _, dirs = rays.sample_rays_from_labels(c_a, res)
    z_a = depth_a * (dirs @ c_a[:, [2, 6, 10]].unsqueeze(-1)).reshape(1, 1, res, res)
    as_z = mv.warp_error(image_a, z_a, c_a, image_b, c_b, depth_b=depth_b, depth_kind='z')
    assert torch.allclose(as_z['error'], right['error'], atol=1e-6)


def test_the_depth_test_rejects_occluded_pixels():
    c_a, c_b = _plane_cameras()
    image_a, depth_a = _plane_view(c_a, 16)
    image_b, depth_b = _plane_view(c_b, 16)
    occluded = mv.warp_error(image_a, depth_a, c_a, image_b, c_b, depth_b=depth_b * 0.9)  # something in front in B
    assert float(occluded['valid_fraction']) == 0 and math.isnan(float(occluded['error']))
    within = mv.warp_error(image_a, depth_a, c_a, image_b, c_b, depth_b=depth_b * 0.99)  # inside the 2% tolerance
    assert float(within['valid_fraction']) > 0.8


def test_the_identity_warp_gives_zero_with_every_pixel_valid():
    c_a, _ = _plane_cameras()
    image, depth = _plane_view(c_a, 12)
    result = mv.warp_error(image, depth, c_a, image, c_a, depth_b=depth)
    assert float(result['error']) < 1e-6
    assert float(result['valid_fraction']) == 1.0


def test_pixels_leaving_the_frame_are_invalid():
    # B is A moved sideways by half the frame's width on the plane (radius 2.7 * 0.5 / focal): the
    # columns of A's right half land beyond B's frame, 16 of 32 columns.
    c_a = cameras.lookat_labels([0.0], [0.0], pivot=(0, 0, 0)).double()
    c_b = c_a.clone()
    c_b[0, 3] += cameras.FFHQ_RADIUS * 0.5 / cameras.FFHQ_FOCAL
    image_a, depth_a = _plane_view(c_a, 32)
    image_b, _ = _plane_view(c_b, 32)
    result = mv.warp_error(image_a, depth_a, c_a, image_b, c_b)
    assert float(result['valid_fraction']) == pytest.approx(0.5, abs=1 / 32)
    assert float(result['error']) < 0.6


def _sphere_scene():
    return synthetic_shapes.make_scene([dict(kind='sphere', center=(0, 0, 0), size=0.25, pattern='checker', period=0.12,
                                             color=(0.9, 0.6, 0.2), color2=(0.1, 0.3, 0.7))], specular=0.0)


def test_the_renderer_with_its_own_depth_is_consistent_and_another_scene_is_not():
    c_a = cameras.lookat_labels([-0.15], [0.0], pivot=(0, 0, 0))
    c_b = cameras.lookat_labels([0.15], [0.0], pivot=(0, 0, 0))
    scene = _sphere_scene()
    right = mv.consistency_of_renderer(scene, c_a, c_b, 32)
    other = synthetic_shapes.make_scene([dict(kind='box', center=(0.05, 0, 0), size=(0.2, 0.15, 0.22),
                                              color=(0.2, 0.8, 0.3))], specular=0.0)
    mismatched = mv.consistency_of_renderer(scene, c_a, c_b, 32, scene_b=other)
    assert float(right['valid_fraction']) > 0.15
    assert float(mismatched['error']) > 4 * float(right['error'])
    # The renderer's depth is the ray distance (its docstring): scaling it by 1.2 breaks the warp.
    cam_a, k_a = cameras.unpack(c_a)
    cam_b, k_b = cameras.unpack(c_b)
    image_a, depth_a, mask_a = synthetic_shapes.render(scene, cam_a, k_a, 32, 32, return_depth=True)
    image_b = synthetic_shapes.render(scene, cam_b, k_b, 32, 32)
    wrong = mv.warp_error(image_a, depth_a * 1.2, c_a, image_b, c_b, value_range=(0, 1), mask_a=mask_a)
    assert float(wrong['error']) > 4 * float(right['error'])


def test_the_generator_driver_compares_the_colour_output_at_the_depth_resolution():
    G = tiny_networks.triplane_generator()
    G.rendering_kwargs['jitter'] = True  # the driver must switch it off on its own copy
    z = torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(0))
    c_a = cameras.lookat_labels([-0.1, 0.2], [0.0, 0.1], pivot=(0, 0, 0))
    c_b = cameras.lookat_labels([0.2, -0.1], [0.0, 0.1], pivot=(0, 0, 0))
    first = mv.consistency_of_generator(G, z, c_a, c_b)
    again = mv.consistency_of_generator(G, z, c_a, c_b, batch=1)
    assert (first['color_mode'], first['depth_mode']) == ('image_raw', 'image_depth')
    assert torch.isfinite(first['error']).all() and (first['valid_fraction'] > 0).all()
    assert torch.allclose(first['error'], again['error'], atol=1e-4)  # deterministic, batch-independent
    assert G.rendering_kwargs['jitter'] is True
    same = mv.consistency_of_generator(G, z, c_a, c_a)
    assert float(same['error'].max()) < 1e-2 and bool((same['valid_fraction'] == 1).all())


def test_choose_modes_is_generic_and_networks_without_depth_are_refused():
    class Fake:
        image_modes = ('image', 'image_raw', 'image_depth')
    outputs = {'image': torch.zeros(1, 3, 8, 8), 'image_raw': torch.zeros(1, 3, 8, 8), 'image_depth': torch.zeros(1, 1, 8, 8)}
    assert mv.choose_modes(Fake(), outputs) == ('image', 'image_depth')  # the first colour output of the depth's size
    outputs['image'] = torch.zeros(1, 3, 16, 16)
    assert mv.choose_modes(Fake(), outputs) == ('image_raw', 'image_depth')
    with pytest.raises(ValueError, match='is \\[16, 16\\]'):
        mv.choose_modes(Fake(), outputs, color_mode='image')
    G = tiny_networks.camera_generator()
    with pytest.raises(ValueError, match='declares no depth output'):
        mv.consistency_of_generator(G, torch.randn([1, G.z_dim]), cameras.lookat_labels([0], [0]),
                                    cameras.lookat_labels([0.2], [0]))


def test_background_at_infinity_follows_the_rotation_alone():
    # B turns in place by 0.04 rad about world y (same centre): a sky that depends only on the ray
    # direction warps onto itself; the camera's translation plays no part at infinity.
    from training.rendering import rays
    c_a = cameras.lookat_labels([0.0], [0.0], pivot=(0, 0, 0)).double()
    angle = 0.04
    turn = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]],
                        dtype=torch.float64)
    c_b = c_a.clone()
    c_b[0, :16] = torch.cat([torch.cat([turn @ c_a[0, :16].reshape(4, 4)[:3, :3], c_a[0, :16].reshape(4, 4)[:3, 3:]], 1),
                             c_a[0, :16].reshape(4, 4)[3:]]).reshape(-1)

    def sky(c, res):
        _, dirs = rays.sample_rays_from_labels(c, res)
        rgb = torch.stack([torch.sin(20 * dirs[..., 0]), torch.cos(15 * dirs[..., 1]), dirs[..., 0] * dirs[..., 1] * 30], 1)
        return rgb.reshape(1, 3, res, res).clamp(-1, 1)

    res = 32
    no_depth = torch.zeros([1, 1, res, res], dtype=torch.float64)
    result = mv.warp_error(sky(c_a, res), no_depth, c_a, sky(c_b, res), c_b, depth_b=no_depth, infinite_background=True)
    expected = 1 - angle / (2 * math.atan(0.5 / cameras.FFHQ_FOCAL))  # the columns that stay in B's frame
    assert float(result['valid_fraction']) == pytest.approx(expected, abs=2 / res)
    assert float(result['error']) < 1.0 < float(result['unwarped_error'])
    skipped = mv.warp_error(sky(c_a, res), no_depth, c_a, sky(c_b, res), c_b)  # without it: no depth, no pixel
    assert float(skipped['valid_fraction']) == 0


def test_the_bench_prints_every_record_for_a_network_pickle(tmp_path, capsys):
    import importlib.util
    import json
    import os
    path = os.path.join(os.path.dirname(__file__), '..', '..', 'bench', 'multiview_consistency.py')
    spec = importlib.util.spec_from_file_location('bench_multiview_consistency', path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    pkl = tiny_networks.save_snapshot(tmp_path / 'g.pkl', tiny_networks.triplane_generator())
    bench.main([f'--network={pkl}', '--pairs=3'])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    subjects = [r.get('subject') for r in records if 'subject' in r]
    assert subjects == ['trained', 'trained_mismatched', 'untrained', 'renderer', 'renderer_mismatched']
    assert records[0]['color_mode'] == 'image_raw' and records[3]['resolution'] == 8
    assert all(0 <= r['valid_fraction'] <= 1 for r in records if 'subject' in r)
