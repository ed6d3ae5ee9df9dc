"""Cameras: the 25-float label contract, pose samplers, intrinsics, rays and Plücker embeddings.

A camera label `c` is 25 floats: the row-major 4x4 OpenCV cam2world matrix (camera x right, y down,
z forward; the world is y-up) followed by the row-major 3x3 intrinsics normalised by the image size
(principal point about 0.5, focal 4.2647 for FFHQ-like data). The same label serves any resolution.
EG3D's and Ray Conditioning's constants and samplers are reproduced here, as the official EG3D
repository defines them (docs/camera_conventions.md, docs/training_guide.md, eg3d/camera_utils.py
and its FFHQ dataset.json labels) and the official Ray Conditioning repository uses them
(training/camera_utils.py, training/plucker.py).
"""

import math

import torch

LABEL_DIM = 25

# EG3D's FFHQ camera: a sphere of radius 2.7 about the world origin, looking at the pivot.
FFHQ_FOCAL = 4.2647
FFHQ_RADIUS = 2.7
FFHQ_PIVOT = (0.0, 0.0, 0.2)
FRONTAL_YAW = math.pi / 2
FRONTAL_PITCH = math.pi / 2

# ----------------------------------------------------------------------------------------------
# The label contract.


def pack(cam2world, intrinsics):
    """[N, 4, 4] cam2world and [N, 3, 3] normalised intrinsics -> [N, 25] labels."""
    cam2world = torch.as_tensor(cam2world, dtype=torch.float32)
    intrinsics = torch.as_tensor(intrinsics, dtype=torch.float32, device=cam2world.device)
    if cam2world.ndim == 2:
        cam2world = cam2world.unsqueeze(0)
    if intrinsics.ndim == 2:
        intrinsics = intrinsics.unsqueeze(0).expand(cam2world.shape[0], 3, 3)
    if cam2world.shape[1:] != (4, 4) or intrinsics.shape[1:] != (3, 3) or intrinsics.shape[0] != cam2world.shape[0]:
        raise ValueError(f'pack() needs [N, 4, 4] cam2world and [N, 3, 3] intrinsics, '
                         f'got {list(cam2world.shape)} and {list(intrinsics.shape)}.')
    return torch.cat([cam2world.reshape(-1, 16), intrinsics.reshape(-1, 9)], dim=1)


def unpack(c):
    """[N, 25] labels -> ([N, 4, 4] cam2world, [N, 3, 3] intrinsics)."""
    c = torch.as_tensor(c)
    if c.ndim != 2 or c.shape[1] != LABEL_DIM:
        raise ValueError(f'A camera label is {LABEL_DIM} floats per sample ([N, {LABEL_DIM}]); got shape {list(c.shape)}.')
    return c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3)


def validate(c, atol=1e-3):
    """Raise ValueError with one sentence if `c` is not a batch of valid camera labels.

    Checks: shape [N, 25], finite values, a rotation block that is orthonormal with determinant +1,
    a last cam2world row of (0, 0, 0, 1), positive focal lengths and an intrinsics last row of (0, 0, 1).
    The sentence names the first invalid label and what is wrong with it (`problems`).
    """
    for index, problem in enumerate(problems(c, atol)):
        if problem is not None:
            raise ValueError(f'Camera label #{index}: {problem}.')


def problems(c, atol=1e-3):
    """What is wrong with each label of `c` ([N, 25]) as a camera: a list of N phrases, None for a valid one.

    A label gets the phrase of the first check it fails, in the order `validate` lists them.
    """
    cam2world, intrinsics = unpack(c)
    c = torch.as_tensor(c, dtype=torch.float64).cpu()
    cam2world, intrinsics = cam2world.double().cpu(), intrinsics.double().cpu()
    found = [None] * c.shape[0]

    def note(bad, describe):
        for index in bad.nonzero()[:, 0].tolist():
            if found[index] is None:
                found[index] = describe(index)

    finite = torch.isfinite(c).all(dim=1)
    note(~finite, lambda i: 'it contains NaN or infinite values')
    rot = torch.where(finite[:, None, None], cam2world[:, :3, :3], torch.eye(3, dtype=torch.float64))
    det = torch.linalg.det(rot)
    eye = torch.eye(3, dtype=rot.dtype)
    bad = ((rot @ rot.transpose(1, 2) - eye).abs().amax(dim=(1, 2)) > atol) | ((det - 1).abs() > atol)
    note(bad & finite, lambda i: f'the cam2world rotation is not orthonormal with determinant +1 (its determinant '
                                 f'is {float(det[i]):.3g})')
    bad = (cam2world[:, 3] - torch.tensor([0, 0, 0, 1], dtype=rot.dtype)).abs().amax(dim=1) > atol
    note(bad & finite, lambda i: f'the last cam2world row must be (0, 0, 0, 1), not {_row(cam2world[i, 3])}')
    bad = (intrinsics[:, 2] - torch.tensor([0, 0, 1], dtype=rot.dtype)).abs().amax(dim=1) > atol
    note(bad & finite, lambda i: f'the last intrinsics row must be (0, 0, 1), not {_row(intrinsics[i, 2])}')
    bad = (intrinsics[:, 0, 0] <= 0) | (intrinsics[:, 1, 1] <= 0)
    note(bad & finite, lambda i: f'the intrinsics need positive focal lengths, not '
                                 f'{float(intrinsics[i, 0, 0]):.4g} and {float(intrinsics[i, 1, 1]):.4g}')
    return found


def _row(values):
    return '(' + ', '.join(f'{float(v):.4g}' for v in values) + ')'

# ----------------------------------------------------------------------------------------------
# Poses.


def create_cam2world_matrix(forward, origin):
    """OpenCV cam2world [N, 4, 4] for cameras at `origin` [N, 3] looking along `forward` [N, 3] (world y-up)."""
    forward = _normalize(torch.as_tensor(forward, dtype=torch.float32))
    origin = torch.as_tensor(origin, dtype=torch.float32, device=forward.device).expand_as(forward)
    up_world = torch.tensor([0.0, 1.0, 0.0], device=forward.device).expand_as(forward)
    right = -_normalize(torch.cross(up_world, forward, dim=-1))
    up = _normalize(torch.cross(forward, right, dim=-1))  # world -y for a level camera: image y points down
    cam2world = torch.eye(4, device=forward.device).repeat(forward.shape[0], 1, 1)
    cam2world[:, :3, :3] = torch.stack([right, up, forward], dim=-1)
    cam2world[:, :3, 3] = origin
    return cam2world


def _normalize(v):
    return v / v.norm(dim=-1, keepdim=True)


def _sphere_origins(yaw, pitch, radius):
    """Camera positions on a sphere about the world origin, EG3D's parameterisation.

    `pitch` is mapped through arccos(1 - 2 v / pi), so it is the polar angle only at pi/2; the
    frontal camera (pi/2, pi/2) sits at (0, 0, radius).
    """
    pitch = pitch.clamp(1e-5, math.pi - 1e-5)
    theta = yaw
    phi = torch.arccos(1 - 2 * pitch / math.pi)
    return radius * torch.stack([phi.sin() * (math.pi - theta).cos(), phi.cos(), phi.sin() * (math.pi - theta).sin()],
                                dim=-1)


def _gaussian(mean, std, batch_size, device, generator):
    return mean + std * torch.randn([batch_size], device=device, generator=generator)


def _uniform(mean, spread, batch_size, device, generator):
    return mean + spread * (2 * torch.rand([batch_size], device=device, generator=generator) - 1)


class LookAtPoseSampler:
    """Cameras on a sphere about the world origin, looking at `lookat_position`; yaw and pitch Gaussian."""

    @staticmethod
    def sample(horizontal_mean, vertical_mean, lookat_position=FFHQ_PIVOT, horizontal_stddev=0, vertical_stddev=0,
               radius=1, batch_size=1, device='cpu', generator=None, truncation=False):
        """[batch_size, 4, 4] cam2world. `truncation` clamps yaw and pitch to mean +- 2 std (Ray Conditioning)."""
        yaw = _gaussian(horizontal_mean, horizontal_stddev, batch_size, device, generator)
        pitch = _gaussian(vertical_mean, vertical_stddev, batch_size, device, generator)
        if truncation:
            yaw = yaw.clamp(horizontal_mean - 2 * horizontal_stddev, horizontal_mean + 2 * horizontal_stddev)
            pitch = pitch.clamp(vertical_mean - 2 * vertical_stddev, vertical_mean + 2 * vertical_stddev)
        origins = _sphere_origins(yaw, pitch, radius)
        lookat = torch.as_tensor(lookat_position, dtype=torch.float32, device=device).reshape(1, 3)
        return create_cam2world_matrix(lookat - origins, origins)


def _looking_at_origin(draw, horizontal_mean, vertical_mean, horizontal_stddev, vertical_stddev, radius, batch_size,
                       device, generator):
    yaw = draw(horizontal_mean, horizontal_stddev, batch_size, device, generator)
    pitch = draw(vertical_mean, vertical_stddev, batch_size, device, generator)
    origins = _sphere_origins(yaw, pitch, radius)
    return create_cam2world_matrix(-origins, origins)


class GaussianCameraPoseSampler:
    """Cameras on a sphere about the world origin, looking at the origin; yaw and pitch Gaussian."""

    @staticmethod
    def sample(horizontal_mean, vertical_mean, horizontal_stddev=0, vertical_stddev=0, radius=1, batch_size=1,
               device='cpu', generator=None):
        return _looking_at_origin(_gaussian, horizontal_mean, vertical_mean, horizontal_stddev, vertical_stddev,
                                  radius, batch_size, device, generator)


class UniformCameraPoseSampler:
    """Cameras on a sphere about the world origin, looking at the origin; yaw and pitch uniform in mean +- spread."""

    @staticmethod
    def sample(horizontal_mean, vertical_mean, horizontal_stddev=0, vertical_stddev=0, radius=1, batch_size=1,
               device='cpu', generator=None):
        return _looking_at_origin(_uniform, horizontal_mean, vertical_mean, horizontal_stddev, vertical_stddev,
                                  radius, batch_size, device, generator)


def lookat_labels(yaw, pitch, radius=FFHQ_RADIUS, pivot=FFHQ_PIVOT, focal=FFHQ_FOCAL):
    """[N, 25] labels of cameras at angles (`yaw`, `pitch`) [N] in radians *relative to the frontal pose*.

    The cameras sit on a sphere of `radius` about the world origin and look at `pivot`, with EG3D's
    angle convention (LookAtPoseSampler at pi/2 + yaw, pi/2 + pitch): positive yaw moves the camera
    towards world +x, positive pitch moves it down. Intrinsics: `focal` (normalised), principal point 0.5.
    """
    yaw = torch.as_tensor(yaw, dtype=torch.float32).reshape(-1)
    pitch = torch.as_tensor(pitch, dtype=torch.float32).reshape(-1)
    origins = _sphere_origins(FRONTAL_YAW + yaw, FRONTAL_PITCH + pitch, radius)
    pivot = torch.as_tensor(pivot, dtype=torch.float32).reshape(1, 3)
    cam2world = create_cam2world_matrix(pivot - origins, origins)
    intrinsics = torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], dtype=torch.float32)
    return pack(cam2world, intrinsics)


def orbit_angles(t, yaw_amplitude=0.35, pitch_amplitude=0.25, pitch_offset=-0.05):
    """(yaw, pitch) relative to frontal at orbit phase `t` (one loop per unit): EG3D's and Ray Conditioning's video path.

    yaw = yaw_amplitude sin(2 pi t), pitch = pitch_offset + pitch_amplitude cos(2 pi t).
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    return yaw_amplitude * torch.sin(2 * math.pi * t), pitch_offset + pitch_amplitude * torch.cos(2 * math.pi * t)


def fov_to_focal(fov_degrees):
    """Normalised focal length for a *diagonal* field of view in degrees (see fov_to_intrinsics)."""
    return 1 / (math.tan(fov_degrees * math.pi / 360) * math.sqrt(2))


def focal_to_fov(focal):
    """The diagonal field of view in degrees of a normalised focal length: the inverse of fov_to_focal."""
    return math.degrees(2 * math.atan(1 / (focal * math.sqrt(2))))


def fov_to_intrinsics(fov_degrees, device='cpu'):
    """Normalised [3, 3] intrinsics for a *diagonal* field of view, as EG3D defines it.

    f = 1 / (tan(fov / 2) * sqrt(2)), principal point (0.5, 0.5). EG3D writes pi and sqrt(2) as
    3.14159 and 1.414; the exact constants here differ from its values by about 1e-4 relative.
    """
    focal = fov_to_focal(fov_degrees)
    return torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], dtype=torch.float32, device=device)


# ----------------------------------------------------------------------------------------------
# GRAM's cameras (microsoft/GRAM generators/generators.py, renderers/manifold_renderer.py): a camera
# at polar angle phi from world +y and azimuth theta, on a sphere about the origin and looking at it:
# origin = radius (sin(phi) cos(theta), cos(phi), sin(phi) sin(theta)); the frontal camera is
# (pi/2, pi/2), on +z. Its field of view `fov` is the full angle across the image width and height.


def gram_focal(fov_degrees):
    """The normalised focal length of GRAM's `fov` (degrees, across the image side): 1 / (2 tan(fov / 2))."""
    return 1 / (2 * math.tan(math.radians(fov_degrees) / 2))


def gram_pose_to_label(phi, theta, fov_degrees, radius=1.0):
    """[N, 25] labels of GRAM's cameras at polar angles `phi` [N] and azimuths `theta` [N] (radians)."""
    phi = torch.as_tensor(phi, dtype=torch.float32).reshape(-1)
    theta = torch.as_tensor(theta, dtype=torch.float32, device=phi.device).reshape(-1)
    origins = radius * torch.stack([phi.sin() * theta.cos(), phi.cos(), phi.sin() * theta.sin()], dim=-1)
    focal = gram_focal(fov_degrees)
    intrinsics = torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], dtype=torch.float32, device=phi.device)
    return pack(create_cam2world_matrix(-origins, origins), intrinsics)


def gram_pose_from_label(c):
    """(phi [N], theta [N]): GRAM's angles of the camera centres of labels `c` [N, 25], about the world origin."""
    cam2world, _ = unpack(c)
    origin = cam2world[:, :3, 3]
    radius = origin.norm(dim=-1)
    phi = torch.arccos((origin[:, 1] / radius).clamp(-1, 1))
    theta = torch.atan2(origin[:, 2], origin[:, 0])
    return phi, theta


def sample_gram_poses(mode, h_mean, v_mean, h_stddev, v_stddev, batch_size, device='cpu', generator=None):
    """(phi [N], theta [N]) drawn from GRAM's pose prior `mode` (its sample_camera_positions).

    'gaussian' / 'normal': theta ~ N(h_mean, h_stddev), phi ~ N(v_mean, v_stddev); 'uniform': each
    uniform in mean +- stddev; 'spherical_uniform': theta as 'uniform', phi = arccos(1 - 2 v) with v
    uniform in (v_mean +- v_stddev) / pi clamped to [1e-5, 1 - 1e-5] (uniform over the sphere's band);
    any other mode: the means. phi is clamped to [1e-5, pi - 1e-5] as in GRAM.
    """
    def uniform(mean, spread):
        return _uniform(mean, spread, batch_size, device, generator)
    if mode in ('gaussian', 'normal'):
        theta = _gaussian(h_mean, h_stddev, batch_size, device, generator)
        phi = _gaussian(v_mean, v_stddev, batch_size, device, generator)
    elif mode == 'uniform':
        theta, phi = uniform(h_mean, h_stddev), uniform(v_mean, v_stddev)
    elif mode == 'spherical_uniform':
        theta = uniform(h_mean, h_stddev)
        v = uniform(v_mean / math.pi, v_stddev / math.pi).clamp(1e-5, 1 - 1e-5)
        phi = torch.arccos(1 - 2 * v)
    else:
        theta = torch.full([batch_size], float(h_mean), device=device)
        phi = torch.full([batch_size], float(v_mean), device=device)
    return phi.clamp(1e-5, math.pi - 1e-5), theta

# ----------------------------------------------------------------------------------------------
# EpiGRAF's cameras (universome/epigraf dataset.json "camera_angles"): (yaw, pitch, roll) in radians,
# GRAM's camera with a zero-centred azimuth: pitch is GRAM's phi and yaw = theta - pi/2, so the
# frontal camera (0, pi/2) is GRAM's (pi/2, pi/2), on +z; roll is about 0 and not used.

EPIGRAF_YAW_OFFSET = math.pi / 2  # GRAM's theta of EpiGRAF's yaw 0


def epigraf_angles_to_label(angles, fov_degrees, radius=1.0):
    """[N, 25] labels of EpiGRAF's camera angles [N, 3] = (yaw, pitch, roll) in radians (roll ignored).

    yaw is zero-centred (frontal = 0, GRAM's theta - pi/2), pitch is the polar angle from +y (pi/2 = horizon):
    the camera sits at radius (-sin(pitch) sin(yaw), cos(pitch), sin(pitch) cos(yaw)) and looks at the origin.
    `fov_degrees` spans the image side, as GRAM's (gram_focal).
    """
    angles = torch.as_tensor(angles, dtype=torch.float64)  # the offset in double; the label is float32
    if angles.ndim != 2 or angles.shape[1] != 3:
        raise ValueError(f'EpiGRAF camera angles are (yaw, pitch, roll) per sample ([N, 3]); got shape {list(angles.shape)}.')
    return gram_pose_to_label(angles[:, 1], angles[:, 0] + EPIGRAF_YAW_OFFSET, fov_degrees, radius=radius)


def epigraf_angles_from_label(c):
    """[N, 3] EpiGRAF (yaw in [-pi, pi), pitch, roll = 0) of the camera centres of labels `c` [N, 25], about the origin."""
    phi, theta = gram_pose_from_label(c)
    yaw = torch.remainder(theta - EPIGRAF_YAW_OFFSET + math.pi, 2 * math.pi) - math.pi
    return torch.stack([yaw, phi, torch.zeros_like(phi)], dim=-1)

def gram_fov(focal):
    """The field of view in degrees across the image side of a normalised focal length (the inverse of gram_focal)."""
    return math.degrees(2 * math.atan(1 / (2 * float(focal))))


def front_circle_labels(t, fov_degrees, radius=1.0, pivot=(0.0, 0.0, 0.0), yaw_amplitude=0.3, pitch_amplitude=0.2,
                        fov_amplitude=1.0, yaw=0.0, pitch=0.0):
    """[N, 25] labels of EpiGRAF's `front_circle` video path at phases `t` [N] (one loop per unit): a fly-around with zoom.

    In EpiGRAF's angles (epigraf_angles_to_label): yaw = yaw_amplitude sin(2 pi t), pitch = pi/2 +
    pitch_amplitude cos(2 pi t), and the field of view across the image side fov_degrees + fov_amplitude
    sin(2 pi t) degrees (the focal c[:, 16] = c[:, 20] = 1 / (2 tan(fov / 2))). `yaw` and `pitch` move
    the centre of the circle in lookat_labels' convention (yaw towards +x, pitch down from the frontal
    pose). The camera circles `pivot` at `radius` and looks at it.
    """
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    phase = 2 * math.pi * t
    angles = torch.stack([yaw_amplitude * torch.sin(phase) - yaw, math.pi / 2 + pitch_amplitude * torch.cos(phase) + pitch,
                          torch.zeros_like(t)], dim=1)
    fovs = fov_degrees + fov_amplitude * torch.sin(phase)
    if not bool(((fovs > 0) & (fovs < 180)).all()):
        raise ValueError(f'front_circle: a field of view of {fov_degrees:g} +- {fov_amplitude:g} degrees leaves (0, 180).')
    labels = epigraf_angles_to_label(angles, fov_degrees, radius=radius)
    focal = (1 / (2 * torch.tan(torch.deg2rad(fovs) / 2))).to(labels.dtype)
    labels[:, 16] = focal
    labels[:, 20] = focal
    pivot = torch.as_tensor(pivot, dtype=labels.dtype).reshape(3)
    labels[:, [3, 7, 11]] += pivot
    return labels

# ----------------------------------------------------------------------------------------------


def flip_yaw(c):
    """Mirror cameras across the world x = 0 plane, to pair with horizontally flipped images.

    Accepts [N, 25] labels or [N, 4, 4] / [4, 4] cam2world matrices and returns the same kind. The
    mirror is M P M with M = diag(-1, 1, 1, 1): it negates entries [0,1], [0,2], [1,0], [2,0] and
    [0,3] of cam2world; applied twice it is the identity. Intrinsics are unchanged (for a principal
    point at 0.5).
    """
    c = torch.as_tensor(c)
    flipped = c.clone()
    if c.shape[-1] == LABEL_DIM:
        indices = [1, 2, 4, 8, 3]  # row-major positions of [0,1], [0,2], [1,0], [2,0], [0,3]
        flipped[..., indices] = -c[..., indices]
        return flipped
    if c.shape[-2:] != (4, 4):
        raise ValueError(f'flip_yaw() needs [N, 25] labels or 4x4 cam2world matrices, got shape {list(c.shape)}.')
    for row, col in ((0, 1), (0, 2), (1, 0), (2, 0), (0, 3)):
        flipped[..., row, col] = -c[..., row, col]
    return flipped

# ----------------------------------------------------------------------------------------------
# Rays.


def get_rays(cam2world, intrinsics, height, width):
    """Physical pixel-centre rays: (origins, directions), each [N, height, width, 3] in world space.

    Pixel (row i, column j) has normalised image coordinates ((j + 0.5) / width, (i + 0.5) / height),
    the same units as the normalised intrinsics; its direction is R K^-1 (u, v, 1), unit length.
    """
    cam2world = torch.as_tensor(cam2world, dtype=torch.float32)
    intrinsics = torch.as_tensor(intrinsics, dtype=torch.float32, device=cam2world.device)
    cam2world, intrinsics = _batched(cam2world, intrinsics)
    device = cam2world.device
    v, u = torch.meshgrid((torch.arange(height, device=device) + 0.5) / height,
                          (torch.arange(width, device=device) + 0.5) / width, indexing='ij')
    pixels = torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(1, -1, 3)  # [1, H*W, 3]
    return _rays_through(cam2world, intrinsics, pixels, height, width)


def legacy_raycond_rays(cam2world, intrinsics, height, width, jitter=False):
    """The ray field of the official Ray Conditioning release, for its published weights only.

    Not physical camera rays: pixel coordinates are in pixels (j + 0.5, i + 0.5) while the labels'
    intrinsics are normalised, so the pixel at [0, 0] gets the optical axis and the directions fan
    out with the resolution; and the map is transposed (the x pixel coordinate runs along rows).
    Returns (origins, directions), each [N, height, width, 3], laid out as the official embedding.
    `jitter`: a uniform random offset in [0, 1) per pixel instead of 0.5 (the official option; its
    networks never use it).
    """
    cam2world = torch.as_tensor(cam2world, dtype=torch.float32)
    intrinsics = torch.as_tensor(intrinsics, dtype=torch.float32, device=cam2world.device)
    cam2world, intrinsics = _batched(cam2world, intrinsics)
    device = cam2world.device
    x, y = torch.meshgrid(torch.arange(width, device=device, dtype=torch.float32),
                          torch.arange(height, device=device, dtype=torch.float32), indexing='ij')
    # Flattened x-major, later viewed as [height, width]: the official transposition.
    offsets = torch.rand([2, width * height], device=device) if jitter else torch.full([2, width * height], 0.5, device=device)
    pixels = torch.stack([x.reshape(-1) + offsets[0], y.reshape(-1) + offsets[1], torch.ones(width * height, device=device)], dim=-1)
    if bool((intrinsics.sum(dim=(1, 2)) == 0).any()):  # the official code treats all-zero intrinsics as identity
        intrinsics = torch.where(intrinsics.sum(dim=(1, 2), keepdim=True) == 0,
                                 torch.eye(3, device=device).expand_as(intrinsics), intrinsics)
    return _rays_through(cam2world, intrinsics, pixels.unsqueeze(0), height, width)


def _batched(cam2world, intrinsics):
    if cam2world.ndim == 2:
        cam2world = cam2world.unsqueeze(0)
    if intrinsics.ndim == 2:
        intrinsics = intrinsics.unsqueeze(0)
    return cam2world, intrinsics.expand(cam2world.shape[0], 3, 3)


def _rays_through(cam2world, intrinsics, pixels, height, width):
    """Unit world directions through homogeneous image points `pixels` [1, P, 3], and the camera origins."""
    cam_dirs = pixels @ torch.linalg.inv(intrinsics).transpose(1, 2)       # [N, P, 3]  K^-1 p
    dirs = _normalize(cam_dirs @ cam2world[:, :3, :3].transpose(1, 2))      # R K^-1 p
    origins = cam2world[:, :3, 3].unsqueeze(1).expand_as(dirs)
    n = cam2world.shape[0]
    return origins.reshape(n, height, width, 3), dirs.reshape(n, height, width, 3)


def plucker(origins, dirs):
    """Plücker coordinates [..., 6] = (d, o x d) of rays with unit directions `dirs`."""
    return torch.cat([dirs, torch.cross(origins, dirs, dim=-1)], dim=-1)


def plucker_map(c, height, width, legacy=False):
    """[N, 6, height, width] Plücker embedding of camera labels `c` [N, 25] (legacy: official Ray Conditioning field)."""
    cam2world, intrinsics = unpack(c)
    ray_fn = legacy_raycond_rays if legacy else get_rays
    origins, dirs = ray_fn(cam2world.float(), intrinsics.float(), height, width)
    return plucker(origins, dirs).permute(0, 3, 1, 2)

# ----------------------------------------------------------------------------------------------
