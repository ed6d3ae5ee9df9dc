"""Synthetic shapes: silhouettes, projections and depths against closed forms, mirror consistency,
determinism and the dataset contract."""

import math

import numpy as np
import pytest
import torch

from training import cameras
from training import synthetic_shapes as shapes

FOCAL = cameras.FFHQ_FOCAL


def _frontal(distance):
    """cam2world [1, 4, 4] at (0, 0, distance) looking at the origin (EG3D's frontal FFHQ label)."""
    return torch.tensor([[[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, distance], [0, 0, 0, 1]]])


def _pixel_centres(res):
    """Normalised image coordinates (u, v) of the pixel centres, each [res, res]."""
    v, u = torch.meshgrid((torch.arange(res) + 0.5) / res, (torch.arange(res) + 0.5) / res, indexing='ij')
    return u.double(), v.double()


def _project(cam2world, point):
    """Pixel coordinates (x, y) of a world point, x along columns, in the units of pixel centres j + 0.5."""
    world2cam = torch.linalg.inv(cam2world[0].double())
    p = world2cam[:3, :3] @ torch.tensor(point, dtype=torch.float64) + world2cam[:3, 3]
    return FOCAL * p[0] / p[2] + 0.5, FOCAL * p[1] / p[2] + 0.5


def _mask_centroid(mask, res):
    ys, xs = torch.meshgrid(torch.arange(res) + 0.5, torch.arange(res) + 0.5, indexing='ij')
    area = mask.sum()
    return float((mask * xs).sum() / area), float((mask * ys).sum() / area)


def _render_mask(scene, cam2world, res):
    _, depth, mask = shapes.render(scene, cam2world, shapes.default_intrinsics(1), res, res, return_depth=True)
    return depth[0, 0].double(), mask[0, 0].double()

# ----------------------------------------------------------------------------------------------
# Geometry oracles.


@pytest.mark.parametrize('pose', ['frontal', 'random'])
def test_sphere_silhouette_is_the_closed_form_disc(pose):
    res, r, d = 96, 0.25, 2.7
    if pose == 'frontal':
        cam2world = _frontal(d)
    else:  # any camera looking at the sphere's centre sees the same disc about the principal point
        gen = torch.Generator().manual_seed(1)
        cam2world = cameras.GaussianCameraPoseSampler.sample(1.2, 1.9, 0.5, 0.3, radius=d, generator=gen)
    scene = shapes.make_scene([dict(kind='sphere', center=(0, 0, 0), size=r)])
    _, mask = _render_mask(scene, cam2world, res)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}

    # The silhouette cone has half-angle asin(r / d): radius f tan(asin(r / d)) in normalised units.
    radius = FOCAL * math.tan(math.asin(r / d))
    u, v = _pixel_centres(res)
    dist = ((u - 0.5) ** 2 + (v - 0.5) ** 2).sqrt()
    # Every pixel centre is classified exactly, except within float rounding of the circle itself.
    clear = (dist - radius).abs() > 1e-4
    assert torch.equal(mask[clear], (dist < radius).double()[clear])
    # Area: pixel-centre sampling of a disc of radius R pixels errs by well under the half-pixel band 2 pi R * 0.5.
    radius_px = radius * res
    assert abs(float(mask.sum()) - math.pi * radius_px ** 2) < math.pi * radius_px * 0.5
    cx, cy = _mask_centroid(mask, res)
    assert abs(cx - res / 2) < 0.05 and abs(cy - res / 2) < 0.05  # symmetric sampling grid: centred exactly


def test_box_silhouette_is_its_front_face_rectangle():
    res, d, half = 80, 2.7, (0.2, 0.12, 0.1)
    scene = shapes.make_scene([dict(kind='box', center=(0, 0, 0), size=half)])
    depth, mask = _render_mask(scene, _frontal(d), res)
    u, v = _pixel_centres(res)
    # From a frontal camera on the z axis the outline is the front face z = hz, at distance d - hz.
    wx, wy = FOCAL * half[0] / (d - half[2]), FOCAL * half[1] / (d - half[2])
    clear = (((u - 0.5).abs() - wx).abs() > 1e-4) & (((v - 0.5).abs() - wy).abs() > 1e-4)
    inside = ((u - 0.5).abs() < wx) & ((v - 0.5).abs() < wy)
    assert torch.equal(mask[clear], inside.double()[clear])
    # Depth is the ray distance to the plane z = hz: (d - hz) / cos(angle to the axis).
    z_dist = (d - half[2]) * (1 + ((u - 0.5) ** 2 + (v - 0.5) ** 2) / FOCAL ** 2).sqrt()
    assert torch.allclose(depth[inside & clear], z_dist[inside & clear], atol=1e-4)


def test_off_centre_sphere_lands_where_its_centre_projects():
    res, r, center = 128, 0.06, (0.12, -0.07, 0.09)
    scene = shapes.make_scene([dict(kind='sphere', center=center, size=r)])
    gen = torch.Generator().manual_seed(5)
    cam2world_all, _ = shapes.random_cameras(4, gen)
    for i in range(4):
        cam2world = cam2world_all[i:i + 1]
        _, mask = _render_mask(scene, cam2world, res)
        x, y = _project(cam2world, center)
        cx, cy = _mask_centroid(mask, res)
        # A disc of radius ~12 px sampled at pixel centres has its centroid within ~0.1 px; the
        # perspective shift of an off-axis sphere's silhouette centre is ~(r/d)^2 tan(angle) ~ 1e-3 px.
        assert abs(cx - float(x) * res) < 0.2 and abs(cy - float(y) * res) < 0.2
        # Near the axis the outline is close to the disc of the on-axis formula at the true distance
        # (the off-axis ellipse elongates by ~1/cos^2 of ~2 degrees, 0.1%); same half-pixel band as above.
        distance = float((cam2world[0, :3, 3] - torch.tensor(center)).norm())
        radius_px = FOCAL * math.tan(math.asin(r / distance)) * res
        assert abs(float(mask.sum()) - math.pi * radius_px ** 2) < math.pi * radius_px * 0.5


def _exit_distance(kind, size, direction):
    """Distance from a primitive's centre to its surface along a unit object-space `direction`."""
    f = direction.abs()
    if kind in ('sphere', 'ellipsoid'):
        return float(1 / ((f / size) ** 2).sum().sqrt())
    if kind == 'box':
        return float((size / f).min())
    radial = float((f[0] ** 2 + f[2] ** 2).sqrt())  # round cylinder: radius size[0], half height size[1]
    return min(float(size[1] / f[1]), float(size[0]) / radial)


@pytest.mark.parametrize('kind, size', [('sphere', (0.11, 0.11, 0.11)), ('box', (0.12, 0.07, 0.09)),
                                        ('cylinder', (0.08, 0.12, 0.08)), ('ellipsoid', (0.13, 0.06, 0.09))])
def test_depth_through_an_off_centre_primitive_matches_the_closed_form(kind, size):
    res, center = 65, torch.tensor([0.1, 0.05, -0.08])  # odd: the centre pixel's ray is the optical axis
    rotation = shapes._random_rotation(torch.tensor([0.3, 0.6, 0.2]))
    scene = shapes.make_scene([dict(kind=kind, center=center, size=size, rotation=rotation)])
    gen = torch.Generator().manual_seed(2)
    cam2world = cameras.LookAtPoseSampler.sample(1.3, 1.7, tuple(center.tolist()), 0.2, 0.1, radius=2.7, generator=gen)
    depth, mask = _render_mask(scene, cam2world, res)
    eye, forward = cam2world[0, :3, 3], cam2world[0, :3, 2]
    expected = float((eye - center).norm()) - _exit_distance(kind, torch.tensor(size), rotation.T @ forward)
    assert mask[res // 2, res // 2] == 1
    assert abs(float(depth[res // 2, res // 2]) - expected) < 1e-4
    x, y = _project(cam2world, center.tolist())
    assert abs(float(x) - 0.5) < 1e-5 and abs(float(y) - 0.5) < 1e-5

@pytest.mark.parametrize('glow_side', [1.0, -1.0])
def test_background_is_the_closed_form_sky_with_its_glow_towards_world_minus_x(glow_side):
    # An empty view (the only primitive is far above the frame) from a camera yawed 0.4 towards +x
    # and pitched: every pixel is background, recomputed here in float64 from the pixel-centre rays.
    res = 16
    labels = cameras.lookat_labels(torch.tensor([0.4]), torch.tensor([-0.1]), radius=2.7, pivot=(0, 0, 0), focal=FOCAL)
    cam2world, intrinsics = cameras.unpack(labels)
    scene = shapes.make_scene([dict(kind='sphere', center=(0, 5, 0), size=0.1)], sky_color=(0.4, 0.6, 0.9),
                              ground_color=(0.3, 0.2, 0.1))
    if glow_side < 0:
        scene = shapes.mirror_x(scene)
    image = shapes.render(scene, cam2world, intrinsics, res, res)[0].double()

    u, v = _pixel_centres(res)
    rot = cam2world[0, :3, :3].double()
    d = torch.stack([(u - 0.5) / FOCAL, (v - 0.5) / FOCAL, torch.ones_like(u)], dim=-1) @ rot.T
    d = d / d.norm(dim=-1, keepdim=True)
    up = (0.5 + 3 * d[..., 1]).clamp(0, 1)
    azimuth = torch.atan2(glow_side * d[..., 0], -d[..., 2])
    glow = shapes.GLOW_STRENGTH * (0.5 - azimuth / (2 * shapes.GLOW_HALF_RANGE)).clamp(0, 1)
    sky = torch.tensor([0.4, 0.6, 0.9]).double() * (1 - glow[..., None]) + torch.tensor(shapes.GLOW_COLOR).double() * glow[..., None]
    expected = torch.tensor([0.3, 0.2, 0.1]).double() * (1 - up[..., None]) + sky * up[..., None]
    torch.testing.assert_close(image, expected.permute(2, 0, 1), atol=2e-5, rtol=0)
    # The camera sits at world +x looking towards -x: its sky glows when the world is unmirrored.
    assert float(glow.mean()) > 0.6 if glow_side > 0 else float(glow.mean()) < 0.25


def test_background_alone_tells_the_camera_yaw():
    # The same empty scene from yaws -0.5 ... 0.5: the mean red-minus-blue of the sky rises strictly.
    yaws = torch.linspace(-0.5, 0.5, 6)
    labels = cameras.lookat_labels(yaws, torch.zeros(6), radius=2.7, pivot=(0, 0, 0), focal=FOCAL)
    scene = shapes.make_scene([dict(kind='sphere', center=(0, 5, 0), size=0.1)])
    images = shapes.render(scene, *cameras.unpack(labels), 12, 12)
    warmth = (images[:, 0] - images[:, 2]).mean(dim=(1, 2))
    assert bool((warmth[1:] > warmth[:-1] + 0.02).all()), warmth

# ----------------------------------------------------------------------------------------------
# Multi-view consistency.


def test_mirrored_scene_from_the_yaw_flipped_camera_is_the_flipped_image():
    gen = torch.Generator().manual_seed(3)
    scenes = shapes.random_scenes(6, gen)
    cam2world, intrinsics = shapes.random_cameras(6, gen)
    images, depth, _ = shapes.render(scenes, cam2world, intrinsics, 48, 48, return_depth=True)
    mirrored, mirrored_depth, _ = shapes.render(shapes.mirror_x(scenes), cameras.flip_yaw(cam2world), intrinsics, 48, 48,
                                                return_depth=True)
    diff = (images - mirrored.flip(-1)).abs().amax(dim=1)
    # Exact up to float rounding: only pixels whose centre sits on an edge or a pattern boundary may differ.
    assert float((diff > 1e-3).float().mean()) < 0.005
    assert float(((depth - mirrored_depth.flip(-1)).abs() > 1e-3).float().mean()) < 0.005


def test_render_views_draws_one_scene_from_every_camera():
    scene = shapes.random_scenes(1, torch.Generator().manual_seed(4))
    cam2world, _ = shapes.random_cameras(3, torch.Generator().manual_seed(4))
    views = shapes.render_views(scene, cam2world, height=24, width=24)
    assert views.shape == (3, 3, 24, 24)
    each = torch.cat([shapes.render(scene, cam2world[i:i + 1], shapes.default_intrinsics(1), 24, 24) for i in range(3)])
    assert torch.allclose(views, each, atol=1e-6)
    assert not torch.allclose(views[0], views[1])
    with pytest.raises(ValueError, match='one scene'):
        shapes.render_views(shapes.random_scenes(2), cam2world)

# ----------------------------------------------------------------------------------------------
# Rendering and dataset contract.


def test_render_returns_images_by_default_and_depth_on_request():
    gen = torch.Generator().manual_seed(6)
    scenes = shapes.random_scenes(3, gen)
    cam2world, intrinsics = shapes.random_cameras(3, gen)
    images = shapes.render(scenes, cam2world, intrinsics, 20, 28, supersample=2)
    assert isinstance(images, torch.Tensor) and images.shape == (3, 3, 20, 28) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    images2, depth, mask = shapes.render(scenes, cam2world, intrinsics, 20, 28, supersample=2, return_depth=True)
    assert torch.equal(images, images2) and depth.shape == mask.shape == (3, 1, 20, 28)
    assert mask.min() >= 0 and mask.max() <= 1 and bool((mask > 0).any()) and bool((mask == 0).any())
    hit = depth[mask > 0]  # the scene lies within SCENE_RADIUS-ish of the origin, the camera at 2.7
    assert hit.min() > 2.7 - 0.6 and hit.max() < 2.7 + 0.6 and bool((depth[mask == 0] == 0).all())


def test_render_dataset_is_deterministic_and_independent_of_batch_size(monkeypatch):
    def collect(seed, batch_size):
        return list(shapes.render_dataset(7, 24, seed=seed, batch_size=batch_size))

    a, b, c = collect(3, 4), collect(3, 4), collect(3, 7)
    monkeypatch.setattr(shapes, '_MAX_RAYS', 3 * 24 * 24 * 4)  # render in chunks of 3 images
    d = collect(3, 7)
    for (img_a, lab_a), (img_b, lab_b), (img_c, lab_c), (img_d, lab_d) in zip(a, b, c, d):
        assert img_a.tobytes() == img_b.tobytes() == img_c.tobytes() == img_d.tobytes()
        assert lab_a.tobytes() == lab_b.tobytes() == lab_c.tobytes() == lab_d.tobytes()
    assert len(a) == len(d) == 7
    other = collect(4, 4)
    assert all(img.tobytes() != img_o.tobytes() for (img, _), (img_o, _) in zip(a, other))
    assert len({img.tobytes() for img, _ in a}) == 7


def test_render_dataset_images_and_labels_follow_the_contract():
    items = list(shapes.render_dataset(10, 32, seed=0, batch_size=5))
    assert len(items) == 10
    for image, label in items:
        assert isinstance(image, np.ndarray) and image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert isinstance(label, np.ndarray) and label.shape == (25,) and label.dtype == np.float32
    labels = torch.from_numpy(np.stack([label for _, label in items]))
    cameras.validate(labels)
    cam2world, intrinsics = cameras.unpack(labels)
    eye = cam2world[:, :3, 3]
    assert torch.allclose(eye.norm(dim=1), torch.full([10], 2.7), atol=1e-4)
    assert torch.allclose(cam2world[:, :3, 2], -eye / 2.7, atol=1e-4)  # looking at the origin
    assert torch.allclose(intrinsics, shapes.default_intrinsics(10))
    assert float(eye[:, 2].min()) > 0  # FFHQ-like: the cameras stay on the front (+z) side
    images = np.stack([image for image, _ in items])
    assert images.std() > 10  # not blank


def test_mirror_x_is_an_involution_and_keeps_rotations_proper():
    scenes = shapes.random_scenes(4, torch.Generator().manual_seed(7))
    twice = shapes.mirror_x(shapes.mirror_x(scenes))
    for name in ('center', 'rotation', 'pattern_sign', 'light_dir', 'glow_side'):
        assert torch.equal(getattr(twice, name), getattr(scenes, name))
    det = torch.linalg.det(shapes.mirror_x(scenes).rotation)
    assert torch.allclose(det, torch.ones_like(det), atol=1e-5)


def test_image_seeds_are_distinct_per_index():
    seeds = [shapes.image_seed(0, i) for i in range(20000)]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2 ** 32 for s in seeds)


def test_measure_rate_is_images_per_second_of_the_timed_run(monkeypatch):
    # A fake clock that advances 2 s per reading: the timed run spans exactly 2 s.
    ticks = iter(range(0, 100, 2))
    monkeypatch.setattr(shapes.time, 'perf_counter', lambda: next(ticks))
    rendered = []
    original = shapes.render_dataset
    monkeypatch.setattr(shapes, 'render_dataset', lambda *a, **k: (rendered.append(1) or x for x in original(*a, **k)))
    assert shapes.measure_rate(resolution=16, num_images=8, batch_size=4, supersample=1) == 4.0
    assert len(rendered) == 4 + 8  # the warm-up batch, then the timed images
