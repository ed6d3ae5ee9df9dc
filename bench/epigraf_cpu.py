"""CPU benchmark of one EpiGRAF training step (training/networks_epigraf.py, training.loss.EpiGRAFLoss): patch-wise
against full-image, and against the official algorithm's step, in the same run.

The baseline renders with EpiGRAF's algorithm written out step by step (universome/epigraf
src/training/rendering.py and networks_epigraf.py: SynthesisNetwork.forward) on *our* generator's
tensors, unchunked:
- its NDC ray grid x = linspace(-1, 1) over the columns, y = linspace(1, -1) over the rows, remapped
  into the patch as (x + 1) s - 1 + 2 o; directions normalize(x, y, -1 / tan(fov / 2));
- its look-at cam2world of (yaw, pitch) at its radius (origin r (sin p cos y, cos p, sin p sin y),
  up +y, rotation columns (-left, up, -forward)); points o + t d for `num_ray_steps` t in
  linspace(ray_start, ray_end), pi-GAN's stratified jitter in training;
- the tri-plane lookup: points / cube_scale, planes (x, y), (x, z), (y, z), one grid_sample of the
  [N * 3, C, H, W] planes (bilinear, align_corners=True), the mean over the planes, then the
  TriPlaneMLP's layers as weight * gain products with lrelu * sqrt(2);
- with bg_model.type 'plane': the decoder's last 3 channels resized to the image (bilinear,
  align_corners=True), cut to the patch by EpiGRAF's extract_patches, added behind with the final
  transmittance, the last delta then 1e-3;
- fancy_integration: true deltas, the last 1e10, softplus density (plus the density noise in
  training), alpha, the cumprod transmittance, weights; sample_pdf (NeRF's, searchsorted on the
  cdf, det=False in training) on the mid-points with weights[1:-1] + 1e-5; the fine points
  evaluated alike, both sets concatenated, sorted by torch.sort and gathered, integrated again.
Ours renders with legacy_rays=True (EpiGRAF's grid), so before any timing the two images are
compared in eval mode without jitter and with evenly spaced importance samples (max abs difference
at most `--tolerance`): the columns time the same function.

Record (`"bench": "epigraf_step"`): seconds of one Gmain + one Dmain accumulate_gradients (forward and
backward of G and D, no optimiser step) at batch `--batch`, for:
- `patch`: ours, G rendering `--patch`-pixel patches of the `--resolution` image (scales from EpiGRAF's
  Beta schedule at `--kimg`), D on patches with its stride-1 leading blocks and real patches cut from
  the images;
- `full`: ours without patches (EpiGRAF's training=default): G renders the whole image, D at full size;
- `official_patch`: as `patch`, with G's synthesis replaced by the official algorithm above;
and `patch_vs_full` = full / patch, `speedup_vs_official` = official_patch / patch (medians of
`--repeats` rounds run in alternating order, after one warm-up each). Prints one JSON object.

    python bench/epigraf_cpu.py           # 128x128 images, 32x32 patches, 64x64 tri-planes: about a minute
    python bench/epigraf_cpu.py --tiny    # for the tests: seconds
"""

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from training import cameras  # noqa: E402
from training import networks_epigraf as ne  # noqa: E402
from training.loss import EpiGRAFLoss  # noqa: E402

# ----------------------------------------------------------------------------------------------
# The official algorithm on our tensors (any float dtype; tests/training/test_networks_epigraf.py runs
# it in float64 as its oracle).


def official_rays(n, h, fov, patch=None, pixel_centres=False, dtype=torch.float32):
    """Camera-space unit directions [N, h * h, 3] of EpiGRAF's grid (y up, looking along -z)."""
    if pixel_centres:  # not EpiGRAF's: the pixel centres, to check our physical rays
        steps = (torch.arange(h, dtype=dtype) * 2 + 1) / h - 1
    else:
        steps = torch.linspace(-1, 1, h, dtype=dtype)
    x, y = torch.meshgrid(steps, steps.flip(0), indexing='ij')
    x, y = x.T.flatten().repeat(n, 1), y.T.flatten().repeat(n, 1)
    if patch is not None:
        scales, offsets = (t.to(dtype) for t in patch)
        x = (x + 1) * scales[:, :1] - 1 + offsets[:, :1] * 2
        y = (y + 1) * scales[:, 1:] - 1 + offsets[:, 1:] * 2
    z = -torch.ones_like(x) / math.tan(math.radians(fov) / 2)
    d = torch.stack([x, y, z], dim=2)
    return d / d.norm(dim=2, keepdim=True)


def official_cam2world(camera_angles, radius, dtype=torch.float32):
    """(rotation [N, 3, 3], origin [N, 3]) of EpiGRAF's compute_cam2world_matrix."""
    yaw, pitch = camera_angles[:, :1].to(dtype), camera_angles[:, 1:2].to(dtype).clamp(1e-5, math.pi - 1e-5)
    origin = radius * torch.cat([pitch.sin() * yaw.cos(), pitch.cos(), pitch.sin() * yaw.sin()], dim=1)
    forward = -origin / origin.norm(dim=1, keepdim=True)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=dtype).expand_as(forward)
    left = torch.cross(up, forward, dim=-1)
    left = left / left.norm(dim=1, keepdim=True)
    up = torch.cross(forward, left, dim=-1)
    up = up / up.norm(dim=1, keepdim=True)
    return torch.stack([-left, up, -forward], dim=-1), origin


def official_field(G, planes, points):
    cfg = G.synthesis.cfg
    n, m, _ = points.shape
    coords = points / cfg.dataset.cube_scale
    grid = torch.stack([coords[..., [0, 1]], coords[..., [0, 2]], coords[..., [1, 2]]], dim=1).reshape(n * 3, 1, m, 2)
    c = planes.shape[1] // 3
    x = F.grid_sample(planes.to(points.dtype).reshape(n * 3, c, *planes.shape[2:]), grid, mode='bilinear',
                      align_corners=True)
    x = x.reshape(n, 3, c, m).permute(0, 1, 3, 2).mean(dim=1)
    layers = list(G.synthesis.tri_plane_mlp.model)
    for index, layer in enumerate(layers):
        x = x @ (layer.weight.to(x.dtype) / math.sqrt(layer.in_features)).T + layer.bias.to(x.dtype)
        if index < len(layers) - 1:
            x = F.leaky_relu(x, 0.2) * math.sqrt(2)
    return x


def official_integration(rgb_sigma, z, noise_std=0.0, use_inf_depth=True):
    deltas = torch.cat([z[:, :, 1:] - z[:, :, :-1], (1e10 if use_inf_depth else 1e-3) * torch.ones_like(z[:, :, :1])],
                       dim=2)
    sigmas = rgb_sigma[..., -1:]
    if noise_std > 0:
        sigmas = sigmas + noise_std * torch.randn_like(sigmas)
    alphas = 1 - torch.exp(-deltas * F.softplus(sigmas))
    t = torch.cumprod(1 - alphas + 1e-10, dim=2)
    t = torch.cat([torch.ones_like(t[:, :, :1]), t], dim=2)[:, :, :-1]
    weights = alphas * t
    return (weights * rgb_sigma[..., :-1]).sum(2), (weights * z).sum(2), weights, t[:, :, -1]


def official_patch_background(bg, patch, h):
    """EpiGRAF's extract_patches: grid_sample(align_corners=True) at compute_patch_coords (y up, then flipped)."""
    n = bg.shape[0]
    row = torch.linspace(-1, 1, h, dtype=bg.dtype)
    coords = torch.stack([row.view(1, -1).repeat(h, 1), -row.view(1, -1).repeat(h, 1).t()], dim=2).repeat(n, 1, 1, 1)
    scales, offsets = (t.to(bg.dtype) for t in patch)
    coords = (coords + 1) * scales.view(n, 1, 1, 2) - 1 + offsets.view(n, 1, 1, 2) * 2
    coords[..., 1] = -coords[..., 1]
    return F.grid_sample(bg, coords, mode='bilinear', align_corners=True)


def official_sample_pdf(bins, weights, n_importance, det=True, eps=1e-5):
    rows, k = weights.shape
    weights = weights + eps
    cdf = torch.cumsum(weights / weights.sum(-1, keepdim=True), -1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1)
    if det:
        u = torch.linspace(0, 1, n_importance, dtype=cdf.dtype).expand(rows, n_importance).contiguous()
    else:
        u = torch.rand(rows, n_importance, dtype=cdf.dtype)
    inds = torch.searchsorted(cdf, u)
    below, above = torch.clamp_min(inds - 1, 0), torch.clamp_max(inds, k)
    sampled = torch.stack([below, above], -1).view(rows, 2 * n_importance)
    cdf_g = torch.gather(cdf, 1, sampled).view(rows, n_importance, 2)
    bins_g = torch.gather(bins, 1, sampled).view(rows, n_importance, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


def _perturb(z):
    mids = 0.5 * (z[:, :, 1:] + z[:, :, :-1])
    upper, lower = torch.cat([mids, z[:, :, -1:]], dim=2), torch.cat([z[:, :, :1], mids], dim=2)
    return lower + (upper - lower) * torch.rand_like(z)


def official_render(G, ws, camera_angles, h, patch=None, pixel_centres=False, return_depth=False, dtype=torch.float64,
                    training=False, noise_std=0.0):
    """EpiGRAF's SynthesisNetwork.forward on G's tensors: the image [N, 3, h, h] (depth [N, 1, h, h])."""
    cfg = G.synthesis.cfg
    cam = cfg.dataset.camera
    n, steps = len(ws), cfg.num_ray_steps
    out = G.synthesis.tri_plane_decoder(ws[:, :G.synthesis.tri_plane_decoder.num_ws])
    plane_bg = cfg.bg_model.type == 'plane'
    inf_depth = cfg.bg_model.type is None
    planes, bg = (out[:, :-G.img_channels], out[:, -G.img_channels:]) if plane_bg else (out, None)
    if plane_bg:
        bg = F.interpolate(bg.to(dtype), size=(G.img_resolution, G.img_resolution), mode='bilinear', align_corners=True)
        if patch is not None:
            bg = official_patch_background(bg, patch, h)
        bg = bg.reshape(n, G.img_channels, h * h).permute(0, 2, 1)
    d_cam = official_rays(n, h, cam.fov, patch, pixel_centres, dtype)
    rotation, origin = official_cam2world(camera_angles, cam.radius, dtype)
    d = d_cam @ rotation.transpose(1, 2)                                      # [N, R, 3]
    o = origin.unsqueeze(1).expand_as(d)
    z = torch.linspace(cam.ray_start, cam.ray_end, steps, dtype=dtype).reshape(1, 1, steps, 1).repeat(n, h * h, 1, 1)
    if training:
        z = _perturb(z)
    coarse = official_field(G, planes, (o.unsqueeze(2) + d.unsqueeze(2) * z).reshape(n, -1, 3)).reshape(n, h * h, steps, 4)
    _, _, weights, _ = official_integration(coarse, z, noise_std, inf_depth)
    weights = weights.reshape(n * h * h, steps) + 1e-5
    zf = z.reshape(n * h * h, steps)
    fine_z = official_sample_pdf(0.5 * (zf[:, :-1] + zf[:, 1:]), weights[:, 1:-1], steps, det=not training)
    fine_z = fine_z.detach().reshape(n, h * h, steps, 1)
    fine = official_field(G, planes, (o.unsqueeze(2) + d.unsqueeze(2) * fine_z).reshape(n, -1, 3)).reshape(n, h * h, steps, 4)
    all_out, all_z = torch.cat([fine, coarse], 2), torch.cat([fine_z, z], 2)
    _, order = torch.sort(all_z, dim=2)
    colour, depth, _, passed = official_integration(all_out.gather(2, order.expand(-1, -1, -1, 4)),
                                                    all_z.gather(2, order), noise_std, inf_depth)
    if plane_bg:
        colour = colour + bg * passed
    out = depth if return_depth else colour
    return out.reshape(n, h, h, -1).permute(0, 3, 1, 2)

# ----------------------------------------------------------------------------------------------


def config(resolution, patch, triplane, channels, steps):
    return {
        'patch': {'enabled': patch is not None, 'patch_params_cond': patch is not None,
                  'resolution': patch or resolution, 'mbstd_group_size': 2},
        'dataset': {'camera': {'fov': 12.0, 'ray_start': 0.88, 'ray_end': 1.12, 'radius': 1.0}, 'cube_scale': 0.2,
                    'white_back': False, 'last_back': False},
        'camera_cond': False, 'camera_cond_drop_p': 0.0, 'backbone': 'stylegan2', 'num_ray_steps': steps,
        'clamp_mode': 'softplus', 'nerf_noise_std_init': 1.0, 'nerf_noise_kimg_growth': 5000, 'density_shift': 0.0,
        'use_noise': True, 'tri_plane': {'res': triplane, 'feat_dim': channels, 'fp32': True,
                                         'mlp': {'n_layers': 2, 'hid_dim': 64}},
        'bg_model': {'type': None},
    }


def build(args, patch):
    torch.manual_seed(0)
    cfg = config(args.resolution, patch, args.triplane, args.channels, args.steps)
    G = ne.Generator(cfg, z_dim=64, c_dim=0, w_dim=64, img_resolution=args.resolution, img_channels=3,
                     legacy_rays=True, mapping_kwargs=dict(num_layers=2), channel_base=args.cbase, channel_max=args.cmax)
    extra = 0 if patch is None else int(round(math.log2(args.resolution / patch)))
    D_cfg = {'patch': {'patch_params_cond': patch is not None}, 'num_additional_start_blocks': extra,
             'camera_cond': True, 'camera_cond_drop_p': 0.5, 'hyper_mod': patch is not None}
    D = ne.Discriminator(D_cfg, c_dim=0, img_resolution=patch or args.resolution, img_channels=3,
                         channel_base=args.cbase // 2, channel_max=args.cmax, epilogue_kwargs={'mbstd_group_size': 2})
    patch_kwargs = dict(enabled=patch is not None, distribution='beta', min_scale_trg=(patch or 1) / args.resolution,
                        max_scale=1.0, anneal_kimg=10000, alpha=1.0, beta_val_start=0.001, beta_val_end=0.8,
                        resolution=patch or args.resolution, mbstd_group_size=2)
    loss = EpiGRAFLoss('cpu', G.train(), D.train(), r1_gamma=0.1, patch_kwargs=patch_kwargs,
                       blur_init_sigma=10, blur_fade_kimg=200)
    return G, D, loss


def use_official_synthesis(G):
    """Swap G.synthesis's forward for the official algorithm (what the loss calls in training)."""
    synthesis = G.synthesis

    def forward(ws, c=None, patch=None, update_emas=False, **_):
        angles = cameras.epigraf_angles_from_label(c)
        h = synthesis.train_resolution if patch is not None else synthesis.img_resolution
        return official_render(G, ws, angles, h, patch=patch, dtype=torch.float32, training=synthesis.training,
                               noise_std=synthesis.nerf_noise_std if synthesis.training else 0.0)
    synthesis.forward = forward


def inputs(args, seed=1):
    gen = torch.Generator().manual_seed(seed)
    angles = torch.stack([torch.randn(args.batch, generator=gen) * 0.3,
                          math.pi / 2 + torch.randn(args.batch, generator=gen) * 0.15, torch.zeros(args.batch)], dim=1)
    c = cameras.epigraf_angles_to_label(angles, 12.0)
    reals = torch.rand(args.batch, 3, args.resolution, args.resolution, generator=gen) * 2 - 1
    return c, angles, reals, torch.randn(args.batch, 64, generator=gen)


def step(G, D, loss, c, reals, z, kimg):
    for phase, net in (('Gmain', G), ('Dmain', D)):
        net.requires_grad_(True)
        loss.accumulate_gradients(phase, reals, c, z, c, 1.0, cur_nimg=int(kimg * 1000))
        net.requires_grad_(False)
        for p in net.parameters():
            p.grad = None


def check_same_function(args):
    G, _, _ = build(args, args.patch)
    official, _, _ = build(args, args.patch)
    use_official_synthesis(official)
    c, angles, _, z = inputs(args)
    G.eval()
    official.eval()
    with torch.no_grad():
        ws = G.mapping(z, c)
        ours = G.synthesis(ws, c=c, jitter=False, det=True)
        ref = official_render(official, ws, angles, args.resolution, dtype=torch.float32)
    diff = float((ours - ref).abs().max())
    if not diff <= args.tolerance:
        raise SystemExit(f'epigraf_cpu.py: our render differs from the official algorithm\'s by {diff:.3g}, above '
                         f'--tolerance={args.tolerance}; not timing different functions.')
    return diff


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--resolution', type=int, default=128, help='image size (128)')
    parser.add_argument('--patch', type=int, default=32, help='patch size (32)')
    parser.add_argument('--triplane', type=int, default=64, help='tri-plane resolution (64)')
    parser.add_argument('--channels', type=int, default=16, help='tri-plane features (16)')
    parser.add_argument('--steps', type=int, default=24, help='coarse (= fine) samples per ray (24)')
    parser.add_argument('--cbase', type=int, default=4096, help='channel base (4096)')
    parser.add_argument('--cmax', type=int, default=128, help='channel max (128)')
    parser.add_argument('--batch', type=int, default=4, help='images per step (4)')
    parser.add_argument('--kimg', type=float, default=5000, help='progress for the patch-scale schedule (5000)')
    parser.add_argument('--repeats', type=int, default=3, help='timed rounds, each runs all three (3)')
    parser.add_argument('--tolerance', type=float, default=1e-4, help='max abs image difference allowed (1e-4)')
    parser.add_argument('--threads', type=int, default=os.cpu_count() or 1, help='torch threads (default: all cores)')
    parser.add_argument('--tiny', action='store_true', help='16x16 images, 8x8 patches, 16x16 tri-planes (for tests)')
    args = parser.parse_args()
    if args.tiny:
        args.resolution, args.patch, args.triplane, args.channels, args.steps = 16, 8, 16, 4, 6
        args.cbase, args.cmax, args.repeats = 256, 16, 1
    torch.set_num_threads(args.threads)
    diff = check_same_function(args)
    columns = {'patch': build(args, args.patch), 'full': build(args, None), 'official_patch': build(args, args.patch)}
    use_official_synthesis(columns['official_patch'][0])
    c, _, reals, z = inputs(args)
    times = {name: [] for name in columns}
    for name, (G, D, loss) in columns.items():  # warm-up
        torch.manual_seed(0)
        step(G, D, loss, c, reals, z, args.kimg)
    for round_index in range(args.repeats):
        order = list(columns.items())
        for name, (G, D, loss) in (order if round_index % 2 == 0 else order[::-1]):
            torch.manual_seed(round_index)
            start = time.perf_counter()
            step(G, D, loss, copy.copy(c), reals, z, args.kimg)
            times[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    print(json.dumps(dict(
        bench='epigraf_step', resolution=args.resolution, patch=args.patch, triplane=args.triplane, steps=args.steps,
        batch=args.batch, kimg=args.kimg, repeats=args.repeats, seconds={k: round(v, 4) for k, v in seconds.items()},
        patch_vs_full=round(seconds['full'] / seconds['patch'], 3),
        speedup_vs_official=round(seconds['official_patch'] / seconds['patch'], 3),
        max_abs_diff=float(f'{diff:.3g}'), torch_threads=torch.get_num_threads())), flush=True)


if __name__ == '__main__':
    main()
