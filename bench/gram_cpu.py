"""CPU benchmark of the GRAM generator (training/networks_gram.py) against the official GRAM algorithm, same run.

The baseline re-implements the official render (microsoft/GRAM generators/generators.py,
representations/gram.py, renderers/manifold_renderer.py) step by step on *our* generator's tensors,
unchunked, on all rays at once, as the official code computes it:
- GRAM's ray grid: x = linspace(-1, 1, W) over the columns, y = linspace(1, -1, H) over the rows,
  direction normalize(x, y, -1 / tan(fov / 2)) in its camera frame; `num_samples` depths
  linspace(ray_start, ray_end) per ray; the points and directions moved to the world by its
  cam2world (camera at (sin phi cos theta, cos phi, sin phi sin theta), looking at the origin, world
  up +y) with homogeneous batched matrix products;
- the manifold field s on every sample, then *for each level* the cost-weighted argmax
  ((s_far <= l <= s_near) * 2 - 1) * linspace(S - 1, 0, S - 1) over the intervals and four gathers,
  then the interpolation, again level by level;
- the background point on the plane z = -0.12; distances from the ray origin;
- the radiance network on *every* sample (valid or not): FiLM layers as Linear, freq expanded,
  freq * x + phase, sin;
- the samples sorted by distance (torch.sort and gathers), the background's place found by argmax,
  fancy_integration (one-hot background mask, constant deltas, cumprod transmittance), the image
  mapped to [-1, 1].
Ours runs with legacy_rays=True (GRAM's grid), so before any timing the two images are compared
(max abs difference at most `--tolerance`, 1e-3 as the issue's parity bound): both columns compute
the same function. GRAM's first-crossing search is discontinuous, so float rounding can move a
single pixel's crossing (one pixel of 128x128 differs by 7e-4, the rest by under 2e-5).

Record (`"bench": "gram_speed"`, one per resolution): images/s of a no-grad forward of the official
FFHQ_default architecture (seeded official initialisation), batch `--batch`, GRAM's frontal camera
with fov 12; one warm-up each, then `--repeats` timed rounds of all in alternating order;
`speedup` = median official time / median our time; `meets_speed_goal`: speedup >= 2 (the issue's
goal). The official code renders all rays of an image at once; `speedup_vs_chunked` also times the
official algorithm in passes of our `ray_chunk` rays, to separate what our algorithm gains (valid
intersections only, one search for all levels, folded FiLM) from what the chunking gains on the CPU
(small activations reused from the heap, see networks_gram.CPU_RAY_CHUNK); `valid_fraction`: the share of (ray, level) intersections that cross their level (ours
evaluates the radiance network only there). Prints one JSON object per record.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from training import cameras  # noqa: E402
from training import networks_gram as ng  # noqa: E402

# ----------------------------------------------------------------------------------------------
# The official algorithm on our tensors.


def _unit(v):
    return v / torch.norm(v, dim=-1, keepdim=True)


def official_rays(batch, num_samples, fov, resolution, ray_start, ray_end):
    xs = torch.linspace(-1, 1, resolution)
    ys = torch.linspace(1, -1, resolution)
    x, y = torch.meshgrid(xs, ys, indexing='ij')
    x, y = x.T.flatten(), y.T.flatten()
    z = -torch.ones_like(x) / np.tan((2 * math.pi * fov / 360) / 2)
    dirs = _unit(torch.stack([x, y, z], -1))
    depths = torch.linspace(ray_start, ray_end, num_samples).reshape(1, num_samples, 1).repeat(dirs.shape[0], 1, 1)
    points = dirs.unsqueeze(1).repeat(1, num_samples, 1) * depths
    return torch.stack(batch * [points]), torch.stack(batch * [dirs])


def official_cam2world(origin):
    forward = _unit(-origin)
    up = torch.tensor([0.0, 1.0, 0.0]).expand_as(forward)
    left = _unit(torch.cross(up, forward, dim=-1))
    up = _unit(torch.cross(forward, left, dim=-1))
    rotation = torch.eye(4).unsqueeze(0).repeat(forward.shape[0], 1, 1)
    rotation[:, :3, :3] = torch.stack((-left, up, -forward), dim=-1)
    translation = torch.eye(4).unsqueeze(0).repeat(forward.shape[0], 1, 1)
    translation[:, :3, 3] = origin
    return translation @ rotation


def official_to_world(points, dirs, origin):
    n, rays, samples, _ = points.shape
    cam2world = official_cam2world(origin)
    homogeneous = torch.ones(n, rays, samples, 4)
    homogeneous[..., :3] = points
    world = torch.bmm(cam2world, homogeneous.reshape(n, -1, 4).permute(0, 2, 1)).permute(0, 2, 1)
    world = world.reshape(n, rays, samples, 4)[..., :3]
    world_dirs = torch.bmm(cam2world[..., :3, :3], dirs.reshape(n, -1, 3).permute(0, 2, 1)).permute(0, 2, 1)
    origins = torch.zeros(n, 4, rays)
    origins[:, 3] = 1
    origins = torch.bmm(cam2world, origins).permute(0, 2, 1)[..., :3]
    return world, world_dirs.reshape(n, rays, 3), origins


def official_intersections(sample_network, points, levels):
    n, rays, samples, _ = points.shape
    s = sample_network(points.reshape(n, -1, 3)).reshape(n, rays, samples, 1)
    s_near, s_far = s[:, :, :-1], s[:, :, 1:]
    cost = torch.linspace(samples - 1, 0, samples - 1).reshape(1, 1, -1, 1)
    intervals = []
    for level in levels:
        score = ((s_far - level <= 0) * (level - s_near <= 0) * 2 - 1) * cost
        _, index = torch.max(score, dim=-2, keepdim=True)
        x_lo = torch.gather(points, -2, index.expand(-1, -1, -1, 3))
        x_hi = torch.gather(points, -2, index.expand(-1, -1, -1, 3) + 1)
        intervals.append((x_lo, x_hi, torch.gather(s_near, -2, index), torch.gather(s_far, -2, index)))
    found, valid = [], []
    for (x_lo, x_hi, s_lo, s_hi), level in zip(intervals, levels):
        x_lo, x_hi, s_lo, s_hi = x_lo[:, :, 0], x_hi[:, :, 0], s_lo[:, :, 0], s_hi[:, :, 0]
        crossing = (s_hi - level <= 0) * (level - s_lo <= 0)
        scale = torch.where(torch.abs(s_hi - s_lo) > 0.05, s_hi - s_lo, torch.ones_like(s_hi) * 0.05)
        found.append(torch.where(crossing & (torch.abs(s_hi - s_lo) > 0.05),
                                 ((s_hi - level) * x_lo + (level - s_lo) * x_hi) / scale, x_hi))
        valid.append(crossing.to(x_lo.dtype))
    return torch.stack(found, dim=-2), torch.stack(valid, dim=-2)


def official_film(layer, x, freq, phase):
    x = layer.layer(x)
    return torch.sin(freq.unsqueeze(1).expand_as(x) * x + phase.unsqueeze(1).expand_as(x))


def official_radiance(rf, points, frequencies, phases, dirs, eps=1e-3):
    frequencies = frequencies * 15 + 30
    h = rf.hidden_dim
    x = rf.gridwarper(points)
    sigma = rgb = 0
    for index, layer in enumerate(rf.network):
        x = official_film(layer, x, frequencies[..., index * h:(index + 1) * h], phases[..., index * h:(index + 1) * h])
        if index > 0:
            feature = x
            if index == 7:
                feature = official_film(rf.color_layer[0], torch.cat([dirs, x], dim=-1),
                                        frequencies[..., 8 * h:9 * h], phases[..., 8 * h:9 * h])
            sigma = sigma + rf.output_sigma[index - 1](x)
            rgb = rgb + rf.output_color[index - 1](feature)
    return torch.cat([torch.sigmoid(rgb) * (1 + 2 * eps) - eps, torch.nn.functional.softplus(sigma)], dim=-1)


def official_integration(outputs, depths, valid, background_position, delta_alpha, delta_final):
    rgbs, sigmas = outputs[..., :3], outputs[..., 3:]
    deltas = torch.ones_like(depths[:, :, 1:] - depths[:, :, :-1]) * delta_alpha
    deltas = torch.cat([deltas, delta_final * torch.ones_like(deltas[:, :, :1])], -2)
    background = torch.nn.functional.one_hot(background_position.squeeze(-1), num_classes=deltas.shape[-2])
    deltas[background.to(torch.bool).unsqueeze(-1)] = delta_final
    alphas = (1 - torch.exp(-deltas * sigmas)) * valid
    shifted = torch.cat([torch.ones_like(alphas[:, :, :1]), 1 - alphas + 1e-10], -2)
    weights = alphas * torch.cumprod(shifted, -2)[:, :, :-1]
    return torch.sum(weights * rgbs, -2)


def official_generator(G, z, camera_pos, resolution, chunk=None):
    """GRAM's forward (camera_pos given, truncation 1) for a generator with a background, as FFHQ_default.

    chunk: None renders all rays at once, as the official code does; else that many rays per pass.
    """
    renderer, representation = G.renderer, G.representation
    rf = representation.rf_network
    n = z.shape[0]
    phi, theta = camera_pos[:, 0:1], camera_pos[:, 1:2]
    origin = torch.cat([torch.sin(phi) * torch.cos(theta), torch.cos(phi), torch.sin(phi) * torch.sin(theta)], dim=-1)
    frequencies, phases = rf.mapping_network(z)
    points, dirs = official_rays(n, renderer.num_samples, G.fov, resolution, G.ray_start, G.ray_end)
    chunk = points.shape[1] if chunk is None else chunk
    pixels = [official_render_rays(G, points[:, start:start + chunk], dirs[:, start:start + chunk], origin,
                                   frequencies, phases) for start in range(0, points.shape[1], chunk)]
    pixels = torch.cat(pixels, dim=1)
    return pixels.reshape(n, resolution, resolution, 3).permute(0, 3, 1, 2).contiguous() * 2 - 1


def official_render_rays(G, points, dirs, origin, frequencies, phases):
    renderer, representation = G.renderer, G.representation
    n = points.shape[0]
    samples, world_dirs, origins = official_to_world(points, dirs, origin)
    levels = torch.linspace(renderer.levels_start, renderer.levels_end, renderer.num_manifolds - 1)
    found, valid = official_intersections(representation.sample_network, samples, levels)
    back_depth = ((-0.12 - origins[..., -1:]) / world_dirs[..., -1:]).unsqueeze(-1)
    back = origins.unsqueeze(2) + world_dirs.unsqueeze(2) * back_depth
    found = torch.cat([found, back], dim=-2)
    valid = torch.cat([valid, torch.ones(n, valid.shape[1], 1, 1)], dim=-2)
    depths = torch.sqrt(torch.sum((found - origins.unsqueeze(2)) ** 2, dim=-1, keepdim=True))
    k = renderer.num_manifolds
    views = world_dirs.unsqueeze(-2).expand(-1, -1, k, -1)
    outputs = official_radiance(representation.rf_network, found.reshape(n, -1, 3), frequencies, phases,
                                views.reshape(n, -1, 3))
    outputs = outputs.reshape(n, -1, k, 4)
    _, order = torch.sort(depths, dim=-2)
    depths = torch.gather(depths, -2, order)
    outputs = torch.gather(outputs, -2, order.expand(-1, -1, -1, 4))
    valid = torch.gather(valid, -2, order)
    return official_integration(outputs, depths, valid, torch.argmax(order, dim=-2), renderer.delta_alpha,
                                renderer.delta_final)

# ----------------------------------------------------------------------------------------------


def build_generator(tiny):
    config = ng.OFFICIAL_CONFIGS['FFHQ_default']
    kwargs = dict(config['generator'], **config['camera'])
    if tiny:
        kwargs['representation_kwargs'] = dict(kwargs['representation_kwargs'], hidden_dim=32, hidden_dim_sample=16)
    torch.manual_seed(0)
    return ng.GramGenerator(**kwargs, legacy_rays=True).eval().requires_grad_(False)


def valid_fraction(G, c, resolution):
    origins, dirs = G._rays(c, resolution)
    depths = torch.linspace(G.ray_start, G.ray_end, G.renderer.num_samples)
    samples = origins.unsqueeze(2) + dirs.unsqueeze(2) * depths.reshape(1, 1, -1, 1)
    field = G.representation.sample_network(samples).squeeze(-1)
    return float(ng.first_crossings(samples, field, G.renderer.levels('cpu'))[1].float().mean())


def run(G, resolution, batch, repeats, tolerance):
    gen = torch.Generator().manual_seed(1)
    z = torch.randn([batch, G.z_dim], generator=gen)
    camera_pos = torch.tensor([[math.pi / 2, math.pi / 2]] * batch)
    c = cameras.gram_pose_to_label(camera_pos[:, 0], camera_pos[:, 1], G.fov)
    chunk = max(1, (G.ray_chunk or ng.default_ray_chunk('cpu')) // batch)  # our rays per pass, per image
    renders = {'ours': lambda: G(z, c, resolution=resolution),
               'official': lambda: official_generator(G, z, camera_pos, resolution),
               'official_chunked': lambda: official_generator(G, z, camera_pos, resolution, chunk=chunk)}
    with torch.no_grad():
        images = {name: fn() for name, fn in renders.items()}
        diffs = {name: float((images['ours'] - image).abs().max()) for name, image in images.items() if name != 'ours'}
        if not max(diffs.values()) <= tolerance:
            raise SystemExit(f'gram_cpu.py: our image differs from the official algorithm\'s by {max(diffs.values()):.3g} '
                             f'at {resolution}x{resolution}, above --tolerance={tolerance}; not timing different functions.')
        times = {name: [] for name in renders}
        for round_index in range(repeats):
            order = list(renders.items())
            for name, fn in (order if round_index % 2 == 0 else order[::-1]):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        fraction = valid_fraction(G, c, resolution)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    return dict(bench='gram_speed', resolution=resolution, batch=batch, repeats=repeats, ray_chunk=chunk * batch,
                ours_images_per_s=round(batch / seconds['ours'], 4),
                official_images_per_s=round(batch / seconds['official'], 4),
                official_chunked_images_per_s=round(batch / seconds['official_chunked'], 4),
                speedup=round(seconds['official'] / seconds['ours'], 3),
                speedup_vs_chunked=round(seconds['official_chunked'] / seconds['ours'], 3),
                meets_speed_goal=seconds['official'] / seconds['ours'] >= 2,
                max_abs_diff=float(f'{max(diffs.values()):.3g}'), valid_fraction=round(fraction, 3),
                torch_threads=torch.get_num_threads())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--resolutions', type=int, nargs='+', default=[64, 128], help='render sizes (64 128)')
    parser.add_argument('--batch', type=int, default=1, help='images per forward (1)')
    parser.add_argument('--repeats', type=int, default=3, help='timed rounds, each runs both (3)')
    parser.add_argument('--tiny', action='store_true', help='a narrow network (hidden 32, field 16), for tests')
    parser.add_argument('--tolerance', type=float, default=1e-3, help='max abs image difference allowed (1e-3)')
    parser.add_argument('--threads', type=int, default=os.cpu_count() or 1, help='torch threads (default: all cores)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    G = build_generator(args.tiny)
    for resolution in args.resolutions:
        print(json.dumps(run(G, resolution, args.batch, args.repeats, args.tolerance)), flush=True)


if __name__ == '__main__':
    main()
