"""CPU benchmark of training through train.py: sec/kimg and peak RSS of tiny StyleGAN2 and StyleGAN3-T runs at 32x32.

A synthetic-shapes dataset (256 images, 32x32) is packed once with `dataset_tool.py`. Each config
then trains through the real entry point, `train.py`, in its own child process (batch 8,
channel_base 2048, channel_max 64, mapping depth 2, no augmentation, no metrics, 1 process,
DataLoader in-process). The child is reaped with `os.wait4`, whose rusage is that child's alone:
`peak_rss_mb` is its ru_maxrss (the whole run: imports, networks, optimizers, snapshots), and
`cpu_s_per_wall_s` its CPU seconds per wall second.

`sec_per_kimg` comes from the loop's own status lines ("tick N kimg X ... sec/kimg Y ..."): the
kimg-weighted mean over the ticks after tick 0, which holds only the first step and its warm-up
(reported apart as `warmup_tick_s`). Those ticks lie inside the child's lifetime, so
`sec_per_kimg * timed_kimg <= train_wall_s`.

Reference, same run: the bare adversarial work of one training step, with the very networks the
run built (rebuilt from its `training_options.json`), the same batch and the same threads:
Gmain = G forward, D forward, backward into G; Dmain = G forward without grad, D forward and
backward on the fakes, then on the reals. No regularisation, augmentation, blur, optimizer, EMA,
data loading or bookkeeping; the median of a few such steps gives `reference_sec_per_kimg`.
`ratio = sec_per_kimg / reference_sec_per_kimg`: near 1 means a training step costs what its
networks compute; what lies above 1 is the loop's share, i.e. lazy regularisation (R1 on every
16th step; StyleGAN2 also path length, a double backward, on every 4th), StyleGAN3's D-input
blur, style mixing, Adam, EMA, data and bookkeeping. The `--quick` run times only steps 1-3, none
of them a regularisation step, so its ratio is close to 1 by construction; the default run times
63 steps, which includes the regularisation at about its steady-state share.

Timings are only as good as the machine is quiet: `cpu_s_per_wall_s` well below `threads` means
other processes held the cores. With OpenMP's default busy-waiting, such contention slowed tiny
training steps down ~4x on the 2-core development machine; `OMP_WAIT_POLICY=PASSIVE` (recorded as
`omp_wait_policy`, inherited by the children) avoids that. Linux only (os.wait4, ru_maxrss in kB).
Prints one JSON object per config.

    python bench/train_cpu.py           # 0.512 kimg per config (a few minutes on 2 cores)
    python bench/train_cpu.py --quick   # 0.032 kimg per config, for a smoke test
"""

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path[:0] = [p for p in (REPO_ROOT,) if p not in sys.path]

import dnnlib  # noqa: E402
from torch_utils.ops import conv2d_gradfix  # noqa: E402

CONFIGS = ('stylegan2', 'stylegan3-t')
RESOLUTION = 32
BATCH = 8
TRAIN_OPTIONS = ['--gpus=1', f'--batch={BATCH}', '--gamma=1', '--cbase=2048', '--cmax=64', '--map-depth=2',
                 '--mbstd-group=4', '--aug=noaug', '--device=cpu', '--metrics=none', '--workers=0', '--grid=2x2',
                 '--snap=1000']
# (kimg, tick, reference steps): tick 0 is the first step alone; the rest are timed.
QUICK = (0.032, 0.016, 2)
FULL = (0.512, 0.128, 5)

STATUS_LINE = re.compile(r'^tick\s+(\d+)\s+kimg\s+([\d.]+)\s+time\s.*?\ssec/tick\s+([\d.]+)\s+sec/kimg\s+([\d.]+)\s',
                         re.M)

# ----------------------------------------------------------------------------------------------
# Training through train.py.


def make_dataset(tmp_dir):
    path = os.path.join(tmp_dir, f'shapes{RESOLUTION}.zip')
    subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'dataset_tool.py'), '--source=synthetic:shapes',
                    f'--dest={path}', f'--resolution={RESOLUTION}x{RESOLUTION}', '--max-images=256', '--seed=0'],
                   check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    return path


def run_training(cfg, data, outdir, kimg, tick):
    """Run train.py in a child; return (stdout, wall seconds, the child's rusage), or exit on failure."""
    cmd = [sys.executable, os.path.join(REPO_ROOT, 'train.py'), f'--outdir={outdir}', f'--cfg={cfg}', f'--data={data}',
           *TRAIN_OPTIONS, f'--kimg={kimg}', f'--tick={tick}']
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    proc.stdout.close()
    _pid, status, rusage = os.wait4(proc.pid, 0)  # this child's own rusage, unlike RUSAGE_CHILDREN
    wall_s = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        print(output[-4000:], file=sys.stderr)
        return None
    return output, wall_s, rusage


def tick_timing(output):
    """(kimg-weighted sec/kimg over ticks 1.., kimg they cover, number of them, tick 0 seconds, final kimg)."""
    ticks = [(int(n), float(kimg), float(sec_tick), float(sec_kimg))
             for n, kimg, sec_tick, sec_kimg in STATUS_LINE.findall(output)]
    if len(ticks) < 2 or [t[0] for t in ticks] != list(range(len(ticks))):
        raise RuntimeError(f'expected status lines for ticks 0, 1, ... in the train.py output, got {ticks}')
    seconds = kimg_timed = 0.0
    for (_, kimg_prev, _, _), (_, kimg, _, sec_kimg) in zip(ticks, ticks[1:]):
        seconds += sec_kimg * (kimg - kimg_prev)
        kimg_timed += kimg - kimg_prev
    tick0_s = ticks[0][3] * ticks[0][1]  # sec/kimg has 2 decimals, sec/tick only 1
    return seconds / kimg_timed, kimg_timed, len(ticks) - 1, tick0_s, ticks[-1][1]


def run_dir_of(output):
    match = re.search(r'^Output directory: (.+)$', output, re.M)
    if match is None:
        raise RuntimeError('train.py did not print its output directory')
    return match.group(1).strip()

# ----------------------------------------------------------------------------------------------
# Reference: bare adversarial forward + backward of the same networks.


def build_networks(options):
    common = dict(c_dim=0, img_resolution=options['training_set_kwargs']['resolution'], img_channels=3)
    torch.manual_seed(options['random_seed'])
    G = dnnlib.util.construct_class_by_name(**options['G_kwargs'], **common).train().requires_grad_(False)
    D = dnnlib.util.construct_class_by_name(**options['D_kwargs'], **common).train().requires_grad_(False)
    return G, D


def reference_step_s(options, repeats):
    """Median seconds of Gmain + Dmain forward/backward without anything else (see the module docstring)."""
    conv2d_gradfix.enabled = True  # as in the training loop
    G, D = build_networks(options)
    batch = options['batch_gpu']
    gen = torch.Generator().manual_seed(1)
    z = torch.randn([batch, G.z_dim], generator=gen)
    c = torch.zeros([batch, G.c_dim])
    real = torch.rand([batch, G.img_channels, G.img_resolution, G.img_resolution], generator=gen) * 2 - 1
    softplus = torch.nn.functional.softplus

    def step():
        G.requires_grad_(True)
        softplus(-D(G(z, c), c)).mean().backward()
        G.requires_grad_(False)
        D.requires_grad_(True)
        with torch.no_grad():
            fake = G(z, c)
        softplus(D(fake, c)).mean().backward()
        softplus(-D(real, c)).mean().backward()
        D.requires_grad_(False)
        for param in [*G.parameters(), *D.parameters()]:
            param.grad = None

    step()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)

# ----------------------------------------------------------------------------------------------


def measure(cfg, data, tmp_dir, kimg, tick, ref_repeats):
    load_avg = os.getloadavg()[0]
    result = run_training(cfg, data, os.path.join(tmp_dir, cfg), kimg, tick)
    if result is None:
        return None
    output, wall_s, rusage = result
    sec_per_kimg, timed_kimg, timed_ticks, tick0_s, final_kimg = tick_timing(output)
    with open(os.path.join(run_dir_of(output), 'training_options.json')) as file:
        options = json.load(file)
    ref_step_s = reference_step_s(options, ref_repeats)
    ref_sec_per_kimg = ref_step_s * 1000 / options['batch_size']
    return dict(
        bench='train_cpu', cfg=cfg, resolution=options['training_set_kwargs']['resolution'],
        batch=options['batch_size'], channel_base=options['G_kwargs']['channel_base'],
        channel_max=options['G_kwargs']['channel_max'], sec_per_kimg=_sig(sec_per_kimg),
        peak_rss_mb=round(rusage.ru_maxrss / 1024, 1),  # kB on Linux
        reference_sec_per_kimg=_sig(ref_sec_per_kimg), ratio=round(sec_per_kimg / ref_sec_per_kimg, 3),
        kimg=final_kimg, timed_kimg=round(timed_kimg, 3), timed_ticks=timed_ticks, warmup_tick_s=round(tick0_s, 2),
        train_wall_s=round(wall_s, 2), cpu_s_per_wall_s=round((rusage.ru_utime + rusage.ru_stime) / wall_s, 2),
        reference_step_s=_sig(ref_step_s), reference_repeats=ref_repeats,
        threads=torch.get_num_threads(), load_avg_1m=round(load_avg, 2),
        omp_wait_policy=os.environ.get('OMP_WAIT_POLICY'),
    )


def _sig(v):
    return float(f'{v:.4g}') if math.isfinite(v) else v


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='0.032 kimg per config, for a smoke test')
    parser.add_argument('--kimg', type=float, default=None,
                        help='training length per config (default: 0.512, quick 0.032)')
    parser.add_argument('--tick', type=float, default=None, help='kimg per tick (default: 0.128, quick 0.016)')
    parser.add_argument('--only', nargs='+', choices=CONFIGS, default=None, help='configs to run')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads here and OMP_NUM_THREADS in the training children (default: torch default)')
    args = parser.parse_args()
    if args.threads is not None:
        os.environ['OMP_NUM_THREADS'] = str(args.threads)
        torch.set_num_threads(args.threads)
    kimg, tick, ref_repeats = QUICK if args.quick else FULL
    kimg, tick = args.kimg or kimg, args.tick or tick

    failed = []
    with tempfile.TemporaryDirectory(prefix='train_cpu_bench_') as tmp_dir:
        data = make_dataset(tmp_dir)
        for cfg in args.only or CONFIGS:
            record = measure(cfg, data, tmp_dir, kimg, tick, ref_repeats)
            if record is None:
                failed.append(cfg)
                continue
            print(json.dumps(record), flush=True)
    if failed:
        sys.exit(f'train.py failed for {", ".join(failed)} (its output is above)')


if __name__ == '__main__':
    main()
