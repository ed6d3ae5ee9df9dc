"""CPU benchmark of the EG3D tri-plane generator (training/networks_triplane.py) against the official EG3D algorithm, same run.

The baseline below re-implements the official EG3D forward (NVlabs/eg3d: training/triplane.py and
volumetric_rendering/{renderer, ray_sampler, ray_marcher}.py) step by step on *our* generator's
tensors, unchunked, on all rays at once:
- ws = backbone.mapping(z, c * c_scale); planes = backbone.synthesis(ws) viewed [N, 3, 32, H, W];
- rays through the pixel centres: u = (j + .5) / res, v = (i + .5) / res, x = (u - cx + cy sk / fy
  - sk v / fy) / fx, y = (v - cy) / fy, z = 1; world = cam2world @ (x, y, 1, 1), directions =
  normalize(world - origin), origins repeated per ray;
- coarse depths linspace(ray_start, ray_end, D) per ray, deterministic variant (zero jitter);
  points o + t d as [N, R * D, 3], directions expanded alike; sample_from_planes: coordinates times
  2 / box_warp, projected by coords @ inv(P) for EG3D's three plane matrices, first two components,
  one grid_sample of the [N * 3, 32, H, W] planes on a [N * 3, 1, M, 2] grid (bilinear, zeros,
  align_corners=False), permuted to [N, 3, M, 32]; the OSGDecoder: mean over planes, FC 32->64
  (weight * gain, addmm), softplus, FC 64->33; sigma = out[..., :1], rgb = sigmoid(out[..., 1:]) *
  1.002 - 0.001;
- MipRayMarcher2 on the coarse samples, its weights [N * R, D - 1] smoothed (max_pool1d(2, 1, 1),
  avg_pool1d(2, 1), + 0.01), sample_pdf on the coarse mid-points with weights[:, 1:-1] (det: u =
  linspace(0, 1, n)), the fine samples evaluated like the coarse, coarse + fine merged by torch.sort
  along depth and gather, marched again (depth clamped to the range of all samples);
- feature image [N, 32, res, res], rgb = its first 3 channels, then the super-resolution module.
The backbone's StyleGAN2 synthesis network and the super-resolution blocks (StyleGAN2 synthesis
blocks) run in the baseline column under `generator_cpu.official_ops()`, which swaps in the official
StyleGAN2 modulated convolution and the official upfirdn2d algorithm (materialised per-sample weights;
zero-stuffed, padded, depthwise-convolved images), as bench/generator_cpu.py's StyleGAN2 baseline
does: the baseline is then the official algorithm end to end, not only in its renderer. The record
also gives per-stage times (mapping + backbone, rendering, super-resolution), so the renderer's own
ratio (`render_speedup`) is seen apart from the StyleGAN2 parts.
Before any timing the two forwards are compared ('image', 'image_raw', 'image_depth': max abs diff at
most `--tolerance`), so the two columns time the same function.

Speed (`"bench": "triplane_speed"`): G(z, c) forward (no_grad, eval, float32) in images/s at batch 2,
EG3D's architecture with SuperresolutionHybrid4X to 256 (neural rendering resolution 64, 48 + 48
samples, ray_start 2.25, ray_end 3.3, box_warp 1, backbone channel_base 32768, channel_max 512,
z_dim = w_dim = 512, 2 mapping layers, no float16, conv_clamp None), ours in its deterministic
mode (rendering_kwargs['jitter'] = False), cameras on EG3D's FFHQ sphere (radius 2.7). One warm-up
forward each (compared), then `--repeats` timed rounds of both in alternating order; `speedup` =
median official time / median our time; `meets_speed_goal`: speedup >= 1.5 (the issue's goal).

Memory (`"bench": "triplane_memory"`, one record per neural rendering resolution): the peak RSS
increase of one no-grad forward of the renderer alone (tri-plane field with G's decoder on planes
computed beforehand) at batch 1, ours (G.renderer: chunks of `ray_chunk` rays) against the
unchunked official renderer, each point in a fresh subprocess (free heap back to the OS, high-water
mark reset through /proc/self/clear_refs; see bench/generator_cpu.py). Each worker also returns a
coarse sample of its render, so ours and the official are compared at every size too.

Timings are only as good as the machine is quiet: `cpu_s_per_wall_s` well below `torch_threads`
means other processes held the cores; `OMP_WAIT_POLICY=PASSIVE` (recorded) avoids the worst of
OpenMP's busy-waiting under contention. Linux only (reads /proc). Prints one JSON object per record.

    python bench/triplane_cpu.py           # full size: about 2.5 minutes on 2 shared cores (Makefile's bench)
    python bench/triplane_cpu.py --tiny    # tiny network, 8x8 rays, chunks of 40 rays, about 20 s
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path[:0] = [p for p in (BENCH_DIR, REPO_ROOT) if p not in sys.path]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from generator_cpu import official_ops, peak_rss_increase, timed  # noqa: E402  (StyleGAN2 baseline, memory method)
from training import cameras, networks_triplane  # noqa: E402

REQUIRED_SPEEDUP = 1.5  # the goal: at least 1.5x the official speed

# ----------------------------------------------------------------------------------------------
# Configurations.


def rendering_kwargs(tiny=False):
    """EG3D's rendering options (the keys TriPlaneGenerator reads), deterministic, SuperresolutionHybrid4X."""
    return dict(
        image_resolution=32 if tiny else 256, disparity_space_sampling=False, clamp_mode='softplus',
        superresolution_module='training.superresolution.SuperresolutionHybrid4X', c_gen_conditioning_zero=False,
        gpc_reg_prob=0.5, c_scale=1.0, superresolution_noise_mode='none', density_reg=0.25, density_reg_p_dist=0.004,
        reg_type='l1', decoder_lr_mul=1.0, sr_antialias=True,
        depth_resolution=6 if tiny else 48, depth_resolution_importance=6 if tiny else 48,
        ray_start=2.25, ray_end=3.3, box_warp=1.0, avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2], jitter=False)


def generator_kwargs(tiny=False):
    """The EG3D architecture at 256 (see the module docstring); tiny: 16x16 planes, 32x32 output, small channels."""
    kwargs = dict(z_dim=512, c_dim=25, w_dim=512, img_resolution=256, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None, sr_num_fp16_res=0,
                  rendering_kwargs=rendering_kwargs(tiny))
    if tiny:
        kwargs.update(z_dim=16, w_dim=16, img_resolution=32, channel_base=256, channel_max=16,
                      sr_kwargs=dict(block_channels=[16, 16]), triplane_resolution=16)
    return kwargs


def build_generator(G_kwargs):
    torch.manual_seed(0)
    return networks_triplane.TriPlaneGenerator(**G_kwargs).eval().requires_grad_(False)


def inputs(G, batch, seed=1):
    """Latents and cameras on EG3D's FFHQ sphere, a little off the frontal pose."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn([batch, G.z_dim], generator=g)
    yaw = (torch.rand([batch], generator=g) - 0.5) * 0.6
    pitch = (torch.rand([batch], generator=g) - 0.5) * 0.4
    return z, cameras.lookat_labels(yaw, pitch)

# ----------------------------------------------------------------------------------------------
# The official algorithm, on our tensors.


def official_rays(cam2world, intrinsics, resolution):
    """EG3D's RaySampler: (origins, directions) [N, resolution ** 2, 3]."""
    n = cam2world.shape[0]
    rows, cols = torch.meshgrid(torch.arange(resolution, dtype=torch.float32),
                                torch.arange(resolution, dtype=torch.float32), indexing='ij')
    # The column is the first image coordinate (EG3D flips its 'ij' grid).
    u = ((cols.reshape(-1) + 0.5) / resolution).unsqueeze(0).repeat(n, 1)
    v = ((rows.reshape(-1) + 0.5) / resolution).unsqueeze(0).repeat(n, 1)
    fx, fy = intrinsics[:, 0, 0].unsqueeze(-1), intrinsics[:, 1, 1].unsqueeze(-1)
    cx, cy, sk = intrinsics[:, 0, 2].unsqueeze(-1), intrinsics[:, 1, 2].unsqueeze(-1), intrinsics[:, 0, 1].unsqueeze(-1)
    z_cam = torch.ones_like(u)
    x_lift = (u - cx + cy * sk / fy - sk * v / fy) / fx * z_cam
    y_lift = (v - cy) / fy * z_cam
    cam_points = torch.stack([x_lift, y_lift, z_cam, torch.ones_like(z_cam)], dim=-1)       # [N, R, 4]
    world = torch.bmm(cam2world, cam_points.permute(0, 2, 1)).permute(0, 2, 1)[:, :, :3]
    origin = cam2world[:, :3, 3]
    dirs = F.normalize(world - origin[:, None, :], dim=2)
    return origin.unsqueeze(1).repeat(1, dirs.shape[1], 1), dirs


def official_plane_axes():
    return torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                         [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                         [[0, 0, 1], [1, 0, 0], [0, 1, 0]]], dtype=torch.float32)


def official_sample_from_planes(planes, coordinates, box_warp):
    """[N, 3, M, C] features of planes [N, 3, C, H, W] at points [N, M, 3]."""
    n, p, c, h, w = planes.shape
    _, m, _ = coordinates.shape
    axes = official_plane_axes()
    coordinates = (2 / box_warp) * coordinates
    # project_onto_planes: each point times the inverse of each plane matrix, first two components.
    points = coordinates.unsqueeze(1).expand(-1, p, -1, -1).reshape(n * p, m, 3)
    inv_axes = torch.linalg.inv(axes).unsqueeze(0).expand(n, -1, -1, -1).reshape(n * p, 3, 3)
    grid = torch.bmm(points, inv_axes)[..., :2].unsqueeze(1)                                # [N * 3, 1, M, 2]
    out = F.grid_sample(planes.reshape(n * p, c, h, w), grid.float(), mode='bilinear', padding_mode='zeros',
                        align_corners=False)
    return out.permute(0, 3, 2, 1).reshape(n, p, m, c)


def official_decoder(decoder, features):
    """The OSGDecoder (no directions): {'rgb', 'sigma'} from features [N, 3, M, C]."""
    fc0, fc1 = decoder.net[0], decoder.net[2]
    x = features.mean(1)
    n, m, c = x.shape
    x = x.view(n * m, c)
    x = torch.addmm((fc0.bias * fc0.bias_gain).unsqueeze(0), x, (fc0.weight * fc0.weight_gain).t())
    x = F.softplus(x)
    x = torch.addmm((fc1.bias * fc1.bias_gain).unsqueeze(0), x, (fc1.weight * fc1.weight_gain).t())
    x = x.view(n, m, -1)
    return {'rgb': torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001, 'sigma': x[..., 0:1]}


def official_run_model(planes, decoder, coordinates, directions, options):
    return official_decoder(decoder, official_sample_from_planes(planes, coordinates, options['box_warp']))


def official_march(colors, densities, depths):
    """MipRayMarcher2 (softplus, no white background): (rgb [N, R, C] in [-1, 1], depth, weights)."""
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = (densities[:, :, :-1] + densities[:, :, 1:]) / 2
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    densities_mid = F.softplus(densities_mid - 1)
    alpha = 1 - torch.exp(-densities_mid * deltas)
    alpha_shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2)
    weights = alpha * torch.cumprod(alpha_shifted, -2)[:, :, :-1]
    rgb = torch.sum(weights * colors_mid, -2)
    weight_total = weights.sum(2)
    depth = torch.sum(weights * depths_mid, -2) / weight_total
    depth = torch.nan_to_num(depth, float('inf'))
    depth = torch.clamp(depth, torch.min(depths), torch.max(depths))
    return rgb * 2 - 1, depth, weights


def official_sample_pdf(bins, weights, n_importance, eps=1e-5):
    """Inverse-CDF samples, deterministic u = linspace(0, 1, n)."""
    rows, k = weights.shape
    weights = weights + eps
    pdf = weights / torch.sum(weights, -1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)
    u = torch.linspace(0, 1, n_importance).expand(rows, n_importance).contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    below = torch.clamp_min(inds - 1, 0)
    above = torch.clamp_max(inds, k)
    both = torch.stack([below, above], -1).view(rows, 2 * n_importance)
    cdf_g = torch.gather(cdf, 1, both).view(rows, n_importance, 2)
    bins_g = torch.gather(bins, 1, both).view(rows, n_importance, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom[denom < eps] = 1
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


def official_sample_importance(depths, weights, n_importance):
    n, r, d, _ = depths.shape
    depths = depths.reshape(n * r, d)
    weights = weights.reshape(n * r, -1)
    weights = F.max_pool1d(weights.unsqueeze(1).float(), 2, 1, padding=1)
    weights = F.avg_pool1d(weights, 2, 1).squeeze(1) + 0.01
    mids = 0.5 * (depths[:, :-1] + depths[:, 1:])
    return official_sample_pdf(mids, weights[:, 1:-1], n_importance).detach().reshape(n, r, n_importance, 1)


def official_unify(depths1, colors1, densities1, depths2, colors2, densities2):
    depths = torch.cat([depths1, depths2], dim=-2)
    colors = torch.cat([colors1, colors2], dim=-2)
    densities = torch.cat([densities1, densities2], dim=-2)
    _, order = torch.sort(depths, dim=-2)
    depths = torch.gather(depths, -2, order)
    colors = torch.gather(colors, -2, order.expand(-1, -1, -1, colors.shape[-1]))
    densities = torch.gather(densities, -2, order.expand(-1, -1, -1, 1))
    return depths, colors, densities


def official_render(planes, decoder, origins, dirs, options):
    """EG3D's ImportanceRenderer.forward, fixed bounds, deterministic: (features, depth, weight sum)."""
    n, r, _ = origins.shape
    d_coarse, d_fine = options['depth_resolution'], options['depth_resolution_importance']
    depths = torch.linspace(options['ray_start'], options['ray_end'], d_coarse).reshape(1, 1, d_coarse, 1).repeat(n, r, 1, 1)
    delta = (options['ray_end'] - options['ray_start']) / (d_coarse - 1)
    depths = depths + torch.zeros_like(depths) * delta  # the stratified jitter, zero in the deterministic variant

    def evaluate(depths):
        s = depths.shape[-2]
        points = (origins.unsqueeze(-2) + depths * dirs.unsqueeze(-2)).reshape(n, -1, 3)
        directions = dirs.unsqueeze(-2).expand(-1, -1, s, -1).reshape(n, -1, 3)
        out = official_run_model(planes, decoder, points, directions, options)
        return out['rgb'].reshape(n, r, s, out['rgb'].shape[-1]), out['sigma'].reshape(n, r, s, 1)

    colors, densities = evaluate(depths)
    _, _, weights = official_march(colors, densities, depths)
    fine_depths = official_sample_importance(depths, weights, d_fine)
    fine_colors, fine_densities = evaluate(fine_depths)
    all_depths, all_colors, all_densities = official_unify(depths, colors, densities, fine_depths, fine_colors,
                                                           fine_densities)
    rgb, depth, weights = official_march(all_colors, all_densities, all_depths)
    return rgb, depth, weights.sum(2)


def official_generator(G, z, c, stage_times=None):
    """EG3D's TriPlaneGenerator.forward (deterministic renderer), backbone and SR under official_ops()."""
    stage_times = {} if stage_times is None else stage_times
    options = G.rendering_kwargs
    res = G.neural_rendering_resolution
    t0 = time.perf_counter()
    with official_ops():
        ws = G.backbone.mapping(z, c * options.get('c_scale', 0))
        planes = G.backbone.synthesis(ws, noise_mode='const')
    planes = planes.view(len(planes), 3, G.triplane_channels, planes.shape[-2], planes.shape[-1])
    t1 = time.perf_counter()
    origins, dirs = official_rays(c[:, :16].view(-1, 4, 4), c[:, 16:25].view(-1, 3, 3), res)
    features, depth, _ = official_render(planes, G.decoder, origins, dirs, options)
    n = len(z)
    feature_image = features.permute(0, 2, 1).reshape(n, features.shape[-1], res, res).contiguous()
    depth_image = depth.permute(0, 2, 1).reshape(n, 1, res, res)
    rgb_image = feature_image[:, :3]
    t2 = time.perf_counter()
    with official_ops():
        sr_image = G.superresolution(rgb_image, feature_image, ws, noise_mode=options['superresolution_noise_mode'])
    t3 = time.perf_counter()
    for name, t in (('backbone', t1 - t0), ('render', t2 - t1), ('superresolution', t3 - t2)):
        stage_times[name] = stage_times.get(name, 0.0) + t
    return {'image': sr_image, 'image_raw': rgb_image, 'image_depth': depth_image}


@contextlib.contextmanager
def our_stage_timer(G, stage_times):
    """Within the block, G's forwards add wall seconds per stage (backbone incl. mapping, render, superresolution)."""
    handles, starts = [], {}

    def hook(module, name):
        def pre(mod, args):
            starts[name] = time.perf_counter()

        def post(mod, args, out):
            stage_times[name] = stage_times.get(name, 0.0) + time.perf_counter() - starts.pop(name)
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    hook(G.backbone.mapping, 'mapping')
    hook(G.backbone.synthesis, 'backbone')
    hook(G.ray_sampler, 'render')
    hook(G.renderer, 'render2')
    hook(G.superresolution, 'superresolution')
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        stage_times['backbone'] = stage_times.get('backbone', 0.0) + stage_times.pop('mapping', 0.0)
        stage_times['render'] = stage_times.get('render', 0.0) + stage_times.pop('render2', 0.0)

# ----------------------------------------------------------------------------------------------
# Helpers.


def _sig(v, digits=4):
    return None if v is None else float(f'{v:.{digits}g}')


def _ray_chunk(options):
    """The rays per chunk our renderer uses on the CPU with these rendering options."""
    return options['ray_chunk'] if 'ray_chunk' in options else networks_triplane.rendering.default_ray_chunk('cpu')


def output_diffs(ours, ref):
    """{key: max abs diff} over 'image', 'image_raw', 'image_depth'."""
    return {k: (ours[k] - ref[k]).abs().max().item() for k in ('image', 'image_raw', 'image_depth')}


def stage_record(run):
    times = {}
    total = timed(lambda: run(times))
    times['other'] = max(total - sum(times.values()), 0.0)
    times['total'] = total
    return {k: round(times[k], 4) for k in ('backbone', 'render', 'superresolution', 'other', 'total') if k in times}


def top_ops(fn, top):
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted((e for e in prof.key_averages() if e.key.startswith('aten::')), key=lambda e: -e.self_cpu_time_total)
    return [dict(op=e.key, self_ms=round(e.self_cpu_time_total / 1e3, 1), calls=e.count) for e in events[:top]]

# ----------------------------------------------------------------------------------------------
# Workers (each in a fresh process).


def run_speed(spec):
    load_avg = os.getloadavg()[0]
    G = build_generator(spec['G_kwargs'])
    G.neural_rendering_resolution = spec['nrr']
    z, c = inputs(G, spec['batch'])
    fns = dict(ours=lambda: G(z, c, noise_mode='const'), ref=lambda: official_generator(G, z, c))
    with torch.no_grad():
        out_ours, out_ref = fns['ours'](), fns['ref']()  # warm-up, compared before any timing
        diffs = output_diffs(out_ours, out_ref)
        if not max(diffs.values()) <= spec['tolerance']:
            raise SystemExit(f'ours and the official algorithm differ: {diffs} (> {spec["tolerance"]:g}); '
                             'not timing different functions')
        times = dict(ours=[], ref=[])
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for i in range(spec['repeats']):
            for name in (('ours', 'ref') if i % 2 == 0 else ('ref', 'ours')):
                times[name].append(timed(fns[name]))
        cpu_per_wall = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        ours_stages = stage_record(lambda t: _ours_staged(G, z, c, t))
        ref_stages = stage_record(lambda t: official_generator(G, z, c, stage_times=t))
        profiles = {}
        if spec['profile']:
            profiles = dict(ours_top_ops=top_ops(fns['ours'], spec['profile']),
                            ref_top_ops=top_ops(fns['ref'], spec['profile']))
    t_ours, t_ref = statistics.median(times['ours']), statistics.median(times['ref'])
    ratios = [r / o for o, r in zip(times['ours'], times['ref'])]
    speedup = t_ref / t_ours
    opts = spec['G_kwargs']['rendering_kwargs']
    return dict(
        bench='triplane_speed', img_resolution=spec['G_kwargs']['img_resolution'], neural_rendering_resolution=spec['nrr'],
        depth_resolution=opts['depth_resolution'], depth_resolution_importance=opts['depth_resolution_importance'],
        superresolution_module=opts['superresolution_module'], batch=spec['batch'], dtype='float32',
        ray_chunk=_ray_chunk(opts), G_kwargs=spec['G_kwargs'], torch_threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(), omp_wait_policy=os.environ.get('OMP_WAIT_POLICY'), load_avg_1m=round(load_avg, 2),
        cpu_s_per_wall_s=round(cpu_per_wall, 2), repeats=spec['repeats'],
        ours_fwd_s=round(t_ours, 4), ref_fwd_s=round(t_ref, 4),
        ours_fwd_times_s=[round(t, 4) for t in times['ours']], ref_fwd_times_s=[round(t, 4) for t in times['ref']],
        ours_img_s=_sig(spec['batch'] / t_ours), ref_img_s=_sig(spec['batch'] / t_ref),
        speedup=round(speedup, 3), speedup_rounds_min=round(min(ratios), 3), speedup_rounds_max=round(max(ratios), 3),
        render_speedup=round(ref_stages['render'] / max(ours_stages['render'], 1e-9), 3),
        required_speedup=REQUIRED_SPEEDUP, meets_speed_goal=bool(speedup >= REQUIRED_SPEEDUP),
        ours_stages_s=ours_stages, ref_stages_s=ref_stages,
        max_abs_diff={k: _sig(v, 3) for k, v in diffs.items()}, tolerance=spec['tolerance'], **profiles)


def _ours_staged(G, z, c, times):
    with our_stage_timer(G, times):
        return G(z, c, noise_mode='const')


def run_memory(spec):
    """One (implementation, nrr) point: peak RSS increase of one render of planes computed beforehand."""
    G = build_generator(spec['G_kwargs'])
    options = G.rendering_kwargs
    z, c = inputs(G, 1)
    with torch.no_grad():
        planes = G._planes(G.mapping(z, c), noise_mode='const')
        origins, dirs = official_rays(c[:, :16].view(-1, 4, 4), c[:, 16:25].view(-1, 3, 3), spec['nrr'])
        if spec['impl'] == 'ours':
            render = lambda o, d: G.renderer(planes, G.decoder, o, d, options)
        else:
            render = lambda o, d: official_render(planes, G.decoder, o, d, options)
        render(origins[:, :64], dirs[:, :64])  # warm-up on a few rays: libraries initialised, nothing large kept
        t0 = time.perf_counter()
        (features, depth, _), peak_mb = peak_rss_increase(lambda: render(origins, dirs))
        wall = time.perf_counter() - t0
    step = max(1, features.shape[1] // 64)
    return dict(impl=spec['impl'], nrr=spec['nrr'], rays=features.shape[1], peak_mem_mb=_sig(peak_mb, 5),
                fwd_s=round(wall, 3), sample=torch.cat([features[0, ::step], depth[0, ::step]], -1).flatten().tolist())


def _worker(kind, spec, threads):
    result = subprocess.run([sys.executable, os.path.abspath(__file__), '--threads', str(threads),
                             f'--worker-{kind}', json.dumps(spec)], stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(f'{kind} worker {spec} failed with exit code {result.returncode}')
    return json.loads(result.stdout.strip().splitlines()[-1])


def memory_records(args, G_kwargs):
    for nrr in args.mem_nrr:
        ours = _worker('memory', dict(G_kwargs=G_kwargs, nrr=nrr, impl='ours'), args.threads)
        ref = _worker('memory', dict(G_kwargs=G_kwargs, nrr=nrr, impl='ref'), args.threads)
        diff = float(np.max(np.abs(np.array(ours['sample']) - np.array(ref['sample']))))
        if not diff <= args.tolerance:
            sys.exit(f'nrr {nrr}: ours and the official renderer differ by {diff:.3g} (> {args.tolerance:g})')
        opts = G_kwargs['rendering_kwargs']
        ratio = None
        if ours['peak_mem_mb'] is not None and ref['peak_mem_mb']:
            ratio = round(ours['peak_mem_mb'] / ref['peak_mem_mb'], 3)
        yield dict(bench='triplane_memory', what='renderer alone (planes precomputed), no_grad, batch 1',
                   neural_rendering_resolution=nrr, rays=ours['rays'],
                   samples_per_ray=opts['depth_resolution'] + opts['depth_resolution_importance'],
                   ray_chunk=_ray_chunk(opts), dtype='float32',
                   torch_threads=args.threads, peak_mem_mb=ours['peak_mem_mb'], ref_peak_mem_mb=ref['peak_mem_mb'],
                   mem_ratio=ratio, ours_fwd_s=ours['fwd_s'], ref_fwd_s=ref['fwd_s'], max_abs_diff=_sig(diff, 3))

# ----------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tiny', action='store_true', help='tiny network (16x16 planes, 32x32 output), 8x8 rays')
    parser.add_argument('--parts', nargs='+', choices=['speed', 'memory'], default=['speed', 'memory'])
    parser.add_argument('--batch', type=int, default=2, help='speed: batch size (2)')
    parser.add_argument('--repeats', type=int, default=None, help='speed: timed rounds, each runs both (3)')
    parser.add_argument('--nrr', type=int, default=None, help='speed: neural rendering resolution (64)')
    parser.add_argument('--mem-nrr', type=int, nargs='+', default=None,
                        help='memory: neural rendering resolutions (64 128 256)')
    parser.add_argument('--ray-chunk', type=int, default=None, help="ours: rendering_kwargs['ray_chunk'] (default: ours)")
    parser.add_argument('--profile', type=int, default=0, help='speed: also list the N busiest aten ops of each')
    parser.add_argument('--tolerance', type=float, default=1e-4, help='max abs output difference allowed (1e-4)')
    parser.add_argument('--threads', type=int, default=os.cpu_count() or 1, help='torch threads (default: all cores)')
    parser.add_argument('--worker-speed', default=None, help=argparse.SUPPRESS)
    parser.add_argument('--worker-memory', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.worker_speed is not None:
        print(json.dumps(run_speed(json.loads(args.worker_speed))), flush=True)
        return
    if args.worker_memory is not None:
        print(json.dumps(run_memory(json.loads(args.worker_memory))), flush=True)
        return

    G_kwargs = generator_kwargs(args.tiny)
    if args.ray_chunk is not None or args.tiny:  # tiny: chunks of 40 rays, so that several (ragged) chunks run
        G_kwargs['rendering_kwargs']['ray_chunk'] = args.ray_chunk or 40
    nrr = args.nrr or (8 if args.tiny else 64)
    args.mem_nrr = args.mem_nrr or ([8, 16] if args.tiny else [64, 128, 256])
    if 'speed' in args.parts:
        spec = dict(G_kwargs=G_kwargs, nrr=nrr, batch=args.batch, repeats=args.repeats or (2 if args.tiny else 3),
                    tolerance=args.tolerance, profile=args.profile)
        print(json.dumps(_worker('speed', spec, args.threads)), flush=True)
    if 'memory' in args.parts:
        for record in memory_records(args, G_kwargs):
            print(json.dumps(record), flush=True)


if __name__ == '__main__':
    main()
