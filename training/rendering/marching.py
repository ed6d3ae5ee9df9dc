"""Ray marching: composite colours and depths along rays with the volume rendering equation.

Follows EG3D's `MipRayMarcher2.run_forward` (eg3d/training/volumetric_rendering/ray_marcher.py).
Verified in the official code (read from NVlabs/eg3d, commit 2cd2cf2):
- every quantity is taken at the S - 1 mid-points between successive samples: deltas are
  depths[..., 1:, :] - depths[..., :-1, :], and colours, densities and depths are the averages of
  neighbouring samples (densities are averaged *before* the activation);
- the only supported activation (`clamp_mode`) is 'softplus', applied with a bias of -1:
  sigma = softplus(density_mid - 1); any other mode is an error;
- alpha = 1 - exp(-sigma * delta); transmittance is the exclusive cumulative product of
  (1 - alpha + 1e-10) along the samples (first interval gets 1), weights = alpha * transmittance;
- rgb = sum(weights * colour_mid); weight_total = sum(weights);
  depth = sum(weights * depth_mid) / weight_total, then `nan_to_num(depth, nan=inf)` (a ray whose
  weights are all zero gives 0 / 0 = NaN -> inf) and a clamp to [min(depths), max(depths)], where
  min and max are taken over the *whole* depths tensor (all batch items and rays), not per ray;
- with `white_back`, rgb += 1 - weight_total; the scaling rgb * 2 - 1 happens last, after the
  white background, for both cases;
- it returns (rgb, depth, weights).

All functions are plain, batched and keep the input dtype (float32 or float64).
"""

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------


def mid_points(x):
    """Averages of neighbouring samples along dim -2: [..., S, C] -> [..., S - 1, C]."""
    return (x[..., :-1, :] + x[..., 1:, :]) / 2


def compositing_weights(densities, depths, clamp_mode='softplus'):
    """EG3D's per-interval weights: [..., S, 1] densities and depths -> [..., S - 1, 1] weights.

    densities are raw (pre-activation) decoder outputs; the activation is softplus(d - 1) at the
    interval mid-points. Weights are alpha_i * prod_{j < i} (1 - alpha_j + 1e-10).
    """
    if clamp_mode != 'softplus':
        raise ValueError(f"The ray marcher only supports clamp_mode='softplus', got {clamp_mode!r}.")
    deltas = depths[..., 1:, :] - depths[..., :-1, :]
    sigma = F.softplus(mid_points(densities) - 1)
    alpha = 1 - torch.exp(-sigma * deltas)
    shifted = torch.cat([torch.ones_like(alpha[..., :1, :]), 1 - alpha + 1e-10], dim=-2)
    transmittance = torch.cumprod(shifted, dim=-2)[..., :-1, :]
    return alpha * transmittance


def _composite(rgb, weights, depths, white_back, depth_range):
    """EG3D's finish of a march: (rgb * 2 - 1 with the white background, depth clamped, weight sum)."""
    weight_total = weights.sum(dim=-2)
    depth = torch.sum(weights * mid_points(depths), dim=-2) / weight_total
    depth = torch.nan_to_num(depth, nan=float('inf'))
    lo, hi = (torch.min(depths), torch.max(depths)) if depth_range is None else depth_range
    depth = torch.clamp(depth, lo, hi)
    if white_back:
        rgb = rgb + 1 - weight_total
    return rgb * 2 - 1, depth, weight_total


def march_rays(colors, densities, depths, white_back=False, clamp_mode='softplus', depth_range=None):
    """Composite samples along rays, as EG3D's MipRayMarcher2.

    colors: [N, R, S, C]; densities: [N, R, S, 1] (raw, pre-activation); depths: [N, R, S, 1],
    increasing along S. Any number of leading dims works; samples are on dim -2.
    depth_range: (lo, hi) for the depth clamp instead of (min(depths), max(depths)); a renderer that
    marches a batch in chunks passes the range of the whole batch, as EG3D clamps it.
    Returns (rgb [N, R, C] scaled to [-1, 1] by rgb * 2 - 1, depth [N, R, 1], weights [N, R, S - 1, 1]).
    """
    if colors.shape[-2] < 2 or densities.shape[-2] != colors.shape[-2] or depths.shape[-2] != colors.shape[-2]:
        raise ValueError(f'march_rays() needs at least 2 samples per ray and matching sample counts, got '
                         f'colors {list(colors.shape)}, densities {list(densities.shape)}, depths {list(depths.shape)}.')
    weights = compositing_weights(densities, depths, clamp_mode=clamp_mode)
    rgb = torch.sum(weights * mid_points(colors), dim=-2)
    rgb, depth, _ = _composite(rgb, weights, depths, white_back, depth_range)
    return rgb, depth, weights


def march_rays_with_options(colors, densities, depths, rendering_options):
    """march_rays() reading EG3D's `rendering_options` dict ('clamp_mode', optional 'white_back')."""
    return march_rays(colors, densities, depths, white_back=bool(rendering_options.get('white_back', False)),
                      clamp_mode=rendering_options['clamp_mode'])


def march_merged(depths1, colors1, densities1, depths2, colors2, densities2, white_back=False, clamp_mode='softplus',
                 depth_range=None):
    """March two sets of samples of the same rays (a coarse and a fine pass) as one, sorted by depth.

    The same values as `march_rays(*renderer.merge_samples(...))` (up to float rounding), returning
    (rgb [..., C], depth [..., 1], weight sum [..., 1]). Inputs as march_rays', samples on dim -2.

    Why: merging sorts and gathers every colour channel of both passes (a concatenated copy, then a
    gathered one) only for the marcher to read them once more as mid-points (a third copy). Here
    only depths and densities (one channel) are merged and sorted. The mid-point sum
    sum_i w_i (c_i + c_{i+1}) / 2 over the sorted samples equals sum_j c_j (w_{j-1} + w_j) / 2
    (w_{-1} = w_{S-1} = 0), so each sample's share (w_{j-1} + w_j) / 2 is scattered back to its
    pass and position, and each pass's colours are summed where they lie, by a batched
    [1, S_pass] @ [S_pass, C] product per ray.
    """
    s1 = depths1.shape[-2]
    depths = torch.cat([depths1, depths2], dim=-2)
    densities = torch.cat([densities1, densities2], dim=-2)
    depths, order = torch.sort(depths, dim=-2)  # the sort of renderer.merge_samples
    densities = torch.gather(densities, -2, order)
    weights = compositing_weights(densities, depths, clamp_mode=clamp_mode)      # [..., S - 1, 1]
    share = (F.pad(weights, (0, 0, 1, 0)) + F.pad(weights, (0, 0, 0, 1))) * 0.5  # [..., S, 1], sorted order
    share = torch.zeros_like(share).scatter(-2, order, share)                     # back to the passes' order
    rgb = (share[..., :s1, :].transpose(-1, -2) @ colors1 + share[..., s1:, :].transpose(-1, -2) @ colors2).squeeze(-2)
    return _composite(rgb, weights, depths, white_back, depth_range)
