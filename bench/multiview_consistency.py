"""Multi-view consistency of a depth-rendering generator against the ground-truth renderer.

For N random view pairs (yaw of view A ~ N(0, 0.3) rad around frontal, pitch ~ N(0, 0.15), view B at
a yaw offset uniform in +-[0.2, 0.4] rad from A), each record warps view A into view B with A's own
depth and reports the mean absolute photometric error over the valid pixels, in 8-bit levels, and
the fraction of valid pixels (`metrics/multiview_consistency.py` defines both precisely):

- `renderer`: `training.synthetic_shapes` with its exact depth, 2 x 2 supersampled as the dataset
  (the floor: bilinear interpolation, edge aliasing and the view-dependent highlight). Its sky counts
  as lying at infinity, but a 0.2-0.4 rad orbit turns the sky out of the +-0.117 rad frame, so in
  practice its valid pixels are the (small) foreground;
- `renderer_mismatched`: view B of another scene, so the same warp compares two scenes (the scale
  of "inconsistent"; valid pixels are those where the other scene's depth happens to agree);
- `trained` / `untrained`: the network (its colour output at the depth's resolution, for EG3D
  `image_raw` against `image_depth`), and the same architecture with fresh weights;
- `trained_mismatched`: the trained network with another latent in view B.

Errors are in 8-bit levels ([0, 255] units; the networks' images are in [-1, 1], the renderer's in
[0, 1]). `unwarped_error` is |A - B| at the same pixels over the same valid pixels: smooth images
score low errors whatever their geometry, so read `error` against it (`error_over_unwarped`: below 1
when the depth explains how the view moved) and against the mismatched records; the renderer's valid pixels (foreground) and a network's (most of the frame: EG3D puts its
background at a finite depth) differ, so the absolute errors are not directly comparable.

Without `--network`, a tiny EG3D (32x32 synthetic shapes, 16x16 neural rendering, 32x32 tri-planes,
12 + 12 samples per ray, EG3D's FFHQ ray range 2.25-3.3 and box 1, which fit the shapes' cameras at
radius 2.7; `--cfg=eg3d-shapenet`'s range 0.1-2.6 would end the rays before the origin) is trained on
the CPU for `--kimg` (default 2, about 100 s/kimg on 2 cores) from a 1024-image dataset packed by
dataset_tool, in `--workdir`.

    python bench/multiview_consistency.py                       # tiny EG3D, 2 kimg, about 5 min on 2 cores
    python bench/multiview_consistency.py --kimg=2 --workdir=/tmp/mv
    python bench/multiview_consistency.py --network=run/network-snapshot-000200.pkl --pairs=256
"""

import argparse
import contextlib
import copy
import json
import os
import sys
import time

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import dnnlib  # noqa: E402
from metrics import multiview_consistency as mv  # noqa: E402
from training import cameras, synthetic_shapes  # noqa: E402

# ----------------------------------------------------------------------------------------------
# A tiny EG3D, trained on the CPU.


def tiny_eg3d_options(data, run_dir, kimg, tick=None, resolution=32, seed=0):
    """training_loop kwargs of a tiny EG3D on `data` (a camera-labelled zip), built by the config registry."""
    from training import configs
    opts = dnnlib.EasyDict(cfg='eg3d-ffhq', data=data, cond=True, mirror=False, mirror_cameras=False, aug='noaug',
                           p=0.2, target=0.6, batch=4, gpus=1, batch_gpu=4, gamma=1, cbase=1024, cmax=32, glr=None,
                           dlr=0.002, map_depth=2, mbstd_group=4, freezed=0, fp32=True, kimg=kimg,
                           tick=tick or max(kimg / 4, 0.004), snap=1000, seed=seed, workers=0, nobench=True,
                           metrics=[], device='cpu', resolution=resolution, camera_labels=True, dataset_size=None,
                           neural_rendering_resolution_initial=resolution // 2)
    c = configs.build_training_options(opts)
    c.G_kwargs.z_dim = c.G_kwargs.w_dim = 64
    c.G_kwargs.triplane_resolution = 32
    c.G_kwargs.sr_kwargs.block_channels = [32, 32]
    # The shapes' cameras look at the origin from radius 2.7 (FFHQ's camera with pivot 0).
    c.G_kwargs.rendering_kwargs.update(depth_resolution=12, depth_resolution_importance=12, avg_camera_pivot=[0, 0, 0])
    c.loss_kwargs.blur_fade_kimg = min(c.loss_kwargs.blur_fade_kimg, kimg / 4)
    c.run_dir = str(run_dir)
    c.grid_size = [2, 2]
    c.network_snapshot_ticks = c.image_snapshot_ticks = 1000  # the final snapshot only
    del c.device
    return c


def train_tiny_eg3d(data, run_dir, kimg=2, tick=None, seed=0):
    """Train the tiny EG3D (its progress log on stderr); the path of its final network snapshot."""
    from training.training_loop import training_loop
    os.makedirs(run_dir, exist_ok=True)
    c = tiny_eg3d_options(data, run_dir, kimg, tick=tick, seed=seed)
    with open(os.path.join(run_dir, 'bench_options.json'), 'w') as f:
        json.dump(c, f, indent=2, default=str)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON records only
        result = training_loop(**c)
    return result.snapshot_pkl


def pack_dataset(dest, num_images=1024, resolution=32, seed=0):
    if os.path.isfile(dest):
        return dest
    from click.testing import CliRunner
    import dataset_tool
    result = CliRunner().invoke(dataset_tool.main, ['--source=synthetic:shapes', f'--dest={dest}',
                                                    f'--resolution={resolution}x{resolution}',
                                                    f'--max-images={num_images}', f'--seed={seed}'])
    if result.exit_code != 0:
        raise RuntimeError(result.output)
    return dest

# ----------------------------------------------------------------------------------------------
# View pairs and records.


def view_pairs(num, seed=0, radius=synthetic_shapes.CAMERA_RADIUS, pivot=(0, 0, 0), offset=(0.2, 0.4)):
    """(c_a, c_b) [num, 25] each: random frontal-ish views and views at a random +-offset in yaw."""
    g = torch.Generator().manual_seed(seed)
    yaw = synthetic_shapes.YAW_STDDEV * torch.randn([num], generator=g)
    pitch = synthetic_shapes.PITCH_STDDEV * torch.randn([num], generator=g)
    delta = offset[0] + (offset[1] - offset[0]) * torch.rand([num], generator=g)
    delta = delta * torch.where(torch.rand([num], generator=g) < 0.5, -1.0, 1.0)
    c_a = cameras.lookat_labels(yaw, pitch, radius=radius, pivot=pivot, focal=synthetic_shapes.FOCAL)
    c_b = cameras.lookat_labels(yaw + delta, pitch, radius=radius, pivot=pivot, focal=synthetic_shapes.FOCAL)
    return c_a, c_b


def record(name, result, **extra):
    summary = mv.summarize(result)
    if summary.get('unwarped_error', 0) > 0:
        summary['error_over_unwarped'] = summary['error'] / summary['unwarped_error']
    out = dict(subject=name, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()})
    out.update(extra)
    return out


def untrained_copy(G, seed=0):
    torch.manual_seed(0x5EED + seed)
    rebuilt = type(G)(*getattr(G, 'init_args', ()), **G.init_kwargs)
    for name in getattr(G, 'state_attributes', ()):
        setattr(rebuilt, name, copy.deepcopy(getattr(G, name)))
    return rebuilt.eval().requires_grad_(False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--network', default=None, help='network pickle of a depth-rendering generator (default: train a tiny EG3D)')
    parser.add_argument('--kimg', type=float, default=2, help='training length of the tiny EG3D')
    parser.add_argument('--workdir', default='/tmp/multiview_consistency', help='dataset and run of the tiny EG3D')
    parser.add_argument('--pairs', type=int, default=64, help='random view pairs')
    parser.add_argument('--resolution', type=int, default=None, help="renderer resolution (default: the network's depth size)")
    parser.add_argument('--rel-tol', type=float, default=mv.DEFAULT_REL_TOL, help='relative depth tolerance of the occlusion test')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--trust-code', action='store_true')
    args = parser.parse_args(argv)

    start = time.time()
    network = args.network
    if network is None:
        data = pack_dataset(os.path.join(args.workdir, 'shapes32.zip'))
        network = train_tiny_eg3d(data, os.path.join(args.workdir, f'run-{args.kimg:g}kimg'), kimg=args.kimg)
        print(json.dumps(dict(trained_snapshot=network, kimg=args.kimg, train_wall_s=round(time.time() - start, 1))),
              flush=True)
    from training import generation
    G = generation.load_generator(network, torch.device('cpu'), trust_code=args.trust_code)
    G = G.eval().requires_grad_(False)
    radius, pivot = generation.camera_defaults(G)
    c_a, c_b = view_pairs(args.pairs, args.seed, radius=radius, pivot=pivot)
    g = torch.Generator().manual_seed(args.seed + 1)
    z = torch.randn([args.pairs, G.z_dim], generator=g)
    z_other = torch.randn([args.pairs, G.z_dim], generator=g)
    common = dict(pairs=args.pairs, rel_tol=args.rel_tol)

    trained = mv.consistency_of_generator(G, z, c_a, c_b, rel_tol=args.rel_tol)
    modes = dict(color_mode=trained['color_mode'], depth_mode=trained['depth_mode'])
    print(json.dumps(record('trained', trained, network=network, **modes, **common)), flush=True)
    mismatched = mv.consistency_of_generator(G, z, c_a, c_b, z_b=z_other, rel_tol=args.rel_tol)
    print(json.dumps(record('trained_mismatched', mismatched, **common)), flush=True)
    untrained = mv.consistency_of_generator(untrained_copy(G, args.seed), z, c_a, c_b, rel_tol=args.rel_tol)
    print(json.dumps(record('untrained', untrained, **common)), flush=True)

    views = mv.render_views(mv.deterministic_copy(G), z[:1], c_a[:1], generation.mapping_label(G))
    resolution = args.resolution or int(views[trained['depth_mode']].shape[-1])
    scenes = synthetic_shapes.random_scenes(args.pairs, torch.Generator().manual_seed(args.seed + 2))
    others = synthetic_shapes.random_scenes(args.pairs, torch.Generator().manual_seed(args.seed + 3))
    ca_r, cb_r = view_pairs(args.pairs, args.seed)  # the renderer's cameras look at the origin from 2.7
    print(json.dumps(record('renderer', mv.consistency_of_renderer(scenes, ca_r, cb_r, resolution, rel_tol=args.rel_tol),
                            resolution=resolution, **common)), flush=True)
    print(json.dumps(record('renderer_mismatched',
                            mv.consistency_of_renderer(scenes, ca_r, cb_r, resolution, scene_b=others, rel_tol=args.rel_tol),
                            resolution=resolution, **common)), flush=True)
    print(json.dumps(dict(total_wall_s=round(time.time() - start, 1))), flush=True)


if __name__ == '__main__':
    main()
