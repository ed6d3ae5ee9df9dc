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
without gradients is bounded by the chunk, not by the number of rays.

The field is any `field(coordinates [N, M, 3], directions [N, M, 3]) -> {'rgb': [N, M, C],
'sigma': [N, M, 1]}`; `triplane_field(planes, decoder, box_warp)` makes EG3D's from tri-planes and
an OSGDecoder-style decoder.
"""

import torch

from . import marching, rays, sampling, triplane

DEFAULT_RAY_CHUNK = 2 ** 15  # rays per chunk over the whole batch

# ----------------------------------------------------------------------------------------------


def triplane_field(planes, decoder, box_warp, plane_axes=None):
    """field(coordinates, directions) of tri-planes [N, 3, C, H, W] read by `decoder(features, directions)`."""
    def field(coordinates, directions):
        features = triplane.sample_from_planes(planes, coordinates, box_warp=box_warp, plane_axes=plane_axes)
        return decoder(features, directions)
    return field


def _evaluate(field, origins, dirs, depths, density_noise, generator):
    """Colours [N, R, S, C] and raw densities [N, R, S, 1] of the field at depths [N, R, S, 1]."""
    n, r, s, _ = depths.shape
    coordinates = (origins.unsqueeze(-2) + depths * dirs.unsqueeze(-2)).reshape(n, r * s, 3)
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


def _samples_of_chunk(field, origins, dirs, start, end, options, generator):
    """The sorted samples (depths, colours, densities) of a chunk of rays, coarse + fine."""
    jitter = options.get('jitter', True)
    density_noise = float(options.get('density_noise', 0))
    depths = sampling.sample_stratified(origins, start, end, options['depth_resolution'],
                                        options.get('disparity_space_sampling', False), jitter=jitter,
                                        generator=generator)
    colors, densities = _evaluate(field, origins, dirs, depths, density_noise, generator)
    n_importance = int(options.get('depth_resolution_importance', 0))
    if n_importance <= 0:
        return depths, colors, densities
    weights = marching.compositing_weights(densities, depths, clamp_mode=options['clamp_mode'])
    fine_depths = sampling.sample_importance(depths, weights, n_importance, det=not jitter, generator=generator)
    fine_colors, fine_densities = _evaluate(field, origins, dirs, fine_depths, density_noise, generator)
    return merge_samples(depths, colors, densities, fine_depths, fine_colors, fine_densities)


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
    unclamped = (float('-inf'), float('inf'))
    features, depth, weight_sum, lows, highs = [], [], [], [], []
    for i in range(0, r, rays_per_item):
        part = slice(i, min(i + rays_per_item, r))
        bounds = (start, end) if isinstance(start, float) else (start[:, part], end[:, part])
        depths, colors, densities = _samples_of_chunk(field, ray_origins[:, part], ray_directions[:, part], *bounds,
                                                      options, generator)
        rgb, ray_depth, weights = marching.march_rays(colors, densities, depths, white_back=white_back,
                                                      clamp_mode=options['clamp_mode'], depth_range=unclamped)
        features.append(rgb)
        depth.append(ray_depth)
        weight_sum.append(weights.sum(dim=-2))
        lows.append(depths.detach().min())
        highs.append(depths.detach().max())
    # EG3D clamps depths to the range of all samples of the batch, not of a chunk.
    depth = torch.clamp(torch.cat(depth, dim=1), torch.stack(lows).min(), torch.stack(highs).max())
    features = torch.cat(features, dim=1)
    weight_sum = torch.cat(weight_sum, dim=1)
    return features, depth, weight_sum

# ----------------------------------------------------------------------------------------------
