"""Importance rendering of a radiance field: a coarse pass, an importance pass, and compositing.

`render_rays` is EG3D's `ImportanceRenderer.forward` (eg3d/training/volumetric_rendering/renderer.py)
written on this package's functions, with rays processed in chunks:
1. depth limits: 'auto' = the cube of side `box_warp` (misses filled over the whole batch, as EG3D),
   or the fixed `ray_start` / `ray_end`;
2. coarse pass: `depth_resolution` stratified depths per ray, the field evaluated at
   origin + depth * direction (optional N(0, density_noise) added to the raw densities);
3. fine pass (when `depth_resolution_importance` > 0): the coarse samples are marched for their
   weights, `depth_resolution_importance` depths are drawn by inverse CDF, the field is evaluated
   there, coarse and fine samples are merged and sorted by depth (stable sort), and marched;
4. returns (features [N, R, C] scaled by 2x - 1, depth [N, R, 1], weight sum [N, R, 1]).

Deterministic mode: `rendering_options['jitter'] = False` (absent = True, as EG3D) gives the plain
linspace and evenly spaced inverse-CDF samples; then a render is a pure function of its inputs.

Chunks: every step after the limits treats rays independently, so rays are processed `chunk` at a
time (per batch item); the depth clamp of the marcher uses the depth range of the whole batch, so the
result equals the unchunked render. Each chunk's samples are freed once it is marched, so memory
without gradients is bounded by the chunk, not by the number of rays. ImportanceRenderer's default
chunk is `default_ray_chunk(device)`: 2 ** 15 rays, or 2 ** 11 on the CPU (faster there, see CPU_RAY_CHUNK).

The field is any `field(coordinates [N, M, 3], directions [N, M, 3]) -> {'rgb': [N, M, C],
'sigma': [N, M, 1]}`; `triplane_field(planes, decoder, box_warp)` makes EG3D's from tri-planes and
an OSGDecoder-style decoder.
"""

import torch

from . import marching, rays, sampling, triplane

DEFAULT_RAY_CHUNK = 2 ** 15  # rays per chunk over the whole batch
# On the CPU, chunks of 2 ** 11 rays rendered EG3D's 2 x 64 x 64 rays x (48 + 48) samples about 1.45x faster
# than one chunk of all 8192 rays (0.70 s against 1.03 s, 2 cores; 2 ** 12, 2 ** 10 and 2 ** 9 were 5-15%
# slower than 2 ** 11). Likely why: about 100k samples a pass make the decoder's [N * M, 64] float32 hidden
# layer 25 MiB, under glibc's largest mmap threshold, so temporaries are reused from the heap rather than
# mapped and page-faulted afresh, and the smaller index tensors stay in cache. The GPU keeps large chunks,
# where each launch is costly.
CPU_RAY_CHUNK = 2 ** 11


def default_ray_chunk(device):
    """The chunk for rays on `device` when rendering_kwargs has no 'ray_chunk': CPU_RAY_CHUNK on the CPU."""
    return CPU_RAY_CHUNK if torch.device(device).type == 'cpu' else DEFAULT_RAY_CHUNK

# ----------------------------------------------------------------------------------------------


def triplane_field(planes, decoder, box_warp, plane_axes=None):
    """field(coordinates, directions) of tri-planes [N, 3, C, H, W] read by `decoder(features, directions)`.

    Fast path (same values up to float rounding): for CPU planes with the default plane axes and a
    decoder that reads only the mean of the three (square) planes' features and ignores directions (it has
    `forward_mean_features`, as OSGDecoder), the field samples that mean in one fused gather from a
    channels-last copy of the planes (triplane.sample_mean_from_planes; the copy is made on the
    first call and shared by every chunk and pass of a render), and declares `ignores_directions`,
    so the renderer does not build a direction per sample. On other devices grid_sample stays.
    """
    forward_mean = getattr(decoder, 'forward_mean_features', None)
    if (forward_mean is not None and plane_axes is None and planes.device.type == 'cpu' and planes.ndim == 5
            and planes.shape[1] == 3 and planes.shape[-1] == planes.shape[-2]):
        rows = []

        def mean_field(coordinates, directions):
            if not rows:
                rows.append(triplane.padded_plane_rows(planes))
            return forward_mean(triplane.sample_mean_from_planes(planes, coordinates, box_warp, rows=rows[0]))
        mean_field.ignores_directions = True
        return mean_field

    def field(coordinates, directions):
        features = triplane.sample_from_planes(planes, coordinates, box_warp=box_warp, plane_axes=plane_axes)
        return decoder(features, directions)
    return field


def _evaluate(field, origins, dirs, depths, density_noise, generator):
    """Colours [N, R, S, C] and raw densities [N, R, S, 1] of the field at depths [N, R, S, 1]."""
    n, r, s, _ = depths.shape
    coordinates = (origins.unsqueeze(-2) + depths * dirs.unsqueeze(-2)).reshape(n, r * s, 3)
    if getattr(field, 'ignores_directions', False):
        directions = None  # the field would not read them: no [N, R * S, 3] copy of the directions
    else:
        directions = dirs.unsqueeze(-2).expand(-1, -1, s, -1).reshape(n, r * s, 3)
    out = field(coordinates, directions)
    sigma = out['sigma']
    if density_noise > 0:
        sigma = sigma + torch.randn(sigma.shape, dtype=sigma.dtype, device=sigma.device,
                                    generator=generator) * density_noise
    return out['rgb'].reshape(n, r, s, -1), sigma.reshape(n, r, s, 1)


def merge_samples(depths1, colors1, densities1, depths2, colors2, densities2):
    """Coarse and fine samples merged along dim -2 and sorted by depth (EG3D's unify_samples)."""
    depths = torch.cat([depths1, depths2], dim=-2)
    colors = torch.cat([colors1, colors2], dim=-2)
    densities = torch.cat([densities1, densities2], dim=-2)
    _, order = torch.sort(depths, dim=-2)
    depths = torch.gather(depths, -2, order)
    colors = torch.gather(colors, -2, order.expand(-1, -1, -1, colors.shape[-1]))
    densities = torch.gather(densities, -2, order)
    return depths, colors, densities


def _render_chunk(field, origins, dirs, start, end, options, generator, white_back):
    """(rgb, depth, weight sum, lowest depth, highest depth) of a chunk of rays, coarse + fine, marched.

    With an importance pass the coarse and fine samples are marched by marching.march_merged, which
    sorts only depths and densities and composites the colours of each pass where they are (the
    same values as merge_samples + march_rays, without copying all colour channels twice).
    """
    jitter = options.get('jitter', True)
    density_noise = float(options.get('density_noise', 0))
    clamp_mode = options['clamp_mode']
    unclamped = (float('-inf'), float('inf'))  # the caller clamps to the depth range of the whole batch
    depths = sampling.sample_stratified(origins, start, end, options['depth_resolution'],
                                        options.get('disparity_space_sampling', False), jitter=jitter,
                                        generator=generator)
    colors, densities = _evaluate(field, origins, dirs, depths, density_noise, generator)
    n_importance = int(options.get('depth_resolution_importance', 0))
    if n_importance <= 0:
        rgb, depth, weights = marching.march_rays(colors, densities, depths, white_back=white_back,
                                                  clamp_mode=clamp_mode, depth_range=unclamped)
        return rgb, depth, weights.sum(dim=-2), depths.detach().min(), depths.detach().max()
    weights = marching.compositing_weights(densities, depths, clamp_mode=clamp_mode)
    fine_depths = sampling.sample_importance(depths, weights, n_importance, det=not jitter, generator=generator)
    fine_colors, fine_densities = _evaluate(field, origins, dirs, fine_depths, density_noise, generator)
    rgb, depth, weight_sum = marching.march_merged(depths, colors, densities, fine_depths, fine_colors, fine_densities,
                                                   white_back=white_back, clamp_mode=clamp_mode, depth_range=unclamped)
    lo = torch.minimum(depths.detach().min(), fine_depths.detach().min())
    hi = torch.maximum(depths.detach().max(), fine_depths.detach().max())
    return rgb, depth, weight_sum, lo, hi


def render_rays(field, ray_origins, ray_directions, rendering_options, generator=None, chunk=DEFAULT_RAY_CHUNK):
    """(features [N, R, C], depth [N, R, 1], weight sum [N, R, 1]) of rays [N, R, 3]; see the module docstring.

    rendering_options: EG3D's rendering_kwargs ('ray_start', 'ray_end', 'box_warp', 'depth_resolution',
    'depth_resolution_importance', 'clamp_mode', optional 'white_back', 'disparity_space_sampling',
    'density_noise', 'jitter'). chunk: rays per chunk over the batch (None = all at once).
    """
    options = rendering_options
    n, r, _ = ray_origins.shape
    start, end, _ = rays.ray_limits(ray_origins, ray_directions, options['ray_start'], options['ray_end'],
                                    options.get('box_warp', 1.0))
    if options['ray_start'] != 'auto':
        start, end = float(options['ray_start']), float(options['ray_end'])
    rays_per_item = r if chunk is None else max(1, int(chunk) // max(n, 1))
    white_back = bool(options.get('white_back', False))
    features, depth, weight_sum, lows, highs = [], [], [], [], []
    for i in range(0, r, rays_per_item):
        part = slice(i, min(i + rays_per_item, r))
        bounds = (start, end) if isinstance(start, float) else (start[:, part], end[:, part])
        rgb, ray_depth, weights, lo, hi = _render_chunk(field, ray_origins[:, part], ray_directions[:, part], *bounds,
                                                        options, generator, white_back)
        features.append(rgb)
        depth.append(ray_depth)
        weight_sum.append(weights)
        lows.append(lo)
        highs.append(hi)
    # EG3D clamps depths to the range of all samples of the batch, not of a chunk.
    depth = torch.clamp(torch.cat(depth, dim=1), torch.stack(lows).min(), torch.stack(highs).max())
    features = torch.cat(features, dim=1)
    weight_sum = torch.cat(weight_sum, dim=1)
    return features, depth, weight_sum

# ----------------------------------------------------------------------------------------------
