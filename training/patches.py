"""EpiGRAF's patch-wise training: the patch (scale, offset) distribution and real patches cut from images.

Facts of the official code (universome/epigraf src/training/training_utils.py, loss.py):
- a patch is a square window of the image: scale s (its side, in image units) and offset o (its
  corner, in [0, 1 - s]^2); EpiGRAF's y offset counts from the bottom edge (its grid has y up), see
  training.networks_epigraf.patch_uv;
- the scale of each mini-batch-std group of `group_size` images is drawn once: 'beta' (the default),
  s = min_scale + (max_scale - min_scale) Beta(alpha, beta) with beta annealed linearly from
  beta_val_start to beta_val_end over anneal_kimg and min_scale = min_scale_trg; 'uniform',
  U[min_scale, max_scale] with min_scale annealed linearly from max_scale down to min_scale_trg;
  'discrete_uniform', a uniform choice among the `discrete_support` values in [min_scale, max_scale];
  the offsets U[0, 1 - s] per axis, also per group;
- real patches are resampled bilinearly from the whole real image at their own draw of the same
  distribution, with no anti-aliasing (a whole-image patch of a 512 image is an 8x bilinear
  decimation), at EpiGRAF's grid (align_corners=True) or at pixel centres (our physical rays).

All draws use torch's generator of the tensors' device (the loop's RNG state, for exact resume).
"""

import torch

from training.networks_epigraf import extract_patches  # noqa: F401 (EpiGRAF's real patches: defined with G's ray grid)

DISTRIBUTIONS = ('beta', 'uniform', 'discrete_uniform')


def linear_schedule(cur_kimg, start, end, period_kimg):
    """EpiGRAF's linear_schedule: start at 0 kimg, end from period_kimg on, linear in between."""
    if cur_kimg >= period_kimg:
        return end
    if cur_kimg <= 0:
        return start
    return start + (end - start) * cur_kimg / period_kimg


def scale_schedule(patch, cur_kimg):
    """(min_scale, beta) of the scale distribution at cur_kimg (beta is None but for 'beta')."""
    if patch['distribution'] == 'beta':
        return patch['min_scale_trg'], linear_schedule(cur_kimg, patch['beta_val_start'], patch['beta_val_end'],
                                                       patch['anneal_kimg'])
    if patch['distribution'] in ('uniform', 'discrete_uniform'):
        return linear_schedule(cur_kimg, patch['max_scale'], patch['min_scale_trg'], patch['anneal_kimg']), None
    raise ValueError(f"Unknown patch distribution {patch['distribution']!r}; choose one of {', '.join(DISTRIBUTIONS)}.")


def sample_patch_params(batch_size, patch, cur_kimg, device, group_size=1):
    """(scales [N, 2], offsets [N, 2]) of EpiGRAF's patches; one draw per group of `group_size` images."""
    group_size = max(1, min(group_size, batch_size))
    if batch_size % group_size != 0:
        raise ValueError(f'{batch_size} images do not split into patch groups of {group_size}.')
    groups = batch_size // group_size
    min_scale, beta = scale_schedule(patch, cur_kimg)
    max_scale = patch['max_scale']
    if patch['distribution'] == 'beta':
        draw = torch.distributions.Beta(torch.tensor(float(patch['alpha']), device=device),
                                        torch.tensor(float(beta), device=device)).sample([groups])
        scales = min_scale + (max_scale - min_scale) * draw
    elif patch['distribution'] == 'uniform':
        scales = torch.rand(groups, device=device) * (max_scale - min_scale) + min_scale
    else:
        support = torch.tensor([s for s in patch['discrete_support'] if min_scale <= s <= max_scale], device=device)
        scales = support[torch.randint(len(support), (groups,), device=device)]
    scales = scales.float().unsqueeze(1).repeat(1, 2)
    offsets = torch.rand(scales.shape, device=device) * (1 - scales)
    return scales.repeat_interleave(group_size, dim=0), offsets.repeat_interleave(group_size, dim=0)
