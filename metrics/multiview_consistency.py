"""Multi-view consistency: warp view A into view B with A's own depth and measure the photometric error.

No anchor (FID, KID, pose error) says whether two views of one generated identity show one 3D scene.
This measure does, for any generator that returns depth next to a colour image, and for a ground-truth
renderer as a reference. Given, for one scene, a colour image and a depth map from camera A and a colour
image (and optionally a depth map) from camera B:

1. Unproject. Pixel (row i, column j) of A, at resolution H x W, has the pixel-centre ray of
   `training.rendering.rays` (normalised image point u = (j + 0.5) / W, v = (i + 0.5) / H through
   the inverse of A's normalised intrinsics, rotated by A's cam2world, unit length). Its 3D point is
   origin_A + d * dir, with d the depth as a distance along the unit ray (EG3D's `image_depth`, the
   expected sample depth of its ray marcher, and `synthetic_shapes.render(..., return_depth=True)`
   are both that). A z-depth (distance along the camera's optical axis) is converted first:
   d = z / (dir . forward_A) (`depth_kind='z'`).
2. Project into B: p_B = inverse(cam2world_B) p (OpenCV camera: x right, y down, z forward), then
   u' = (fx x + sk y) / z + cx, v' = fy y / z + cy with B's normalised intrinsics.
3. Sample image B bilinearly at (u', v') (`grid_sample`, align_corners=False: the normalised grid
   coordinate is exactly 2 u' - 1, so a pixel centre lands on its pixel).
4. Valid pixels: z > 0 in B; (u', v') inside the hull of B's pixel centres, [0.5 / W, 1 - 0.5 / W] x
   [0.5 / H, 1 - 0.5 / H] (bilinear sampling then reads only real pixels); A's depth finite and > 0
   (the renderer marks background with 0; with `infinite_background=True` such pixels are points at
   infinity along their rays instead, warped by the rotation alone and compared only with
   background in B); where B's depth is given, not occluded: |d_proj - d_B| <= rel_tol * d_B, with
   d_proj = |p - origin_B| the distance of the point from B's camera centre and d_B B's depth map
   sampled bilinearly at (u', v') (at a depth edge the interpolated depth matches neither surface,
   so such pixels drop out); and, where a mask of A is given, inside it.
5. Error: the mean over valid pixels and colour channels of |A - warp(B)|, reported in units of
   [0, 255] (8-bit levels): the images' `value_range` (e.g. (-1, 1) for generators, (0, 1) for the
   renderer) is mapped onto 255. With it, `valid_fraction`: valid pixels over all pixels of A, and
   `unwarped_error`: the same mean of |A - B| at the *same* pixels over the same valid pixels (when
   A and B have one size). Smooth images (an untrained generator's) score low errors whatever their
   geometry; error / unwarped_error below 1 says the depth explains how the view moved.

The measure is one-directional (A into B) and per sample; `warp_error` returns per-sample tensors and
`summarize` their means. A perfect 3D-consistent scene with view-independent colours gives 0 up to
bilinear interpolation (and the image's own aliasing); view-dependent effects (the renderer's
specular highlight) and depth errors raise it. The identity warp (B == A) gives 0 up to rounding
(the unprojected points reproject onto the pixel centres) with every pixel valid. Two views of
*different* scenes or identities set the scale of "inconsistent".

`consistency_of_generator(G, z, c_a, c_b)` renders both views of each latent with any generator that
declares a depth output (`capabilities.image_modes`, a name ending in '_depth'); it compares the
colour output whose spatial size equals the depth's (for EG3D `image_raw` at the neural rendering
resolution, not the super-resolved `image`). Both views are mapped with EG3D's frontal conditioning
camera (`generation.mapping_label`) where the network is a volume renderer, so they show one identity,
and rendered deterministically (rendering_kwargs['jitter'] = False on a copy of G).
`consistency_of_renderer(scene, c_a, c_b, resolution)` does the same for `training.synthetic_shapes`.
"""

import copy

import torch
import torch.nn.functional as F

from training import capabilities
from training.rendering import rays as rays_module

DEFAULT_REL_TOL = 0.02

# ----------------------------------------------------------------------------------------------
# Geometry.


def _split_label(c):
    c = torch.as_tensor(c)
    if c.ndim != 2 or c.shape[1] != 25:
        raise ValueError(f'A camera label is 25 floats per sample ([N, 25]); got shape {list(c.shape)}.')
    c = c if c.is_floating_point() else c.float()
    return c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3)


def unproject(depth, c, depth_kind='ray'):
    """World points [N, H*W, 3] (row-major) of the pixels of depth maps [N, 1, H, W] from cameras c [N, 25].

    depth_kind: 'ray' (distance along the unit pixel-centre ray) or 'z' (along the optical axis).
    """
    n, _, h, w = depth.shape
    if h != w:
        raise ValueError(f'The pixel-centre rays are square (training.rendering.rays); got a {h}x{w} depth map.')
    c = torch.as_tensor(c, device=depth.device)
    origins, dirs = rays_module.sample_rays_from_labels(c.to(depth.dtype), h)
    d = depth.reshape(n, h * w, 1)
    if depth_kind == 'z':
        forward = _split_label(c)[0][:, :3, 2].to(depth.dtype)
        d = d / (dirs * forward[:, None, :]).sum(dim=-1, keepdim=True)
    elif depth_kind != 'ray':
        raise ValueError(f"depth_kind must be 'ray' or 'z', not {depth_kind!r}.")
    return origins + d * dirs


def _pinhole(local, intrinsics):
    """Normalised image coordinates [N, R, 2] of camera-space points or directions local [N, R, 3]."""
    x, y, z = local.unbind(-1)
    safe_z = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    sk, cx, cy = intrinsics[:, 0, 1, None], intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None]
    return torch.stack([(fx * x + sk * y) / safe_z + cx, fy * y / safe_z + cy], dim=-1)


def project(points, c):
    """Project world points [N, R, 3] into cameras c [N, 25].

    Returns (uv [N, R, 2] normalised image coordinates (u right, v down; pixel (i, j) of an H x W image
    has its centre at ((j + 0.5) / W, (i + 0.5) / H)), z [N, R] along the optical axis, distance [N, R]
    from the camera centre).
    """
    cam2world, intrinsics = _split_label(torch.as_tensor(c, device=points.device))
    cam2world, intrinsics = cam2world.to(points.dtype), intrinsics.to(points.dtype)
    world2cam = torch.linalg.inv(cam2world)
    local = points @ world2cam[:, :3, :3].transpose(1, 2) + world2cam[:, None, :3, 3]
    distance = (points - cam2world[:, None, :3, 3]).norm(dim=-1)
    return _pinhole(local, intrinsics), local[..., 2], distance


def project_directions(dirs, c):
    """(uv [N, R, 2], z [N, R]) of points at infinity along world directions dirs [N, R, 3] in cameras c:
    only the rotation acts (a camera's translation does not move what lies at infinity)."""
    cam2world, intrinsics = _split_label(torch.as_tensor(c, device=dirs.device))
    cam2world, intrinsics = cam2world.to(dirs.dtype), intrinsics.to(dirs.dtype)
    local = dirs @ cam2world[:, :3, :3]  # R^T d for each row d
    return _pinhole(local, intrinsics), local[..., 2]


def _sample(image, uv):
    """Bilinear samples [N, C, R] of image [N, C, H, W] at normalised coordinates uv [N, R, 2]."""
    grid = (2 * uv - 1).unsqueeze(1)  # [N, 1, R, 2]; align_corners=False: 2u - 1 is the grid coordinate
    return F.grid_sample(image, grid, mode='bilinear', padding_mode='border', align_corners=False)[:, :, 0]


def reproject(image_b, depth_a, c_a, c_b, depth_b=None, rel_tol=DEFAULT_REL_TOL, depth_kind='ray', mask_a=None,
              infinite_background=False):
    """Image B seen through A's pixels: (warped [N, C, H, W], valid [N, 1, H, W] bool).

    depth_a [N, 1, H, W] and optional depth_b, mask_a [N, 1, H, W]: see the module docstring (steps
    1-4). image_b and depth_b may have another size than depth_a; the warped image has A's size.
    infinite_background: A's pixels without a depth (0, negative or not finite: the renderer's sky)
    are points at infinity along their rays, warped by the rotation alone, and, where depth_b is
    given, valid only where B shows background too (its bilinearly sampled depth exactly 0, with
    non-finite values of depth_b read as 0); otherwise they are invalid. A negative depth_b (e.g. a
    pixel mixing two surfaces) matches nothing.
    """
    n, _, h, w = depth_a.shape
    hb, wb = image_b.shape[-2:]
    dtype = torch.float64 if depth_a.dtype == torch.float64 else torch.float32
    depth_a = depth_a.to(dtype)
    d_a = depth_a.reshape(n, h * w)
    far = ~(torch.isfinite(d_a) & (d_a > 0))
    points = unproject(torch.where(far.reshape(depth_a.shape), torch.ones_like(depth_a), depth_a), c_a, depth_kind)
    c_b = torch.as_tensor(c_b, device=depth_a.device)
    uv, z, distance = project(points, c_b)
    if infinite_background:
        _, dirs = rays_module.sample_rays_from_labels(torch.as_tensor(c_a, device=depth_a.device).to(dtype), h)
        uv_far, z_far = project_directions(dirs, c_b)
        uv = torch.where(far.unsqueeze(-1), uv_far, uv)
        z = torch.where(far, z_far, z)
        valid = z > 0
    else:
        valid = ~far & (z > 0)
    valid &= (uv[..., 0] >= 0.5 / wb - 1e-6) & (uv[..., 0] <= 1 - 0.5 / wb + 1e-6)
    valid &= (uv[..., 1] >= 0.5 / hb - 1e-6) & (uv[..., 1] <= 1 - 0.5 / hb + 1e-6)
    uv = torch.where(valid.unsqueeze(-1), uv, torch.full_like(uv, 0.5))  # keep misses finite for grid_sample
    warped = _sample(image_b.to(dtype), uv)
    if depth_b is not None:
        if depth_b.shape[-2:] != image_b.shape[-2:]:
            raise ValueError(f'depth_b {list(depth_b.shape[-2:])} and image_b {list(image_b.shape[-2:])} differ in size.')
        depth_b = depth_b.to(dtype)
        depth_b = torch.where(torch.isfinite(depth_b), depth_b, torch.zeros_like(depth_b))  # < 0: matches nothing
        reference = _sample(depth_b, uv)[:, 0]
        # A z-depth map of B is compared with the point's z in B, a ray depth with its distance from B's
        # centre; the relative test reads the same in either unit.
        own = z if depth_kind == 'z' else distance
        near_ok = (reference > 0) & ((own - reference).abs() <= rel_tol * reference)
        valid &= torch.where(far, reference == 0, near_ok) if infinite_background else near_ok
    if mask_a is not None:
        valid &= mask_a.reshape(n, h * w) > 0.5
    return warped.reshape(n, -1, h, w), valid.reshape(n, 1, h, w)


def warp_error(image_a, depth_a, c_a, image_b, c_b, depth_b=None, value_range=(-1, 1), rel_tol=DEFAULT_REL_TOL,
               depth_kind='ray', mask_a=None, infinite_background=False):
    """Per-sample consistency of A with B: dict of [N] tensors.

    'error': mean |A - warp(B)| over valid pixels and channels, in 8-bit levels ([0, 255] units; NaN
    where no pixel is valid); 'valid_fraction': valid pixels / H W. image_a [N, C, H, W] must have
    depth_a's size. See the module docstring.
    """
    if image_a.shape[-2:] != depth_a.shape[-2:]:
        raise ValueError(f'image_a {list(image_a.shape[-2:])} and depth_a {list(depth_a.shape[-2:])} differ in size.')
    warped, valid = reproject(image_b, depth_a, c_a, c_b, depth_b=depth_b, rel_tol=rel_tol, depth_kind=depth_kind,
                              mask_a=mask_a, infinite_background=infinite_background)
    scale = 255 / (value_range[1] - value_range[0])
    diff = (image_a.to(warped.dtype) - warped).abs().mean(dim=1, keepdim=True) * scale  # [N, 1, H, W]
    count = valid.flatten(1).sum(dim=1)
    total = torch.where(valid, diff, torch.zeros_like(diff)).flatten(1).sum(dim=1)
    nan = torch.full_like(total, float('nan'))
    error = torch.where(count > 0, total / count.clamp(min=1), nan)
    out = dict(error=error.float(), valid_fraction=(count.float() / valid[0].numel()))
    if image_b.shape == image_a.shape:
        same = (image_a.to(warped.dtype) - image_b.to(warped.dtype)).abs().mean(dim=1, keepdim=True) * scale
        same_total = torch.where(valid, same, torch.zeros_like(same)).flatten(1).sum(dim=1)
        out['unwarped_error'] = torch.where(count > 0, same_total / count.clamp(min=1), nan).float()
    return out


def summarize(result):
    """Means over samples of a warp_error dict (NaN errors of samples without valid pixels skipped)."""
    error = result['error']
    finite = torch.isfinite(error)

    def mean(values):
        return float(values[finite].mean()) if bool(finite.any()) else float('nan')
    out = dict(error=mean(error), valid_fraction=float(result['valid_fraction'].mean()))
    if 'unwarped_error' in result:
        out['unwarped_error'] = mean(result['unwarped_error'])
    out.update(samples=int(error.numel()), samples_without_valid_pixels=int((~finite).sum()))
    return out

# ----------------------------------------------------------------------------------------------
# Generators.


def depth_modes(G):
    """The depth outputs G declares (capabilities.image_modes names ending in '_depth')."""
    return tuple(mode for mode in capabilities.image_modes(G) if mode.endswith('_depth'))


def choose_modes(G, outputs, depth_mode=None, color_mode=None):
    """(color_mode, depth_mode) to compare in `outputs` (a dict mode -> tensor of one G call).

    depth_mode: the only declared depth output unless named. color_mode: the first declared colour
    output (in image_modes order) whose spatial size equals the depth's, unless named.
    """
    depths = depth_modes(G)
    if not depths:
        raise ValueError(f'{type(G).__name__} declares no depth output (capabilities.image_modes: '
                         f'{", ".join(capabilities.image_modes(G))}); multi-view consistency needs one.')
    if depth_mode is None:
        if len(depths) > 1:
            raise ValueError(f'{type(G).__name__} declares several depth outputs ({", ".join(depths)}); name one.')
        depth_mode = depths[0]
    elif depth_mode not in depths:
        raise ValueError(f'{depth_mode!r} is not a depth output of {type(G).__name__} ({", ".join(depths)}).')
    size = tuple(outputs[depth_mode].shape[-2:])
    if color_mode is None:
        same = [m for m in capabilities.image_modes(G) if not m.endswith('_depth') and tuple(outputs[m].shape[-2:]) == size]
        if not same:
            sizes = {m: list(outputs[m].shape[-2:]) for m in outputs}
            raise ValueError(f'No colour output of {type(G).__name__} has the size of its depth {list(size)} '
                             f'(sizes: {sizes}); name color_mode and resize it yourself.')
        color_mode = same[0]
    elif tuple(outputs[color_mode].shape[-2:]) != size:
        raise ValueError(f'{color_mode!r} is {list(outputs[color_mode].shape[-2:])}, the depth {depth_mode!r} {list(size)}.')
    return color_mode, depth_mode


def deterministic_copy(G):
    """A copy of G whose volume rendering does not jitter its samples (rendering_kwargs['jitter'] = False)."""
    G = copy.deepcopy(G).eval().requires_grad_(False)
    for module in G.modules():
        options = getattr(module, 'rendering_kwargs', None)
        if isinstance(options, dict):
            module.rendering_kwargs = dict(options, jitter=False)
    return G


@torch.no_grad()
def render_views(G, z, c, mapping_c=None, truncation_psi=1, noise_mode='const'):
    """{mode: tensor} of every declared output of G for latents z [N, z_dim] under cameras c [N, 25].

    mapping_c [1, 25] or [N, 25]: the label of the mapping (None: c itself).
    """
    c_map = c if mapping_c is None else mapping_c.to(c.device).expand(len(z), -1)
    ws = G.mapping(z, c_map, truncation_psi=truncation_psi)
    kwargs = {}
    if capabilities.accepts(G, 'camera'):
        kwargs['c'] = c
    if capabilities.accepts(G, 'noise_mode'):
        kwargs['noise_mode'] = noise_mode
    modes = capabilities.image_modes(G)
    output = G.synthesis(ws, **kwargs, **capabilities.mode_kwargs(G, modes))
    return {mode: capabilities.output_of(G, output, mode).float() for mode in modes}


@torch.no_grad()
def consistency_of_generator(G, z, c_a, c_b, z_b=None, truncation_psi=1, rel_tol=DEFAULT_REL_TOL, depth_mode=None,
                             color_mode=None, noise_mode='const', batch=8, deterministic=True):
    """Per-sample warp_error of G's view A of latent z into its view B ([N] tensors, plus the modes used).

    z [N, z_dim]; c_a, c_b [N, 25]. z_b: latents of view B (default z; another identity gives the
    "inconsistent" reference). Images are in [-1, 1] (value_range). Mapping: `generation.mapping_label(G)`
    (frontal, for volume renderers), else each view's own label.
    """
    from training import generation
    if capabilities.label_kind(G) != 'camera':
        raise ValueError(f'{type(G).__name__} is not camera-conditioned (label_kind {capabilities.label_kind(G)!r}).')
    if not depth_modes(G):
        choose_modes(G, {})  # raises the message
    if deterministic:
        G = deterministic_copy(G)
    device = next(iter(G.parameters()), torch.empty(0)).device
    mapping_c = generation.mapping_label(G, device)
    z_b = z if z_b is None else z_b
    results, modes = [], None
    for start in range(0, len(z), batch):
        part = slice(start, start + batch)
        za, zb = z[part].to(device), z_b[part].to(device)
        ca, cb = c_a[part].to(device), c_b[part].to(device)
        view_a = render_views(G, za, ca, mapping_c, truncation_psi, noise_mode)
        view_b = render_views(G, zb, cb, mapping_c, truncation_psi, noise_mode)
        color, depth = modes = choose_modes(G, view_a, depth_mode, color_mode)
        results.append(warp_error(view_a[color], view_a[depth], ca, view_b[color], cb, depth_b=view_b[depth],
                                  value_range=(-1, 1), rel_tol=rel_tol))
    out = {key: torch.cat([r[key].cpu() for r in results]) for key in results[0]}
    out['color_mode'], out['depth_mode'] = modes
    return out

# ----------------------------------------------------------------------------------------------
# The ground-truth renderer.


@torch.no_grad()
def consistency_of_renderer(scene, c_a, c_b, resolution, scene_b=None, rel_tol=DEFAULT_REL_TOL, supersample=2,
                            background=True):
    """Per-sample warp_error of `training.synthetic_shapes` views: scene n from c_a[n] into c_b[n].

    scene: a Scene batch (one per camera, or one for all); scene_b: the scenes of view B (default the
    same; other scenes give the "inconsistent" reference). supersample: as the dataset's images
    (dataset_tool renders 2 x 2 rays per pixel); pixels of A only partly covered by the foreground are
    left out (their colour and depth mix two surfaces), and a fully covered pixel's depth is the mean
    ray distance of its sub-pixels. background=True: the sky, which depends only on the ray direction,
    counts as lying at infinity (`infinite_background`), so the whole frame is compared, as for a
    generator; False: foreground pixels only.
    """
    from training import synthetic_shapes
    scene_b = scene if scene_b is None else scene_b
    cam_a, k_a = _split_label(c_a)
    cam_b, k_b = _split_label(c_b)
    kwargs = dict(supersample=supersample, return_depth=True)
    image_a, depth_a, mask_a = synthetic_shapes.render(scene, cam_a, k_a, resolution, resolution, **kwargs)
    image_b, depth_b, mask_b = synthetic_shapes.render(scene_b, cam_b, k_b, resolution, resolution, **kwargs)
    full = mask_a > 1 - 1e-6
    keep = (full | (mask_a < 1e-6)) if background else full
    depth_b = torch.where(mask_b > 1 - 1e-6, depth_b, torch.where(mask_b < 1e-6, 0.0, -1.0))  # partial: no match
    return warp_error(image_a, torch.where(full, depth_a, 0.0), c_a, image_b, c_b, depth_b=depth_b,
                      value_range=(0, 1), rel_tol=rel_tol, mask_a=keep, infinite_background=background)
