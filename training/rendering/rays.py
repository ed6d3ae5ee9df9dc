"""Camera rays and ray limits, following EG3D's ray sampler and ray-box intersection.

Checked against the official EG3D code (eg3d/training/volumetric_rendering/ray_sampler.py,
math_utils.py get_ray_limits_box, renderer.py forward):
- one ray per pixel centre of a `resolution` x `resolution` image, pixels in row-major order
  (index i * resolution + j for row i, column j). EG3D stacks an 'ij' meshgrid (row, column) and
  flips it, so its first image coordinate is the column: u = (j + 0.5) / res, v = (i + 0.5) / res;
- with fx, fy, cx, cy and the skew sk = K[0, 1] of the normalised intrinsics, the camera-space point
  is x = (u - cx + cy sk / fy - sk v / fy) / fx, y = (v - cy) / fy, z = 1 (the inverse of K for
  an upper-triangular K); the direction is the unit vector from the camera origin cam2world[:3, 3]
  to cam2world @ (x, y, 1, 1), and every ray of a camera starts at that origin;
- 'auto' limits intersect each ray with the axis-aligned cube of side `box_warp` centred at the
  world origin (slab method: entry = largest per-axis entry, exit = smallest per-axis exit). A ray
  that misses gets t_start = -1, t_end = -2. Rays are not clipped to t >= 0 (a box behind the
  camera still counts as a hit). The renderer then treats rays with t_end <= t_start as invalid and,
  if any ray of the batch is valid, gives every invalid ray t_start = min of the valid starts and
  t_end = max of the valid *starts* (sic: EG3D uses the starts for both), over the whole batch.

Shapes: N cameras, R = resolution ** 2 rays per camera. Float32 and float64 inputs are both kept in
their dtype.
"""

import torch

# ----------------------------------------------------------------------------------------------


def pixel_uv(resolution, device='cpu', dtype=torch.float32):
    """[resolution ** 2, 2] normalised pixel centres (u, v) = ((j + 0.5) / res, (i + 0.5) / res), row-major."""
    steps = (torch.arange(resolution, device=device, dtype=dtype) + 0.5) / resolution
    v, u = torch.meshgrid(steps, steps, indexing='ij')
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


def border_uv(resolution, device='cpu', dtype=torch.float32):
    """[resolution ** 2, 2] normalised image points of linspace(0, 1) over the pixels, image borders included,
    row-major: the ray grid of GRAM's and EpiGRAF's official code (NDC linspace(-1, 1))."""
    steps = torch.linspace(0, 1, resolution, device=device, dtype=dtype)
    v, u = torch.meshgrid(steps, steps, indexing='ij')
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


def sample_rays(cam2world, intrinsics, resolution, uv=None):
    """EG3D's pixel-centre rays: (origins, directions), each [N, resolution ** 2, 3].

    cam2world: [N, 4, 4] OpenCV cam2world. intrinsics: [N, 3, 3] normalised by the image size (may
    carry a skew K[0, 1]). Directions have unit length; origins are cam2world[:, :3, 3] repeated.
    `uv` [R, 2] (or [N, R, 2], one set per camera) replaces the pixel centres by other normalised image
    points (e.g. GRAM's grid, which includes the image borders, or a patch); then R rays per camera.
    """
    cam2world = torch.as_tensor(cam2world)
    if not cam2world.is_floating_point():
        cam2world = cam2world.float()
    intrinsics = torch.as_tensor(intrinsics, dtype=cam2world.dtype, device=cam2world.device)
    if cam2world.ndim != 3 or cam2world.shape[1:] != (4, 4) or intrinsics.shape != (cam2world.shape[0], 3, 3):
        raise ValueError(f'sample_rays() needs [N, 4, 4] cam2world and [N, 3, 3] intrinsics, got '
                         f'{list(cam2world.shape)} and {list(intrinsics.shape)}.')
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy, sk = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
    uv = pixel_uv(resolution, cam2world.device, cam2world.dtype) if uv is None else uv.to(cam2world)
    uv = uv if uv.ndim == 3 else uv.unsqueeze(0)
    u, v = uv[..., 0], uv[..., 1]                                               # [1 or N, R]
    x = (u - cx + cy * sk / fy - sk * v / fy) / fx                              # [N, R]
    y = (v - cy) / fy
    points = torch.stack([x, y, torch.ones_like(x), torch.ones_like(x)], dim=-1)  # [N, R, 4]
    world = (points @ cam2world.transpose(1, 2))[..., :3]
    origins = cam2world[:, None, :3, 3]
    dirs = torch.nn.functional.normalize(world - origins, dim=-1)
    return origins.expand_as(dirs).contiguous(), dirs


def sample_rays_from_labels(c, resolution, uv=None):
    """`sample_rays` for [N, 25] camera labels (training/cameras.py's contract)."""
    c = torch.as_tensor(c)
    if c.ndim != 2 or c.shape[1] != 25:
        raise ValueError(f'A camera label is 25 floats per sample ([N, 25]); got shape {list(c.shape)}.')
    if not c.is_floating_point():
        c = c.float()
    return sample_rays(c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3), resolution, uv=uv)

# ----------------------------------------------------------------------------------------------


def ray_box_limits(origins, dirs, box_side_length):
    """EG3D's ray-cube intersection: (t_start, t_end), each [..., 1], for rays `origins`, `dirs` [..., 3].

    The cube is axis-aligned, centred at the origin, of side `box_side_length`. Misses get
    t_start = -1, t_end = -2. The result is detached, as in EG3D.
    """
    origins, dirs = origins.detach(), dirs.detach()
    half = box_side_length / 2
    inv = 1 / dirs
    t_lo = (-half - origins) * inv
    t_hi = (half - origins) * inv
    t_start = torch.minimum(t_lo, t_hi).amax(dim=-1, keepdim=True)
    t_end = torch.maximum(t_lo, t_hi).amin(dim=-1, keepdim=True)
    miss = t_start > t_end
    t_start = torch.where(miss, torch.full_like(t_start, -1), t_start)
    t_end = torch.where(miss, torch.full_like(t_end, -2), t_end)
    return t_start, t_end


def fill_invalid_limits(t_start, t_end):
    """EG3D's renderer fix-up of 'auto' limits: (t_start, t_end, valid), shapes as given.

    valid = t_end > t_start. If any ray of the batch is valid, the invalid rays get
    t_start = min(valid starts) and t_end = max(valid starts) (EG3D's rule, over the whole batch);
    otherwise the limits are returned unchanged. The inputs are not modified.
    """
    valid = t_end > t_start
    if bool(valid.any()):
        starts = t_start[valid]
        t_start = torch.where(valid, t_start, starts.min())
        t_end = torch.where(valid, t_end, starts.max())
    return t_start, t_end, valid


def ray_limits(origins, dirs, ray_start='auto', ray_end='auto', box_warp=1.0):
    """Per-ray depth limits (t_start, t_end, valid), each [N, R, 1], for rays [N, R, 3].

    ray_start = ray_end = 'auto': `ray_box_limits` with the cube of side `box_warp`, then
    `fill_invalid_limits`. Floats: fixed bounds for every ray (valid everywhere). Mixing 'auto' with
    a float is an error here (EG3D takes the box only when both are 'auto').
    """
    if (ray_start == 'auto') != (ray_end == 'auto'):
        raise ValueError("ray_start and ray_end must both be 'auto' or both be numbers.")
    if ray_start == 'auto':
        return fill_invalid_limits(*ray_box_limits(origins, dirs, box_warp))
    shape = (*origins.shape[:-1], 1)
    t_start = torch.full(shape, float(ray_start), dtype=origins.dtype, device=origins.device)
    t_end = torch.full(shape, float(ray_end), dtype=origins.dtype, device=origins.device)
    return t_start, t_end, torch.ones(shape, dtype=torch.bool, device=origins.device)

# ----------------------------------------------------------------------------------------------
