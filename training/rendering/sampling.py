"""Depth samples along rays: stratified (coarse pass) and importance sampling (fine pass).

Checked against the official EG3D code (eg3d/training/volumetric_rendering/renderer.py:
sample_stratified, sample_importance, sample_pdf; math_utils.linspace):
- stratified: depths = linspace(ray_start, ray_end, D) per ray (start + k / (D - 1) * (end - start)),
  plus a jitter U[0, 1) * delta with delta = (ray_end - ray_start) / (D - 1), drawn independently per
  sample; the last sample may therefore pass ray_end. With disparity_space_sampling, t = linspace(0, 1,
  D) + U[0, 1) / (D - 1) and depth = 1 / ((1 - t) / ray_start + t / ray_end);
- importance: the coarse weights (per ray) are smoothed by max_pool1d(kernel 2, stride 1, padding 1)
  then avg_pool1d(kernel 2, stride 1), plus 0.01; the bins are the mid-points of the coarse depths and
  the pdf uses the smoothed weights without their first and last entries. EG3D's ray marcher yields
  one weight per interval (D - 1 weights for D depths), so its D - 3 weights use only the first D - 2
  mid-points; with D weights all D - 1 mid-points are used. Both are accepted here and behave as in
  EG3D (the pdf covers bins[: K + 1] for K weights). Runs without gradients; the result is detached;
- sample_pdf: pdf = (w + eps) / sum(w + eps), eps = 1e-5; cdf with a leading 0; u = linspace(0, 1, n)
  when `det`, else U[0, 1); indices by searchsorted(cdf, u, right=True), clamped to [0, K]; linear
  interpolation inside the bin, with a denominator below eps replaced by 1.

Deterministic mode: `jitter=False` gives exactly the linspace; `det=True` gives NeRF's evenly spaced u.
Random draws take an optional `torch.Generator` (on the tensors' device). Float32 and float64 alike.
"""

import torch

# ----------------------------------------------------------------------------------------------


def _bounds(value, shape, like):
    if isinstance(value, torch.Tensor):
        return value.to(dtype=like.dtype, device=like.device)
    return torch.full(shape, float(value), dtype=like.dtype, device=like.device)


def sample_stratified(ray_origins, ray_start, ray_end, depth_resolution, disparity_space_sampling=False,
                      jitter=True, generator=None):
    """[N, R, D, 1] depths along rays `ray_origins` [N, R, 3] (used for shape, dtype and device).

    ray_start, ray_end: floats, or tensors [N, R, 1] (e.g. from rays.ray_limits). D = depth_resolution
    (at least 2). `jitter=False`: the plain linspace (zero offset).
    """
    if depth_resolution < 2:
        raise ValueError(f'sample_stratified() needs depth_resolution >= 2, got {depth_resolution}.')
    n, r = ray_origins.shape[:2]
    like = ray_origins if ray_origins.is_floating_point() else ray_origins.float()
    steps = torch.arange(depth_resolution, dtype=like.dtype, device=like.device) / (depth_resolution - 1)
    steps = steps.reshape(1, 1, depth_resolution, 1)
    shape = (n, r, depth_resolution, 1)

    def noise():
        if not jitter:
            return torch.zeros(shape, dtype=like.dtype, device=like.device)
        return torch.rand(shape, dtype=like.dtype, device=like.device, generator=generator)

    if disparity_space_sampling:
        start = _bounds(ray_start, (n, r, 1), like).reshape(n, r, 1, 1)
        end = _bounds(ray_end, (n, r, 1), like).reshape(n, r, 1, 1)
        t = steps + noise() / (depth_resolution - 1)
        return 1 / ((1 - t) / start + t / end)
    if not isinstance(ray_start, torch.Tensor) and not isinstance(ray_end, torch.Tensor):
        depths = torch.linspace(float(ray_start), float(ray_end), depth_resolution, dtype=like.dtype,
                                device=like.device).reshape(1, 1, depth_resolution, 1).repeat(n, r, 1, 1)
        delta = (float(ray_end) - float(ray_start)) / (depth_resolution - 1)
        return depths + noise() * delta
    start = _bounds(ray_start, (n, r, 1), like).reshape(n, r, 1, 1)
    end = _bounds(ray_end, (n, r, 1), like).reshape(n, r, 1, 1)
    delta = (end - start) / (depth_resolution - 1)
    return start + steps * (end - start) + noise() * delta

# ----------------------------------------------------------------------------------------------


def sample_pdf(bins, weights, n_samples, det=False, eps=1e-5, generator=None):
    """[..., n_samples] inverse-CDF samples from the piecewise-constant pdf `weights` [..., K] on `bins`.

    bins: [..., K + 1] (or longer: only bins[..., :K + 1] are reached), increasing. det: u =
    linspace(0, 1, n_samples) (sorted samples); else u ~ U[0, 1) (unsorted).
    """
    batch = weights.shape[:-1]
    k = weights.shape[-1]
    weights = weights.reshape(-1, k)
    bins = bins.reshape(-1, bins.shape[-1])
    rows = weights.shape[0]
    weights = weights + eps
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)  # [rows, K + 1]
    if det:
        u = torch.linspace(0, 1, n_samples, dtype=cdf.dtype, device=cdf.device).expand(rows, n_samples)
    else:
        u = torch.rand(rows, n_samples, dtype=cdf.dtype, device=cdf.device, generator=generator)
    u = u.contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    below = (inds - 1).clamp_min(0)
    above = inds.clamp_max(k)
    cdf_below, cdf_above = cdf.gather(1, below), cdf.gather(1, above)
    bins_below, bins_above = bins.gather(1, below), bins.gather(1, above)
    denom = cdf_above - cdf_below
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    samples = bins_below + (u - cdf_below) / denom * (bins_above - bins_below)
    return samples.reshape(*batch, n_samples)


def smooth_weights(weights):
    """EG3D's smoothing of coarse weights [M, W]: max_pool1d(2, 1, padding 1), avg_pool1d(2, 1), + 0.01."""
    pooled = torch.nn.functional.max_pool1d(weights.unsqueeze(1), 2, 1, padding=1)
    return torch.nn.functional.avg_pool1d(pooled, 2, 1).squeeze(1) + 0.01


def sample_importance(depths, weights, n_importance, det=False, generator=None, eps=1e-5):
    """[N, R, n_importance, 1] fine depths from coarse `depths` [N, R, D, 1] and `weights` [N, R, W, 1].

    W is D (one weight per sample) or D - 1 (one per interval, EG3D's ray marcher); W >= 3. Computed
    without gradients. det: evenly spaced u (sorted output); else u ~ U[0, 1) from `generator`.
    """
    with torch.no_grad():
        n, r, d = depths.shape[:3]
        depths = depths.reshape(n * r, d)
        weights = weights.reshape(n * r, -1).to(depths.dtype)
        if weights.shape[1] not in (d, d - 1) or weights.shape[1] < 3:
            raise ValueError(f'sample_importance() needs D or D - 1 (>= 3) weights per ray for D = {d} depths, '
                             f'got {weights.shape[1]}.')
        smoothed = smooth_weights(weights)
        mids = 0.5 * (depths[:, :-1] + depths[:, 1:])
        samples = sample_pdf(mids, smoothed[:, 1:-1], n_importance, det=det, eps=eps, generator=generator)
    return samples.detach().reshape(n, r, n_importance, 1)

# ----------------------------------------------------------------------------------------------
