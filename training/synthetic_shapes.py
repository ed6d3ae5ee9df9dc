"""Synthetic shapes: a procedural multi-view dataset of analytic primitives with exact camera labels.

A scene is 1 to 3 primitives (sphere, box, capped cylinder, ellipsoid) near the world origin, each
with a random pose, size, colour and object-space pattern (plain, stripes or checker), lit by one
directional light plus ambient and a Blinn-Phong highlight, over a sky/ground gradient that depends
only on the world ray direction (so the background is consistent across views too). The sky glows
towards world -x ("a sunset in the west"): its colour blends from the scene's blue-ish sky colour to
a fixed orange with the ray's azimuth, so a single image shows its camera's yaw, not only its pitch.
Without such a world-fixed cue the scenes (which have no front) would not reveal yaw, and neither a
conditional discriminator nor a pose regressor could tell it (`bench/pose_error.py`). Scenes are plain
tensors (`Scene`), so `render` can draw any scene from any camera, which is what multi-view
consistency and pose-accuracy checks need. Rays come from `cameras.get_rays` (physical pixel-centre
rays, OpenCV cam2world, normalised intrinsics), and every intersection is closed-form.

Scale: with FFHQ's camera (focal 4.2647 at radius 2.7) the frame spans only about +-0.32 world units
at the origin, so scenes are drawn inside a radius of about 0.3 (`SCENE_RADIUS`), as a face is in
EG3D's FFHQ frame; primitives inside radius 1 would mostly fall outside the image.

Cameras: yaw ~ N(pi/2, 0.3) and pitch ~ N(pi/2, 0.15) in EG3D's parameterisation
(`cameras.GaussianCameraPoseSampler`), radius 2.7, looking at the origin, focal 4.2647, principal
point 0.5. These spreads are about EG3D's FFHQ generation ranges (yaw +-0.4 around frontal).

Entry points:
- `random_scenes(n, generator)` / `random_cameras(n, generator)`: batches of scenes and poses.
- `render(scene, cam2world, intrinsics, height, width)`: float images in [0, 1], [N, 3, H, W];
  `return_depth=True` adds the ray distance and the foreground coverage, each [N, 1, H, W].
- `render_views(scene, cam2world, ...)`: one scene from several cameras.
- `mirror_x(scene)`: the scene mirrored across x = 0; with `cameras.flip_yaw` it renders the
  horizontally flipped image.
- `render_dataset(num_images, resolution, seed)`: (uint8 [H, W, 3], float32 [25] label) pairs, the
  source of `dataset_tool.py --source=synthetic:shapes`.
- `measure_rate()` / `python -m training.synthetic_shapes`: images per second.
"""

import dataclasses
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from training import cameras

SPHERE, BOX, CYLINDER, ELLIPSOID = 0, 1, 2, 3
KIND_NAMES = ('sphere', 'box', 'cylinder', 'ellipsoid')
MAX_PRIMITIVES = 3
SCENE_RADIUS = 0.3

# The sky's glow: weight GLOW_STRENGTH * clamp(0.5 - azimuth / (2 * GLOW_HALF_RANGE), 0, 1), where
# azimuth = atan2(side * d_x, -d_z) of the ray direction d (0 towards the frontal view, -z; side = +1,
# -1 once mirrored). Linear over +-GLOW_HALF_RANGE, about 2 sigma of the camera yaw spread.
GLOW_COLOR = (1.0, 0.5, 0.15)
GLOW_STRENGTH = 0.85
GLOW_HALF_RANGE = 0.6
# Random sky colours are blue-ish (SKY_LOW + SKY_SPAN * uniform), so that the orange glow, not the
# scene's own sky colour, tells the azimuth.
SKY_LOW = (0.35, 0.5, 0.7)
SKY_SPAN = (0.3, 0.3, 0.3)

YAW_STDDEV = 0.3
PITCH_STDDEV = 0.15
CAMERA_RADIUS = cameras.FFHQ_RADIUS
FOCAL = cameras.FFHQ_FOCAL

_PRIMITIVE_UNIFORMS = 24
_GLOBAL_UNIFORMS = 13
_SCENE_UNIFORMS = _GLOBAL_UNIFORMS + MAX_PRIMITIVES * _PRIMITIVE_UNIFORMS
_MAX_RAYS = 1 << 20  # per render call in render_dataset: about 40 bytes of buffers per ray and slot

# ----------------------------------------------------------------------------------------------
# Scenes.


@dataclasses.dataclass
class Scene:
    """A batch of N scenes with P primitive slots each; all tensors share a device.

    Primitive p of scene n maps object space to world space as x_world = center + rotation @ x_obj.
    `size` holds semi-axes in object space: a sphere (r, r, r), a box its half extents, a cylinder
    (radius x, half height along y, radius z), an ellipsoid its semi-axes. The pattern of a primitive
    is the parity of sum_k weight_k * floor(q_k / period) with q = sign * x_obj + offset: weights
    0 (plain), one-hot (stripes) or ones (checker); `sign` exists so that mirroring is exact.
    """
    kind: torch.Tensor            # [N, P] int64, one of SPHERE, BOX, CYLINDER, ELLIPSOID
    active: torch.Tensor          # [N, P] bool
    center: torch.Tensor          # [N, P, 3]
    rotation: torch.Tensor        # [N, P, 3, 3] object-to-world, determinant +1
    size: torch.Tensor            # [N, P, 3]
    color: torch.Tensor           # [N, P, 3] in [0, 1]
    color2: torch.Tensor          # [N, P, 3] in [0, 1], the second colour of the pattern
    pattern_weights: torch.Tensor  # [N, P, 3]
    pattern_period: torch.Tensor  # [N, P]
    pattern_offset: torch.Tensor  # [N, P, 3]
    pattern_sign: torch.Tensor    # [N, P, 3], +-1
    light_dir: torch.Tensor       # [N, 3] unit vector towards the light
    ambient: torch.Tensor         # [N]
    specular: torch.Tensor        # [N]
    shininess: torch.Tensor       # [N]
    sky_color: torch.Tensor       # [N, 3]
    ground_color: torch.Tensor    # [N, 3]
    glow_side: torch.Tensor       # [N], +1, or -1 for a mirrored world (the glow in the east)

    def __len__(self):
        return self.kind.shape[0]

    def map(self, fn):
        """A new Scene with `fn` applied to every tensor."""
        return Scene(**{field.name: fn(getattr(self, field.name)) for field in dataclasses.fields(self)})

    def select(self, index):
        """Scenes `index` (an int, slice or index tensor), keeping the batch dimension."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self.map(lambda t: t[index])

    def to(self, device):
        return self.map(lambda t: t.to(device))


def make_scene(primitives, light_dir=(0.4, 0.7, 0.6), ambient=0.3, specular=0.2, shininess=32.0,
               sky_color=(0.55, 0.7, 0.9), ground_color=(0.25, 0.22, 0.2)):
    """One hand-made scene (batch of 1) from a list of dicts with keys `kind` (name or id), `center`,
    `size` (3 semi-axes, or one radius), and optionally `rotation` [3, 3], `color`, `color2`,
    `pattern` ('plain', 'stripes_x/y/z', 'checker'), `period`, `offset`.
    """
    if not 1 <= len(primitives) <= MAX_PRIMITIVES:
        raise ValueError(f'A scene holds 1 to {MAX_PRIMITIVES} primitives, got {len(primitives)}.')
    pattern_weights = {'plain': (0, 0, 0), 'stripes_x': (1, 0, 0), 'stripes_y': (0, 1, 0), 'stripes_z': (0, 0, 1),
                       'checker': (1, 1, 1)}
    slots = []
    for prim in primitives:
        kind = prim['kind'] if isinstance(prim['kind'], int) else KIND_NAMES.index(prim['kind'])
        size = torch.as_tensor(prim['size'], dtype=torch.float32).reshape(-1).expand(3)
        slots.append(dict(kind=kind, active=True, center=prim['center'], rotation=prim.get('rotation', torch.eye(3)),
                          size=size, color=prim.get('color', (0.8, 0.3, 0.2)), color2=prim.get('color2', (0.2, 0.3, 0.8)),
                          pattern_weights=pattern_weights[prim.get('pattern', 'plain')],
                          pattern_period=prim.get('period', 0.05), pattern_offset=prim.get('offset', (0.0, 0.0, 0.0)),
                          pattern_sign=(1.0, 1.0, 1.0)))
    while len(slots) < MAX_PRIMITIVES:
        slots.append(dict(slots[0], active=False))

    def stack(key, dtype=torch.float32):
        return torch.stack([torch.as_tensor(s[key], dtype=dtype) for s in slots]).unsqueeze(0)

    def one(value):
        return torch.as_tensor(value, dtype=torch.float32).unsqueeze(0)

    light = torch.as_tensor(light_dir, dtype=torch.float32)
    return Scene(kind=stack('kind', torch.int64), active=stack('active', torch.bool), center=stack('center'),
                 rotation=stack('rotation'), size=stack('size'), color=stack('color'), color2=stack('color2'),
                 pattern_weights=stack('pattern_weights'), pattern_period=stack('pattern_period'),
                 pattern_offset=stack('pattern_offset'), pattern_sign=stack('pattern_sign'),
                 light_dir=one(light / light.norm()), ambient=one(ambient), specular=one(specular),
                 shininess=one(shininess), sky_color=one(sky_color), ground_color=one(ground_color),
                 glow_side=one(1.0))


def mirror_x(scene):
    """The scene mirrored across the world plane x = 0.

    Each primitive gets centre M c and rotation M R M (M = diag(-1, 1, 1)), which maps the mirror of
    its object-space shape onto the mirrored world shape (every kind is symmetric in object x); the
    pattern's x sign flips so its colours follow; the light and the sky's glow mirror. Rendered with
    `cameras.flip_yaw(cam2world)`, it gives the horizontally flipped image.
    """
    m = torch.tensor([-1.0, 1.0, 1.0], device=scene.center.device)
    return dataclasses.replace(scene, center=scene.center * m,
                               rotation=scene.rotation * m.reshape(3, 1) * m.reshape(1, 3),
                               pattern_sign=scene.pattern_sign * m, light_dir=scene.light_dir * m,
                               glow_side=-scene.glow_side)


def random_scenes(batch_size, generator=None, device='cpu'):
    """`batch_size` random scenes, drawn from `generator` (a torch.Generator on `device`)."""
    u = torch.rand([batch_size, _SCENE_UNIFORMS], generator=generator, device=device)
    return _scenes_from_uniforms(u)


def _scenes_from_uniforms(u):
    """Scenes from uniforms [N, _SCENE_UNIFORMS]: every random choice is a fixed column, so a scene
    depends only on its own row."""
    n, device = u.shape[0], u.device
    g, prims = u[:, :_GLOBAL_UNIFORMS], u[:, _GLOBAL_UNIFORMS:].reshape(n, MAX_PRIMITIVES, _PRIMITIVE_UNIFORMS)
    count = 1 + (g[:, 0] * MAX_PRIMITIVES).long().clamp(max=MAX_PRIMITIVES - 1)
    active = torch.arange(MAX_PRIMITIVES, device=device).unsqueeze(0) < count.unsqueeze(1)

    kind = (prims[..., 0] * len(KIND_NAMES)).long().clamp(max=len(KIND_NAMES) - 1)
    center = (2 * prims[..., 1:4] - 1) * 0.1
    rotation = _random_rotation(prims[..., 4:7])
    scale = 0.05 + 0.07 * prims[..., 7:8]
    aspect = 0.6 + 0.8 * prims[..., 8:11]
    size = torch.where((kind == SPHERE).unsqueeze(-1), scale.expand(-1, -1, 3), scale * aspect)
    cylinder_size = torch.stack([size[..., 0], size[..., 1], size[..., 0]], dim=-1)  # round cylinders
    size = torch.where((kind == CYLINDER).unsqueeze(-1), cylinder_size, size)

    color = 0.1 + 0.85 * prims[..., 11:14]
    color2 = torch.where(prims[..., 14:15] < 0.5, color * (0.2 + 0.4 * prims[..., 15:18]), 0.1 + 0.85 * prims[..., 15:18])
    pattern_choice, axis = prims[..., 18], (prims[..., 19] * 3).long().clamp(max=2)
    stripes = F.one_hot(axis, 3).float()
    pattern_weights = torch.where((pattern_choice < 0.2).unsqueeze(-1), torch.zeros_like(stripes),
                                  torch.where((pattern_choice < 0.6).unsqueeze(-1), stripes, torch.ones_like(stripes)))
    pattern_period = 0.03 + 0.05 * prims[..., 20]
    pattern_offset = prims[..., 21:24] * pattern_period.unsqueeze(-1)

    azimuth, elevation = (2 * g[:, 1] - 1) * 1.2, 0.2 + 1.0 * g[:, 2]
    light_dir = torch.stack([elevation.cos() * azimuth.sin(), elevation.sin(), elevation.cos() * azimuth.cos()], dim=-1)
    return Scene(kind=kind, active=active, center=center, rotation=rotation, size=size, color=color, color2=color2,
                 pattern_weights=pattern_weights, pattern_period=pattern_period, pattern_offset=pattern_offset,
                 pattern_sign=torch.ones_like(center), light_dir=light_dir, ambient=0.2 + 0.25 * g[:, 3],
                 specular=0.4 * g[:, 4], shininess=8 + 56 * g[:, 5], sky_color=g.new_tensor(SKY_LOW) + g.new_tensor(SKY_SPAN) * g[:, 6:9],
                 ground_color=0.05 + 0.45 * g[:, 9:12], glow_side=torch.ones_like(g[:, 0]))


def _random_rotation(u):
    """Uniform random rotations [..., 3, 3] from uniforms [..., 3] (Shoemake's unit quaternions)."""
    a, b = (1 - u[..., 0]).sqrt(), u[..., 0].sqrt()
    t1, t2 = 2 * math.pi * u[..., 1], 2 * math.pi * u[..., 2]
    w, x, y, z = b * t2.cos(), a * t1.sin(), a * t1.cos(), b * t2.sin()
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], dim=-1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], dim=-1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], dim=-1),
    ], dim=-2)

# ----------------------------------------------------------------------------------------------
# Cameras.


def random_cameras(batch_size, generator=None, device='cpu'):
    """(cam2world [N, 4, 4], intrinsics [N, 3, 3]): FFHQ-like poses looking at the origin."""
    cam2world = cameras.GaussianCameraPoseSampler.sample(
        cameras.FRONTAL_YAW, cameras.FRONTAL_PITCH, horizontal_stddev=YAW_STDDEV, vertical_stddev=PITCH_STDDEV,
        radius=CAMERA_RADIUS, batch_size=batch_size, device=device, generator=generator)
    return cam2world, default_intrinsics(batch_size, device)


def default_intrinsics(batch_size=1, device='cpu'):
    """[N, 3, 3] normalised intrinsics: focal 4.2647, principal point 0.5."""
    k = torch.tensor([[FOCAL, 0, 0.5], [0, FOCAL, 0.5], [0, 0, 1]], dtype=torch.float32, device=device)
    return k.expand(batch_size, 3, 3).clone()

# ----------------------------------------------------------------------------------------------
# Rendering.


def render(scene, cam2world, intrinsics, height, width, supersample=1, return_depth=False):
    """Render scene n from camera n: float32 images in [0, 1], [N, 3, height, width].

    A scene batch of 1 is drawn from every camera. `supersample` = s averages s x s pixel-centre rays
    per pixel (anti-aliasing). With `return_depth=True` returns (images, depth, mask), each extra
    [N, 1, H, W]: `mask` is the foreground coverage in [0, 1] (0 or 1 without supersampling) and
    `depth` the mean ray distance (Euclidean, from the camera centre, not z-depth) to the nearest
    surface over the covered sub-pixels, 0 on the background.
    """
    cam2world = torch.as_tensor(cam2world, dtype=torch.float32)
    cam2world = cam2world.unsqueeze(0) if cam2world.ndim == 2 else cam2world
    n, s = cam2world.shape[0], int(supersample)
    if len(scene) == 1 and n > 1:
        scene = scene.map(lambda t: t.expand(n, *t.shape[1:]))
    if len(scene) != n:
        raise ValueError(f'render() needs one scene per camera (or a single scene), got {len(scene)} scenes and '
                         f'{n} cameras.')
    scene = scene.to(cam2world.device)
    origins, dirs = cameras.get_rays(cam2world, intrinsics, height * s, width * s)
    origin = origins[:, 0, 0]                                   # [N, 3]: one centre per camera
    dirs = dirs.reshape(n, -1, 3).transpose(1, 2).contiguous()  # [N, 3, R]: each component contiguous
    t, normal, albedo = _trace(scene, origin, dirs)
    hit = torch.isfinite(t)
    rgb = torch.where(hit.unsqueeze(1), _shade(scene, dirs, normal, albedo), _background(scene, dirs))
    images = _downsample(rgb, height, width, s)
    if not return_depth:
        return images
    mask = _downsample(hit.float().unsqueeze(1), height, width, s)
    depth_sum = _downsample(torch.where(hit, t, 0).unsqueeze(1), height, width, s)
    depth = torch.where(mask > 0, depth_sum / mask.clamp(min=1e-12), 0)
    return images, depth, mask


def render_views(scene, cam2world, intrinsics=None, height=64, width=64, **kwargs):
    """Render one scene (a Scene of batch 1, or scene `index` selected beforehand) from several cameras."""
    if len(scene) != 1:
        raise ValueError(f'render_views() draws one scene; select it first with scene.select(i) ({len(scene)} given).')
    cam2world = torch.as_tensor(cam2world, dtype=torch.float32)
    cam2world = cam2world.unsqueeze(0) if cam2world.ndim == 2 else cam2world
    if intrinsics is None:
        intrinsics = default_intrinsics(cam2world.shape[0], cam2world.device)
    return render(scene, cam2world, intrinsics, height, width, **kwargs)


def _downsample(x, height, width, s):
    x = x.reshape(x.shape[0], x.shape[1], height * s, width * s)
    return F.avg_pool2d(x, s) if s > 1 else x


def _trace(scene, origin, dirs):
    """Nearest hit over all primitives: distance t [N, R] (inf on a miss), world normal and albedo [N, 3, R]."""
    n, _, r = dirs.shape
    p_slots = scene.kind.shape[1]
    t_all = torch.full([n, p_slots, r], math.inf, device=dirs.device)
    normal_all = torch.empty([n, p_slots, 3, r], device=dirs.device)  # read only where t is finite
    albedo_all = torch.empty([n, p_slots, 3, r], device=dirs.device)
    intersect = {SPHERE: _intersect_ellipsoid, ELLIPSOID: _intersect_ellipsoid, BOX: _intersect_box,
                 CYLINDER: _intersect_cylinder}
    for kind, fn in intersect.items():
        scene_idx, slot_idx = (scene.active & (scene.kind == kind)).nonzero(as_tuple=True)
        if scene_idx.numel() == 0:
            continue
        rot = scene.rotation[scene_idx, slot_idx]                               # [M, 3, 3]
        o_obj = ((origin[scene_idx] - scene.center[scene_idx, slot_idx]).unsqueeze(1) @ rot).squeeze(1)  # R^T (o - c)
        d_obj = rot.transpose(1, 2) @ dirs[scene_idx]                            # [M, 3, R]
        size = scene.size[scene_idx, slot_idx]
        t, n_obj = fn(o_obj.unsqueeze(-1), d_obj, size.unsqueeze(-1))
        p_obj = o_obj.unsqueeze(-1) + t.clamp(max=1e3).unsqueeze(1) * d_obj
        t_all[scene_idx, slot_idx] = t
        normal_all[scene_idx, slot_idx] = rot @ n_obj
        albedo_all[scene_idx, slot_idx] = _pattern(scene, scene_idx, slot_idx, p_obj)
    t, winner = t_all.min(dim=1)
    index = winner.reshape(n, 1, 1, r).expand(n, 1, 3, r)
    normal = normal_all.gather(1, index).squeeze(1)
    albedo = albedo_all.gather(1, index).squeeze(1)
    return t, _normalize(normal), albedo


def _pattern(scene, scene_idx, slot_idx, p_obj):
    """Albedo [M, 3, R] from the object-space points p_obj [M, 3, R]."""
    sign = scene.pattern_sign[scene_idx, slot_idx].unsqueeze(-1)
    offset = scene.pattern_offset[scene_idx, slot_idx].unsqueeze(-1)
    period = scene.pattern_period[scene_idx, slot_idx].reshape(-1, 1, 1)
    cells = torch.floor((sign * p_obj + offset) / period)
    parity = torch.remainder(_dot(cells, scene.pattern_weights[scene_idx, slot_idx].unsqueeze(-1)), 2) > 0.5
    return torch.where(parity, scene.color2[scene_idx, slot_idx].unsqueeze(-1),
                       scene.color[scene_idx, slot_idx].unsqueeze(-1))


def _dot(a, b):
    """Dot products over dim 1 of [M, 3, ...] tensors, keeping the dim (faster than a strided sum)."""
    return a[:, 0:1] * b[:, 0:1] + a[:, 1:2] * b[:, 1:2] + a[:, 2:3] * b[:, 2:3]


def _normalize(v):
    return v * _dot(v, v).clamp(min=1e-24).rsqrt()


def _safe(x, eps=1e-12):
    """x with values closer to 0 than eps replaced by +-eps, so that divisions stay finite."""
    return torch.where(x.abs() < eps, torch.where(x < 0, -eps, eps), x)


# Ray-primitive intersections in object space: origin o [M, 3, 1], directions d [M, 3, R] (unit in
# world and object space: rotations keep length), semi-axes size [M, 3, 1]. Each returns the nearest
# positive ray distance t [M, R] (inf on a miss) and an unnormalised object-space normal [M, 3, R].

def _intersect_ellipsoid(o, d, size):
    q, e = o / size, d / size  # the unit sphere in scaled coordinates; t is unchanged by the scaling
    a, b, c = _dot(e, e)[:, 0], _dot(q, e)[:, 0], _dot(q, q)[:, 0] - 1
    disc = b * b - a * c
    t = (-b - disc.clamp(min=0).sqrt()) / a
    t = torch.where((disc >= 0) & (t > 0), t, math.inf)
    p = o + t.clamp(max=1e3).unsqueeze(1) * d
    return t, p / (size * size)


def _intersect_box(o, d, size):
    inv = 1 / _safe(d)
    t1, t2 = (-size - o) * inv, (size - o) * inv
    t_lo, t_hi = torch.minimum(t1, t2), torch.maximum(t1, t2)
    t_near, t_far = t_lo.amax(dim=1), t_hi.amin(dim=1)
    t = torch.where((t_near <= t_far) & (t_near > 0), t_near, math.inf)
    normal = torch.where(t_lo == t_near.unsqueeze(1), -torch.sign(d), 0)
    return t, normal


def _intersect_cylinder(o, d, size):
    """Capped cylinder along object y: (x / sx)^2 + (z / sz)^2 <= 1, |y| <= sy."""
    ox, oy, oz = o[:, 0] / size[:, 0], o[:, 1], o[:, 2] / size[:, 2]
    dx, dy, dz = d[:, 0] / size[:, 0], d[:, 1], d[:, 2] / size[:, 2]
    half_height = size[:, 1]
    a = dx * dx + dz * dz
    b = ox * dx + oz * dz
    c = ox * ox + oz * oz - 1
    disc = b * b - a * c
    t_side = (-b - disc.clamp(min=0).sqrt()) / _safe(a)
    side_hit = (disc >= 0) & (a > 1e-12) & (t_side > 0) & ((oy + t_side * dy).abs() <= half_height)
    cap_y = -torch.sign(dy) * half_height  # the cap facing the ray
    t_cap = (cap_y - oy) / _safe(dy)
    xc, zc = ox + t_cap * dx, oz + t_cap * dz
    cap_hit = (dy != 0) & (t_cap > 0) & (xc * xc + zc * zc <= 1)
    t_side = torch.where(side_hit, t_side, math.inf)
    t_cap = torch.where(cap_hit, t_cap, math.inf)
    t = torch.minimum(t_side, t_cap)
    on_side = t_side <= t_cap
    ts = t_side.clamp(max=1e3)
    side_normal = torch.stack([(ox + ts * dx) / size[:, 0], torch.zeros_like(ts), (oz + ts * dz) / size[:, 2]], dim=1)
    cap_normal = torch.stack([torch.zeros_like(ts), torch.sign(cap_y).expand_as(ts), torch.zeros_like(ts)], dim=1)
    return t, torch.where(on_side.unsqueeze(1), side_normal, cap_normal)


def _shade(scene, dirs, normal, albedo):
    """Lambert + ambient + Blinn-Phong highlight (white), [N, 3, R] in [0, 1]."""
    light = scene.light_dir.unsqueeze(-1)                                # [N, 3, 1]
    normal = torch.where(_dot(normal, dirs) > 0, -normal, normal)  # face the camera
    diffuse = _dot(normal, light).clamp(min=0)
    half = _normalize(light - dirs)
    highlight = _dot(normal, half).clamp(min=0) ** scene.shininess.reshape(-1, 1, 1)
    ambient = scene.ambient.reshape(-1, 1, 1)
    rgb = albedo * (ambient + (1 - ambient) * diffuse) + scene.specular.reshape(-1, 1, 1) * highlight * (diffuse > 0)
    return rgb.clamp(0, 1)


def _background(scene, dirs):
    """Ground-to-sky gradient over the world up component of the ray direction, the sky glowing
    towards world -x (see GLOW_COLOR), [N, 3, R]."""
    w = (0.5 + 3 * dirs[:, 1:2]).clamp(0, 1)
    azimuth = torch.atan2(scene.glow_side.reshape(-1, 1, 1) * dirs[:, 0:1], -dirs[:, 2:3])
    glow = GLOW_STRENGTH * (0.5 - azimuth / (2 * GLOW_HALF_RANGE)).clamp(0, 1)
    glow_color = torch.tensor(GLOW_COLOR, device=dirs.device).reshape(1, 3, 1)
    sky = scene.sky_color.unsqueeze(-1) * (1 - glow) + glow_color * glow
    return scene.ground_color.unsqueeze(-1) * (1 - w) + sky * w

# ----------------------------------------------------------------------------------------------
# Datasets.


def image_seed(seed, index):
    """A 32-bit torch seed for image `index` of dataset `seed`: distinct for every index of one seed.

    torch's CPU generator keeps only 32 bits of a seed, so a hash of (seed, index) would repeat images
    in large datasets (birthday bound); an invertible mix of seed * golden + index does not.
    """
    x = (index + seed * 0x9E3779B9) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def sample_image_params(seed, indices):
    """(scenes, cam2world, intrinsics) for images `indices` of dataset `seed`, each from its own generator,
    so image i is the same whatever the batch it is drawn in."""
    generator = torch.Generator()
    uniforms, poses = [], []
    for index in indices:
        generator.manual_seed(image_seed(seed, int(index)))
        uniforms.append(torch.rand([_SCENE_UNIFORMS], generator=generator))
        poses.append(random_cameras(1, generator)[0])
    return _scenes_from_uniforms(torch.stack(uniforms)), torch.cat(poses), default_intrinsics(len(poses))


def to_uint8(images):
    """[N, 3, H, W] floats in [0, 1] -> uint8 numpy [N, H, W, 3]."""
    return (images * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def render_dataset(num_images, resolution, seed=0, batch_size=64, supersample=2, device='cpu'):
    """Yield `num_images` pairs (image uint8 numpy [res, res, 3], label float32 numpy [25]).

    Each image is a random scene from a random camera; the label is `cameras.pack(cam2world,
    intrinsics)`. The same seed gives identical bytes for any `batch_size` on the same machine and
    torch build (every image draws from its own generator). Batches are rendered in chunks of about
    `_MAX_RAYS` rays, so memory stays bounded at any resolution.
    """
    chunk = max(1, _MAX_RAYS // (resolution * resolution * supersample * supersample))
    for start in range(0, num_images, batch_size):
        indices = range(start, min(start + batch_size, num_images))
        scenes, cam2world, intrinsics = sample_image_params(seed, indices)
        labels = cameras.pack(cam2world, intrinsics).numpy().astype(np.float32)
        for first in range(0, len(indices), chunk):
            part = slice(first, first + chunk)
            with torch.no_grad():
                images = render(scenes.select(part), cam2world[part].to(device), intrinsics[part].to(device),
                                resolution, resolution, supersample=supersample)
            for image, label in zip(to_uint8(images.cpu()), labels[part]):
                yield image, label


def measure_rate(resolution=64, num_images=256, batch_size=64, supersample=2, seed=0):
    """Images per second of `render_dataset` (after one warm-up batch)."""
    for _ in render_dataset(min(batch_size, num_images), resolution, seed, batch_size, supersample):
        pass
    start = time.perf_counter()
    for _ in render_dataset(num_images, resolution, seed, batch_size, supersample):
        pass
    return num_images / (time.perf_counter() - start)


if __name__ == '__main__':
    for res in (64, 128):
        for ss in (1, 2):
            rate = measure_rate(res, num_images=512 if res == 64 else 128, supersample=ss)
            print(f'{{"resolution": {res}, "supersample": {ss}, "images_per_s": {rate:.1f}, '
                  f'"threads": {torch.get_num_threads()}}}')
