"""Camera labels, pose samplers, intrinsics, rays and Plücker coordinates, against closed forms."""

import math

import numpy as np
import pytest
import torch

from training import cameras

# EG3D's FFHQ label for a frontal image (quoted in eg3d#65): R ~ diag(1, -1, -1), t ~ (0, 0, 2.7).
FRONTAL_C2W = np.array([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.7], [0, 0, 0, 1]], dtype=np.float64)


def _random_poses(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return cameras.LookAtPoseSampler.sample(math.pi / 2, math.pi / 2, (0.1, -0.2, 0.3), horizontal_stddev=0.5,
                                            vertical_stddev=0.3, radius=2.7, batch_size=n, generator=gen)


def test_pack_and_unpack_round_trip():
    c2w = _random_poses(3)
    K = cameras.fov_to_intrinsics(18.837)
    c = cameras.pack(c2w, K)
    assert c.shape == (3, 25) and c.dtype == torch.float32
    c2w_back, K_back = cameras.unpack(c)
    assert torch.equal(c2w_back, c2w) and torch.equal(K_back, K.expand(3, 3, 3))
    # Row-major order, as every consumer splits it: c[:, :16] is cam2world.
    assert torch.equal(c[0, :4], c2w[0, 0]) and torch.equal(c[0, 16:19], K[0])
    cameras.validate(c)


@pytest.mark.parametrize('corrupt, message', [
    (lambda c: c[:, :24], r'25 floats'),
    (lambda c: c.index_fill(1, torch.tensor([5]), float('nan')), 'NaN'),
    (lambda c: c.index_fill(1, torch.tensor([0]), 2.0), 'orthonormal'),
    (lambda c: c * torch.tensor([-1.0] * 12 + [1.0] * 13), 'orthonormal'),  # a reflection: determinant -1
    (lambda c: c.index_fill(1, torch.tensor([12]), 0.5), r'last cam2world row'),
    (lambda c: c.index_fill(1, torch.tensor([16]), -4.0), 'positive focal'),
    (lambda c: c.index_fill(1, torch.tensor([24]), 0.0), r'\(0, 0, 1\)'),
])
def test_validate_names_what_is_wrong(corrupt, message):
    c = cameras.pack(_random_poses(2), cameras.fov_to_intrinsics(30))
    with pytest.raises(ValueError, match=message):
        cameras.validate(corrupt(c.clone()))


def test_frontal_pose_is_eg3d_frontal_label():
    for sample in (lambda: cameras.LookAtPoseSampler.sample(math.pi / 2, math.pi / 2, (0, 0, 0.2), radius=2.7),
                   lambda: cameras.GaussianCameraPoseSampler.sample(math.pi / 2, math.pi / 2, radius=2.7),
                   lambda: cameras.UniformCameraPoseSampler.sample(math.pi / 2, math.pi / 2, radius=2.7)):
        np.testing.assert_allclose(sample()[0].numpy(), FRONTAL_C2W, atol=1e-6)


def test_cameras_sit_on_the_sphere_and_look_at_the_target():
    target = torch.tensor([0.1, -0.2, 0.3])
    c2w = _random_poses(64)
    origins, forward = c2w[:, :3, 3], c2w[:, :3, 2]
    torch.testing.assert_close(origins.norm(dim=1), torch.full([64], 2.7))
    to_target = torch.nn.functional.normalize(target - origins, dim=1)
    torch.testing.assert_close(forward, to_target, atol=1e-6, rtol=0)
    # Level cameras: image x (right) has no world-y component, image y points down (world y-up).
    assert c2w[:, 1, 0].abs().max() < 1e-6
    assert (c2w[:, 1, 1] < 0).all()
    cameras.validate(cameras.pack(c2w, cameras.fov_to_intrinsics(18.837)))


def test_yaw_turns_the_camera_about_the_vertical_axis():
    # The vertical argument is arccos-mapped; yaw theta puts the camera at angle pi - theta from +x in xz.
    c2w = cameras.GaussianCameraPoseSampler.sample(math.pi / 2 + 0.4, math.pi / 2, radius=2.0)
    expected = 2.0 * np.array([math.cos(math.pi / 2 - 0.4), 0, math.sin(math.pi / 2 - 0.4)])
    np.testing.assert_allclose(c2w[0, :3, 3].numpy(), expected, atol=1e-6)
    c2w = cameras.GaussianCameraPoseSampler.sample(math.pi / 2, math.pi / 2 - 0.2, radius=1.0)
    phi = math.acos(1 - 2 * (math.pi / 2 - 0.2) / math.pi)  # about 82.7 degrees, not 78.5
    np.testing.assert_allclose(c2w[0, 1, 3].item(), math.cos(phi), atol=1e-6)
    assert abs(math.degrees(phi) - 82.7) < 0.05


def test_samplers_spread_and_truncation():
    gen = torch.Generator().manual_seed(0)
    c2w = cameras.UniformCameraPoseSampler.sample(math.pi / 2, math.pi / 2, horizontal_stddev=0.3, radius=1.0,
                                                  batch_size=2000, generator=gen)
    yaw = math.pi - torch.atan2(c2w[:, 2, 3], c2w[:, 0, 3])
    assert yaw.min() >= math.pi / 2 - 0.3 - 1e-5 and yaw.max() <= math.pi / 2 + 0.3 + 1e-5
    assert yaw.max() - yaw.min() > 0.55
    c2w = cameras.LookAtPoseSampler.sample(math.pi / 2, math.pi / 2, (0, 0, 0), horizontal_stddev=0.5, radius=1.0,
                                           batch_size=2000, generator=gen, truncation=True)
    yaw = math.pi - torch.atan2(c2w[:, 2, 3], c2w[:, 0, 3])
    # Truncation clamps at 2 std: about 4.6% of the draws land exactly on the bounds.
    assert (yaw - math.pi / 2).abs().max() == pytest.approx(1.0, abs=1e-5)
    a = cameras.GaussianCameraPoseSampler.sample(1.0, 1.2, 0.2, 0.1, batch_size=4, generator=torch.Generator().manual_seed(3))
    b = cameras.GaussianCameraPoseSampler.sample(1.0, 1.2, 0.2, 0.1, batch_size=4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize('fov, focal', [(18.837, 4.2634), (45.0, 1.7071)])
def test_fov_to_intrinsics_is_diagonal_fov(fov, focal):
    K = cameras.fov_to_intrinsics(fov)
    assert abs(K[0, 0].item() - focal) < 2e-3  # EG3D quotes 4.263 and 1.707
    # The image corner (u, v) = (0, 0) lies at half the diagonal FOV from the axis.
    half_diagonal = math.hypot(0.5, 0.5) / K[0, 0].item()
    assert math.degrees(math.atan(half_diagonal)) == pytest.approx(fov / 2, abs=1e-4)
    assert K[0, 2] == 0.5 and K[1, 2] == 0.5 and K[2, 2] == 1


def test_flip_yaw_mirrors_across_x_and_is_an_involution():
    c = cameras.pack(cameras.LookAtPoseSampler.sample(math.pi / 2 + 0.3, math.pi / 2 - 0.1, (0, 0, 0.2),
                                                      radius=2.7), cameras.fov_to_intrinsics(18.837))
    assert torch.equal(cameras.flip_yaw(cameras.flip_yaw(c)), c)
    mirrored = cameras.LookAtPoseSampler.sample(math.pi / 2 - 0.3, math.pi / 2 - 0.1, (0, 0, 0.2), radius=2.7)
    torch.testing.assert_close(cameras.unpack(cameras.flip_yaw(c))[0], mirrored, atol=1e-6, rtol=0)
    c2w = cameras.unpack(c)[0]
    assert torch.equal(cameras.flip_yaw(c2w), cameras.unpack(cameras.flip_yaw(c))[0])
    cameras.validate(cameras.flip_yaw(c))


def test_rays_are_unit_and_the_centre_ray_is_the_forward_axis():
    c2w = _random_poses(3)
    K = cameras.fov_to_intrinsics(30)
    origins, dirs = cameras.get_rays(c2w, K, 5, 7)
    assert origins.shape == dirs.shape == (3, 5, 7, 3)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(3, 5, 7))
    torch.testing.assert_close(dirs[:, 2, 3], c2w[:, :3, 2], atol=1e-6, rtol=0)
    torch.testing.assert_close(origins, c2w[:, None, None, :3, 3].expand(3, 5, 7, 3))


def test_rays_follow_the_pixel_grid_and_fov_geometry():
    fov, size = 40.0, 8
    K = cameras.fov_to_intrinsics(fov)
    f = K[0, 0].item()
    c2w = torch.from_numpy(FRONTAL_C2W).float()
    _, dirs = cameras.get_rays(c2w, K, size, size)
    axis = c2w[:3, 2]
    # Corner pixel centres sit (0.5 - 0.5/size) from the principal point along both axes.
    expected = math.atan(math.sqrt(2) * (0.5 - 0.5 / size) / f)
    for i, j in ((0, 0), (0, size - 1), (size - 1, 0), (size - 1, size - 1)):
        assert math.acos(float(dirs[0, i, j] @ axis)) == pytest.approx(expected, abs=1e-5)
    # Column index grows along camera x (world +x here), row index along camera y (world -y here).
    assert dirs[0, 0, -1, 0] > dirs[0, 0, 0, 0] and dirs[0, -1, 0, 1] < dirs[0, 0, 0, 1]


def test_plucker_moment_is_origin_cross_direction():
    c2w = _random_poses(2)
    origins, dirs = cameras.get_rays(c2w, cameras.fov_to_intrinsics(25), 4, 6)
    p = cameras.plucker(origins, dirs)
    assert p.shape == (2, 4, 6, 6)
    expected = np.cross(origins.double().numpy(), dirs.double().numpy())
    np.testing.assert_allclose(p[..., 3:].numpy(), expected, atol=1e-5)
    assert torch.equal(p[..., :3], dirs)
    assert (p[..., :3] * p[..., 3:]).sum(-1).abs().max() < 1e-5  # moment perpendicular to direction
    # |moment| is the distance from the world origin to the ray's line.
    o, d = origins.double().numpy(), dirs.double().numpy()
    distance = np.linalg.norm(o - (o * d).sum(-1, keepdims=True) * d, axis=-1)
    np.testing.assert_allclose(np.linalg.norm(p[..., 3:].numpy(), axis=-1), distance, atol=1e-5)


def test_plucker_map_layout():
    c = cameras.pack(_random_poses(2), cameras.fov_to_intrinsics(25))
    m = cameras.plucker_map(c, 4, 6)
    origins, dirs = cameras.get_rays(*cameras.unpack(c), 4, 6)
    assert m.shape == (2, 6, 4, 6)
    assert torch.equal(m.permute(0, 2, 3, 1), cameras.plucker(origins, dirs))


def test_legacy_raycond_rays_reproduce_the_official_quirks():
    K = torch.tensor([[cameras.FFHQ_FOCAL, 0, 0.5], [0, cameras.FFHQ_FOCAL, 0.5], [0, 0, 1]])
    c2w = torch.from_numpy(FRONTAL_C2W).float()
    H, W = 4, 6
    _, dirs = cameras.legacy_raycond_rays(c2w, K, H, W)
    # Independent recomputation of the official field: pixel units against normalised K, x-major order.
    K_inv = np.linalg.inv(K.double().numpy())
    R = FRONTAL_C2W[:3, :3]
    flat = []
    for x in range(W):
        for y in range(H):
            d = R @ K_inv @ np.array([x + 0.5, y + 0.5, 1.0])
            flat.append(d / np.linalg.norm(d))
    expected = np.array(flat).reshape(H, W, 3)
    np.testing.assert_allclose(dirs[0].numpy(), expected, atol=1e-6)
    # Pixel [0, 0] gets the optical axis; at 512x512 the far corner is almost 90 degrees off-axis.
    np.testing.assert_allclose(dirs[0, 0, 0].numpy(), FRONTAL_C2W[:3, 2], atol=1e-6)
    _, wide = cameras.legacy_raycond_rays(c2w, K, 512, 512)
    angle = math.degrees(math.acos(float(wide[0, -1, -1] @ c2w[:3, 2])))
    assert 89.0 < angle < 90.0
    # Square maps are the transpose of the flattened pixel order's natural layout.
    _, square = cameras.legacy_raycond_rays(c2w, K, 5, 5)
    assert square[0, 3, 1, 0] != square[0, 1, 3, 0]
    m = cameras.plucker_map(cameras.pack(c2w, K), H, W, legacy=True)
    torch.testing.assert_close(m[0, :3].permute(1, 2, 0), dirs[0])


def test_problems_says_what_is_wrong_with_each_label():
    c = cameras.pack(_random_poses(5), cameras.fov_to_intrinsics(30))
    c[1, 5] = float('inf')
    c[2, :3] = 0  # a singular rotation
    c[3, 22:25] = torch.tensor([0.1, 0.0, 1.0])  # an intrinsics row that is not (0, 0, 1)
    found = cameras.problems(c)
    assert found[0] is None and found[4] is None
    assert 'NaN or infinite' in found[1]
    assert 'not orthonormal' in found[2] and 'its determinant is 0' in found[2]
    assert found[3] == 'the last intrinsics row must be (0, 0, 1), not (0.1, 0, 1)'
    with pytest.raises(ValueError, match=r'^Camera label #1: it contains NaN or infinite values\.$'):
        cameras.validate(c)


# ----------------------------------------------------------------------------------------------
# EpiGRAF's camera_angles (yaw, pitch, roll): zero-centred yaw, pitch from +y, roll ignored.


def _random_epigraf_angles(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    yaw = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi   # (-pi, pi)
    pitch = 0.1 + torch.rand(n, generator=gen, dtype=torch.float64) * (math.pi - 0.2)  # (0.1, pi - 0.1)
    return torch.stack([yaw, pitch, torch.zeros(n, dtype=torch.float64)], dim=-1)


def _wrapped(angle):
    return np.angle(np.exp(1j * np.asarray(angle)))


def test_epigraf_angles_round_trip_through_labels():
    angles = _random_epigraf_angles(256)
    c = cameras.epigraf_angles_to_label(angles, 12)
    assert c.shape == (256, 25)
    cameras.validate(c)
    back = cameras.epigraf_angles_from_label(c).double()
    assert back.shape == (256, 3)
    np.testing.assert_allclose(_wrapped(back[:, 0] - angles[:, 0]), 0, atol=1e-6)
    np.testing.assert_allclose(back[:, 1].numpy(), angles[:, 1].numpy(), atol=1e-6)
    assert torch.equal(back[:, 2], torch.zeros(256, dtype=torch.float64))
    assert back[:, 0].min() >= -math.pi and back[:, 0].max() < math.pi
    # Roll is not used; the radius moves the camera only.
    rolled = angles.clone()
    rolled[:, 2] = 0.3
    assert torch.equal(cameras.epigraf_angles_to_label(rolled, 12), c)
    far = cameras.epigraf_angles_from_label(cameras.epigraf_angles_to_label(angles, 12, radius=2.5)).double()
    np.testing.assert_allclose(_wrapped(far[:, 0] - angles[:, 0]), 0, atol=1e-6)
    with pytest.raises(ValueError, match=r'\[N, 3\]'):
        cameras.epigraf_angles_to_label(angles[:, :2], 12)


def test_epigraf_angles_to_label_against_the_closed_form():
    """An oracle in numpy: the camera at r (-sin p sin y, cos p, sin p cos y) (GRAM's with theta = yaw + pi/2),
    z (forward) to the origin, y (down) = minus world +y made orthogonal to z, x (right) = y cross z."""
    angles = _random_epigraf_angles(16, seed=1)
    angles[:, 2] = 0.005  # about 0, as EpiGRAF's datasets hold it
    fov, radius = 12.0, 1.7
    c = cameras.epigraf_angles_to_label(angles, fov, radius=radius)
    cam2world, intrinsics = cameras.unpack(c)
    for i, (yaw, pitch, _) in enumerate(angles.tolist()):
        theta = yaw + math.pi / 2
        origin = radius * np.array([math.sin(pitch) * math.cos(theta), math.cos(pitch), math.sin(pitch) * math.sin(theta)])
        np.testing.assert_allclose(origin, radius * np.array([-math.sin(pitch) * math.sin(yaw), math.cos(pitch),
                                                              math.sin(pitch) * math.cos(yaw)]), atol=1e-12)
        z = -origin / np.linalg.norm(origin)
        up = np.array([0.0, 1.0, 0.0])
        y = -(up - up.dot(z) * z)
        y /= np.linalg.norm(y)
        x = np.cross(y, z)
        expected = np.eye(4)
        expected[:3, :3] = np.stack([x, y, z], axis=1)
        expected[:3, 3] = origin
        np.testing.assert_allclose(cam2world[i].numpy(), expected, atol=2e-6)
        assert abs(x[1]) < 1e-12  # level: image x has no world-y component
    focal = 1 / (2 * math.tan(math.radians(fov) / 2))  # fov across the image side, as GRAM's
    np.testing.assert_allclose(intrinsics[0].numpy(), [[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], rtol=1e-6)


def test_epigraf_yaw_zero_is_grams_frontal_camera():
    frontal = cameras.epigraf_angles_to_label([[0.0, math.pi / 2, 0.0]], 12)
    gram_frontal = cameras.gram_pose_to_label(torch.tensor([math.pi / 2]), torch.tensor([math.pi / 2]), 12)
    torch.testing.assert_close(frontal, gram_frontal, atol=0, rtol=0)
    # On +z, looking down -z with image y down: cam2world = diag(1, -1, -1) and t = (0, 0, 1).
    expected = np.array([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 1], [0, 0, 0, 1]], dtype=np.float64)
    np.testing.assert_allclose(cameras.unpack(frontal)[0][0].numpy(), expected, atol=1e-6)
    # Everywhere: EpiGRAF (yaw, pitch) is GRAM (phi = pitch, theta = yaw + pi/2), and back.
    angles = _random_epigraf_angles(64, seed=2)
    gram = cameras.gram_pose_to_label(angles[:, 1], angles[:, 0] + math.pi / 2, 12)
    torch.testing.assert_close(cameras.epigraf_angles_to_label(angles, 12), gram, atol=1e-6, rtol=0)
    phi, theta = cameras.gram_pose_from_label(gram)
    back = cameras.epigraf_angles_from_label(gram)
    np.testing.assert_allclose(_wrapped((theta - back[:, 0]).numpy()), math.pi / 2, atol=1e-6)
    assert torch.equal(back[:, 1], phi)
    # A positive yaw moves the camera towards world -x (x = -r sin(pitch) sin(yaw)).
    assert cameras.epigraf_angles_to_label([[0.3, math.pi / 2, 0.0]], 12)[0, 3] < 0


def test_epigraf_mirroring_negates_yaw_like_flip_yaw():
    angles = _random_epigraf_angles(64, seed=3)
    mirrored = angles * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    c = cameras.epigraf_angles_to_label(angles, 12, radius=1.3)
    torch.testing.assert_close(cameras.flip_yaw(c), cameras.epigraf_angles_to_label(mirrored, 12, radius=1.3),
                               atol=1e-6, rtol=0)
    back = cameras.epigraf_angles_from_label(cameras.flip_yaw(c)).double()
    np.testing.assert_allclose(_wrapped(back[:, 0] + angles[:, 0]), 0, atol=1e-6)
    np.testing.assert_allclose(back[:, 1].numpy(), angles[:, 1].numpy(), atol=1e-6)


def test_fov_and_focal_convert_both_ways_over_the_image_diagonal():
    # A diagonal field of view: the half-diagonal of the unit image (sqrt(2) / 2) at the focal distance spans
    # half the angle. EG3D quotes 4.263 for its 18.837 degrees.
    for fov in (1.0, 12.0, 18.837, 60.0, 120.0):
        focal = cameras.fov_to_focal(fov)
        assert math.degrees(2 * math.atan((math.sqrt(2) / 2) / focal)) == pytest.approx(fov, rel=1e-12)
        assert cameras.focal_to_fov(focal) == pytest.approx(fov, rel=1e-12)
    assert cameras.fov_to_focal(18.837) == pytest.approx(4.263, abs=1e-3)
