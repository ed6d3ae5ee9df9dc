"""CPU benchmark of the CREPS generator (training/networks_creps.py) against the official CREPS algorithm, same run.

The baseline below re-implements the official CREPS forward step by step on *our* Generator's
tensors (which carry the official names), in float32 (the official path with force_fp32=True; it
would run its head in float16, which the CPU does not do well):
- mapping: normalize_2nd_moment, then each layer as the official FullyConnectedLayer (weight times
  its gain, matmul, then bias_act's reference path), w broadcast to num_ws copies;
- the Fourier input on one [N, C, L, 2R] tensor: coords = linspace(0, 1, L) for both lines,
  coords @ freqs, reshape [N, L, 2, C/2, R], permute to [N, C/2, L, 2R], cat(phase, phase + pi/2),
  sin, times weight * affine(w) reshaped [N, C, 1, 2R], / sqrt(C);
- every modulated layer as the official modulated_fc (per-sample weights W * s, demodulated by
  rsqrt(sum of squares + 1e-8), except ToRes whose styles are affine(w) / sqrt(in)),
  `torch.einsum('nihw,noi->nohw')`, then `bias_act(impl='ref')` (lrelu, gain sqrt 2, clamp; ToRes
  linear with clamp);
- ws: a block reads (input's) + its fc layers' + its ToRes's ws from w_idx, which advances by its fc
  layers (b4: ws[:, 0:3], then by 1; the others by 2); the head blocks read the last w three times;
- after each trunk block with a skip output the accumulated bi-line [N, 32, L, 2R] times sqrt(1/2)
  is split in two halves, composed by `x_line @ y_line.T` into [N, 32, L, L] and permuted to pixels
  [N*L*L, 32]; the feature is the first such map, then decoder(feature) + map; then decoder_last,
  decoder_img, reshape to images, and block0, block1 on the full [N, C, L, L] images: the whole image
  in one piece. As in the official forward (which tests the first block's forced 'orig'
  architecture, not the argument that built its ToRes), b4's ToRes takes its w but does not run:
  the first skip output, and so the first map, is b8's, and decoder_8 goes unused.
Before any timing each measurement checks that this and ours give the same images (max abs diff at
most `--tolerance`), so the two columns time the same function.

Speed (one record per resolution, `"bench": "creps_speed"`): G forward (mapping + synthesis,
`torch.no_grad()`, eval mode) in images/s at batch 2, ours against the official algorithm, with the
official CREPS architecture (z_dim = w_dim = 512, channel_base 65536, channel_max 1024, 8 mapping
layers, fc_clamp 256), each resolution in a fresh subprocess. One warm-up forward each (their images
are compared), then `--repeats` timed rounds, each round running both, in alternating order, so that
background load hits both alike; `speedup` = median official time / median our time (= our speed /
official speed), and the per-round ratios give its spread; `*_minor_faults` are the page faults of a
timed forward (the first touches of freshly mapped memory, which large temporaries pay on every
forward). After the timed rounds one more forward of each is timed per stage (mapping, trunk,
composition, decoders, head, other) by module hooks on ours (where decoder_img, the bands' bookkeeping
and the assembly of the output count as 'other') and by the stages of the baseline itself;
`--profile N` adds the N busiest aten ops of one more forward each. `--tile-pixels` passes ours that
forward argument (the band size of its per-pixel stage; default the network's).

Memory (one record per scale, `"bench": "creps_memory"`): peak memory of one forward of a 256 model at
batch 1, output side int(256 * scale), ours (`G(z, None, scale=s)`) against the official algorithm on
lines of that length (what the official code gives after overwriting its `coords` buffer). Each
(implementation, scale) runs in a fresh subprocess: a warm-up forward at scale 1, then free heap goes
back to the OS (gc + malloc_trim), the high-water mark is reset (5 > /proc/self/clear_refs, which
ru_maxrss follows) and the peak is ru_maxrss after the forward minus VmRSS before it, in MiB. Where
the official forward would exceed `--max-ref-mem-gb` (estimated from the largest official point
measured so far, scaled by the pixel count, or from a per-pixel model of its live tensors), that
point is skipped with the reason and the estimate. Each worker also returns the image sampled on a
coarse grid, so ours and the official are compared at every scale too.

Timings are only as good as the machine is quiet: `cpu_s_per_wall_s` well below `torch_threads`
means other processes held the cores; `OMP_WAIT_POLICY=PASSIVE` (recorded) avoids the worst of
OpenMP's busy-waiting under contention. Linux only (reads /proc). Prints one JSON object per record.

    python bench/creps_cpu.py           # 256 and 512, scales 1-8 (about 8 minutes on 2 quiet cores)
    python bench/creps_cpu.py --quick   # 16x16, tiny channels, about 15 s (five fresh processes)
"""

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path[:0] = [p for p in (BENCH_DIR, REPO_ROOT) if p not in sys.path]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from generator_cpu import peak_rss_increase, timed  # noqa: E402  (the memory method lives there)
from torch_utils.ops import bias_act  # noqa: E402
from training import networks_creps  # noqa: E402

# The goals: ours at least this much faster (speed ratio ours/official) at 256 and 512, and at
# most this fraction of the official peak memory at scale 4.
REQUIRED_SPEEDUP = 1.5
REQUIRED_MEM_RATIO = 0.5
MEM_GOAL_SCALE = 4

# ----------------------------------------------------------------------------------------------
# Baseline: the official CREPS algorithm, step by step, on our Generator's tensors.


class _Stages:
    """Wall seconds per stage name; `with stages('trunk'):` adds to it. Disabled when `times` is None."""

    def __init__(self, times=None):
        self.times = times

    @contextlib.contextmanager
    def __call__(self, name):
        if self.times is None:
            yield
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


def official_normalize_2nd_moment(x, dim=1, eps=1e-8):
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def official_fc(layer, x):
    """The official FullyConnectedLayer on x [P, in]: addmm when linear, else matmul then bias_act."""
    w = layer.weight.to(x.dtype) * layer.weight_gain
    b = layer.bias
    if b is not None:
        b = b.to(x.dtype)
        if layer.bias_gain != 1:
            b = b * layer.bias_gain
    if layer.activation == 'linear' and b is not None:
        return torch.addmm(b.unsqueeze(0), x, w.t())
    return bias_act.bias_act(x.matmul(w.t()), b, act=layer.activation, impl='ref')


def official_mapping(mapping, z):
    """The official MappingNetwork (no label, eval mode, no truncation): z -> ws [N, num_ws, w_dim]."""
    x = official_normalize_2nd_moment(z.to(torch.float32))
    for idx in range(mapping.num_layers):
        x = official_fc(getattr(mapping, f'fc{idx}'), x)
    return x.unsqueeze(1).repeat([1, mapping.num_ws, 1])


def official_modulated_fc(x, weight, styles, demodulate=True):
    """The official modulated_fc (float32): per-sample weights, squared for the demodulation, and an einsum."""
    w = weight.unsqueeze(0) * styles.unsqueeze(1)  # [N, O, I]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2]) + 1e-8).rsqrt()  # [N, O]
        w = w * dcoefs.unsqueeze(2)
    return torch.einsum('nihw,noi->nohw', x, w.to(x.dtype))


def official_layer(layer, x, w):
    """The official SynthesisLayer: affine, modulated_fc, bias_act (lrelu, gain sqrt 2, clamp)."""
    styles = official_fc(layer.affine, w)
    x = official_modulated_fc(x, layer.weight, styles)
    return bias_act.bias_act(x, layer.bias.to(x.dtype), act=layer.activation, gain=layer.act_gain,
                             clamp=layer.fc_clamp, impl='ref')


def official_tores(layer, x, w):
    """The official ToResLayer: styles affine(w) / sqrt(in), no demodulation, linear bias_act with clamp."""
    styles = official_fc(layer.affine, w) * layer.weight_gain
    x = official_modulated_fc(x, layer.weight, styles, demodulate=False)
    return bias_act.bias_act(x, layer.bias.to(x.dtype), clamp=layer.fc_clamp, impl='ref')


def official_input(inp, w, length):
    """The official SynthesisInput on lines of `length` samples: [N, C, L, 2R]."""
    coords = torch.linspace(0, 1, length).reshape(1, -1, 1, 1).repeat(1, 1, 2, 1)  # [1, L, 2, 1]
    x = coords.repeat(w.shape[0], 1, 1, 1) @ inp.freqs                               # [N, L, 2, C/2 * R]
    x = x.reshape(*x.shape[:2], 2, inp.channels // 2, inp.rank)
    x = x.permute(0, 3, 1, 2, 4) * (np.pi * 2)                                       # [N, C/2, L, 2, R]
    x = x.reshape(*x.shape[:3], -1)                                                  # [N, C/2, L, 2R]
    x = torch.cat([x, x + np.pi / 2], dim=1)
    x = torch.sin(x)
    weight = inp.weight * official_fc(inp.affine, w).reshape(w.shape[0], inp.channels, 1, -1)
    return x * weight / np.sqrt(inp.channels)


def _official_block_layout(block):
    """(has the Fourier input, number of fc layers, has a ToRes): the official block's structure, which
    sets how many ws it reads (a ToRes counts whether or not it runs)."""
    first = hasattr(block, 'input')
    return first, 1 + hasattr(block, 'fc0'), hasattr(block, 'tores')


def official_block(block, x, res, ws, length):
    """The official SynthesisBlock (float32): input or fc0, fc1, ToRes accumulated into `res`.

    Officially the first block's architecture is forced to 'orig' and the forward tests that (not the
    constructor argument that made its ToRes), so the first block's ToRes runs only if it is the last
    block: b4 gives no skip output, and the composition starts at b8 (decoder_8 goes unused)."""
    first, num_fc, has_tores = _official_block_layout(block)
    assert ws.shape[1] == first + num_fc + has_tores, (ws.shape, first, num_fc, has_tores)
    w_iter = iter(ws.unbind(dim=1))
    # The official block's x.to(dtype, memory_format=contiguous_format) and y.to(...): a copy where the
    # layout differs (the head's input, a permuted view of the pixels), else no-ops.
    fp32 = dict(dtype=torch.float32, memory_format=torch.contiguous_format)
    if first:
        x = official_input(block.input, next(w_iter), length).to(**fp32)
    else:
        x = x.to(**fp32)
        x = official_layer(block.fc0, x, next(w_iter))
    x = official_layer(block.fc1, x, next(w_iter))
    if has_tores and (block.is_last or not first):
        y = official_tores(block.tores, x, next(w_iter)).to(**fp32)
        res = res.add(y) if res is not None else y
    return x, res


def official_decoder(decoder, x):
    """The official decoder, a Sequential of FullyConnectedLayers, on pixels [P, C]."""
    for layer in decoder.children():
        x = official_fc(layer, x)
    return x


def official_synthesis(G, ws, length=None, stage_times=None):
    """The official SynthesisNetwork forward (float32, whole image) on lines of `length` samples (default:
    the trained resolution): ws [N, num_ws, w_dim] -> images [N, img_channels, length, length].
    stage_times: a dict to add wall seconds per stage to (trunk, composition, decoders, head), or None."""
    S = G.synthesis
    stage = _Stages(stage_times)
    length = S.img_resolution if length is None else int(length)
    ws = ws.to(torch.float32)
    block_ws, w_idx = [], 0
    for res in S.block_resolutions:
        first, num_fc, has_tores = _official_block_layout(getattr(S, f'b{res}'))
        block_ws.append(ws.narrow(1, w_idx, first + num_fc + has_tores))
        w_idx += num_fc

    x = biline = feature = None
    for res, cur_ws in zip(S.block_resolutions, block_ws):
        with stage('trunk'):
            x, biline = official_block(getattr(S, f'b{res}'), x, biline, cur_ws, length)
        if biline is not None:
            with stage('composition'):
                x_line, y_line = (biline * np.sqrt(0.5)).chunk(2, dim=-1)
                new_f = x_line @ y_line.transpose(-2, -1)
                batch, channel, height, width = new_f.shape
                new_f = new_f.permute(0, 2, 3, 1).reshape(-1, channel)
            if feature is None:
                feature = new_f
            else:
                with stage('decoders'):
                    feature = official_decoder(getattr(S, f'decoder_{res}'), feature) + new_f
            del new_f
    with stage('decoders'):
        feature = official_decoder(S.decoder_last, feature)
        img = official_fc(S.decoder_img, feature)
    with stage('head'):
        feature = feature.reshape(batch, height, width, -1).permute(0, 3, 1, 2)
        img = img.reshape(batch, height, width, -1).permute(0, 3, 1, 2)
        head_ws = ws[:, -1:, :].repeat(1, 3, 1)
        feature, img = official_block(S.block0, feature, img, head_ws, length)
        feature, img = official_block(S.block1, feature, img, head_ws, length)
    return img


def official_generator(G, z, length=None, stage_times=None):
    """The official Generator forward: official mapping, then official synthesis (float32)."""
    stage = _Stages(stage_times)
    with stage('mapping'):
        ws = official_mapping(G.mapping, z)
    return official_synthesis(G, ws, length, stage_times=stage_times)

# ----------------------------------------------------------------------------------------------
# Ours, timed per stage by hooks (the network is not touched).


@contextlib.contextmanager
def our_stage_timer(G, stage_times):
    """Within the block, G's forwards add wall seconds per stage to `stage_times`: mapping, trunk (blocks
    b4..), decoders (decoder_*, decoder_last), head (block0, block1) by forward hooks, and composition by
    wrapping networks_creps._compose_rows where it exists. What remains of a forward is 'other'."""
    handles, starts = [], {}

    def hook_stage(module, name):
        def pre(mod, args):
            starts[id(mod)] = time.perf_counter()

        def post(mod, args, out):
            stage_times[name] = stage_times.get(name, 0.0) + time.perf_counter() - starts.pop(id(mod))
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))

    S = G.synthesis
    hook_stage(G.mapping, 'mapping')
    for res in S.block_resolutions:
        hook_stage(getattr(S, f'b{res}'), 'trunk')
        if hasattr(S, f'decoder_{res}'):
            hook_stage(getattr(S, f'decoder_{res}'), 'decoders')
    hook_stage(S.decoder_last, 'decoders')
    hook_stage(S.block0, 'head')
    hook_stage(S.block1, 'head')
    original = getattr(networks_creps, '_compose_rows', None)
    if original is not None:
        def timed_compose(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                stage_times['composition'] = stage_times.get('composition', 0.0) + time.perf_counter() - t0
        networks_creps._compose_rows = timed_compose
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        if original is not None:
            networks_creps._compose_rows = original


def stage_record(run):
    """{stage: seconds} of one forward `run(times)` that adds its stage times to `times`, with 'other' and 'total'."""
    times = {}
    total = timed(lambda: run(times))
    times['other'] = max(total - sum(times.values()), 0.0)
    times['total'] = total
    order = ('mapping', 'trunk', 'composition', 'decoders', 'head', 'other', 'total')
    return {k: round(times[k], 4) for k in order if k in times}


def _ours_staged(G, z, times, **synthesis_kwargs):
    with our_stage_timer(G, times):
        return G(z, None, **synthesis_kwargs)

# ----------------------------------------------------------------------------------------------
# Configurations.


def generator_kwargs(resolution, channel_base=65536, channel_max=1024):
    """The official CREPS architecture (its train.py's creps branch: StyleGAN2's channels doubled, the
    class defaults otherwise: fc_clamp 256, no float16 trunk, 8 mapping layers)."""
    return dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=resolution, img_channels=3,
                channel_base=channel_base, channel_max=channel_max, mapping_kwargs=dict(num_layers=8))


def build_generator(G_kwargs):
    torch.manual_seed(0)
    return networks_creps.Generator(**G_kwargs).eval().requires_grad_(False)


def latents(G, batch, seed=1):
    return torch.randn([batch, G.z_dim], generator=torch.Generator().manual_seed(seed))


def official_peak_model_mb(G_kwargs, batch, side):
    """A per-pixel model of the official forward's largest live set: the head's 128-channel layer holds its
    input, the einsum output, x + b and the activation (4 x 128 channels), next to the 32-channel feature
    and the two 3-channel images, all float32."""
    biline = 32
    return batch * side * side * 4 * (4 * 4 * biline + biline + 2 * G_kwargs['img_channels']) / 2 ** 20

# ----------------------------------------------------------------------------------------------
# Helpers.


def _sig(v, digits=4):
    return None if v is None else float(f'{v:.{digits}g}')


def image_diff(a, b):
    diff = (a - b).abs().max().item()
    return diff, diff / max(b.abs().max().item(), 1e-30)


def top_ops(fn, top):
    """The `top` aten ops of one forward by self CPU time: [{op, self_ms, calls}]."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted((e for e in prof.key_averages() if e.key.startswith('aten::')), key=lambda e: -e.self_cpu_time_total)
    return [dict(op=e.key, self_ms=round(e.self_cpu_time_total / 1e3, 1), calls=e.count) for e in events[:top]]

# ----------------------------------------------------------------------------------------------
# Workers (each in a fresh process).


def run_speed(spec):
    """The speed record of one resolution."""
    load_avg = os.getloadavg()[0]
    G = build_generator(spec['G_kwargs'])
    z = latents(G, spec['batch'])
    tile = dict(tile_pixels=spec['tile_pixels']) if spec.get('tile_pixels') else {}
    fns = dict(ours=lambda: G(z, None, **tile), ref=lambda: official_generator(G, z))
    with torch.no_grad():
        img_ours, img_ref = fns['ours'](), fns['ref']()  # warm-up, compared before any timing
        diff, diff_rel = image_diff(img_ours, img_ref)
        if not diff <= spec['tolerance']:
            raise SystemExit(f'{spec["config"]}: ours and the official algorithm differ by {diff:.3g} '
                             f'(> {spec["tolerance"]:g}); not timing different functions')
        times, faults = dict(ours=[], ref=[]), dict(ours=[], ref=[])
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for i in range(spec['repeats']):
            for name in (('ours', 'ref') if i % 2 == 0 else ('ref', 'ours')):
                faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                times[name].append(timed(fns[name]))
                faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0)
        cpu_per_wall = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        ours_stages = stage_record(lambda times: _ours_staged(G, z, times, **tile))
        ref_stages = stage_record(lambda times: official_generator(G, z, stage_times=times))
        profiles = {}
        if spec['profile']:
            profiles = dict(ours_top_ops=top_ops(fns['ours'], spec['profile']),
                            ref_top_ops=top_ops(fns['ref'], spec['profile']))
    t_ours, t_ref = statistics.median(times['ours']), statistics.median(times['ref'])
    round_ratios = [r / o for o, r in zip(times['ours'], times['ref'])]
    speedup = t_ref / t_ours
    return dict(
        bench='creps_speed', config=spec['config'], resolution=spec['G_kwargs']['img_resolution'],
        batch=spec['batch'], dtype='float32', G_kwargs=spec['G_kwargs'], torch_threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(), omp_wait_policy=os.environ.get('OMP_WAIT_POLICY'), load_avg_1m=round(load_avg, 2),
        cpu_s_per_wall_s=round(cpu_per_wall, 2), repeats=spec['repeats'],
        ours_fwd_s=round(t_ours, 4), ref_fwd_s=round(t_ref, 4),
        ours_fwd_times_s=[round(t, 4) for t in times['ours']], ref_fwd_times_s=[round(t, 4) for t in times['ref']],
        ours_img_s=_sig(spec['batch'] / t_ours), ref_img_s=_sig(spec['batch'] / t_ref),
        speedup=round(speedup, 3), speedup_rounds_min=round(min(round_ratios), 3),
        speedup_rounds_max=round(max(round_ratios), 3),
        required_speedup=REQUIRED_SPEEDUP, meets_speed_goal=bool(speedup >= REQUIRED_SPEEDUP),
        ours_stages_s=ours_stages, ref_stages_s=ref_stages, tile_pixels=spec.get('tile_pixels'),
        ours_minor_faults=int(statistics.median(faults['ours'])), ref_minor_faults=int(statistics.median(faults['ref'])),
        max_abs_diff=_sig(diff, 3), max_abs_diff_rel=_sig(diff_rel, 3), tolerance=spec['tolerance'], **profiles)


def run_memory(spec):
    """One (implementation, scale) point: the peak RSS increase of one forward, and a coarse sample of the image."""
    G = build_generator(spec['G_kwargs'])
    z = latents(G, spec['batch'])
    side = int(G.img_resolution * spec['scale'])
    if spec['impl'] == 'ours':
        forward = lambda scale: G(z, None, scale=scale)
    else:
        forward = lambda scale: official_generator(G, z, length=int(G.img_resolution * scale))
    with torch.no_grad():
        forward(1)  # warm-up at the trained size: libraries initialised, nothing large kept
        t0 = time.perf_counter()
        img, peak_mb = peak_rss_increase(lambda: forward(spec['scale']))
        wall = time.perf_counter() - t0
    assert img.shape == (spec['batch'], G.img_channels, side, side), img.shape
    step = max(1, side // 8)
    return dict(impl=spec['impl'], scale=spec['scale'], side=side, peak_mem_mb=_sig(peak_mb, 5),
                fwd_s=round(wall, 3), sample=img[:, :, ::step, ::step].flatten().tolist())


def _worker(kind, spec, threads):
    result = subprocess.run([sys.executable, os.path.abspath(__file__), '--threads', str(threads),
                             f'--worker-{kind}', json.dumps(spec)], stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(f'{kind} worker {spec} failed with exit code {result.returncode}')
    return json.loads(result.stdout.strip().splitlines()[-1])


def memory_records(args, G_kwargs):
    """One record per scale: ours and the official algorithm, each measured in its own process."""
    largest_ref = None  # (pixels, peak MiB) of the largest official point measured
    for scale in args.scales:
        side = int(G_kwargs['img_resolution'] * scale)
        pixels = args.mem_batch * side * side
        estimate = official_peak_model_mb(G_kwargs, args.mem_batch, side)
        if largest_ref is not None:
            estimate = max(estimate, largest_ref[1] * pixels / largest_ref[0])
        spec = dict(G_kwargs=G_kwargs, batch=args.mem_batch, scale=scale)
        ours = _worker('memory', dict(spec, impl='ours'), args.threads)
        record = dict(bench='creps_memory', resolution=G_kwargs['img_resolution'], scale=scale, side=side,
                      batch=args.mem_batch, dtype='float32', G_kwargs=G_kwargs, torch_threads=args.threads,
                      peak_mem_mb=ours['peak_mem_mb'], ours_fwd_s=ours['fwd_s'],
                      ref_peak_mem_mb=None, ref_fwd_s=None, ref_mem_estimate_mb=round(estimate, 1),
                      ref_skipped=None, mem_ratio=None, max_abs_diff=None)
        if estimate > args.max_ref_mem_gb * 1024:
            record['ref_skipped'] = (f'the official forward would need about {estimate / 1024:.1f} GiB '
                                     f'(> --max-ref-mem-gb {args.max_ref_mem_gb:g})')
        else:
            ref = _worker('memory', dict(spec, impl='ref'), args.threads)
            largest_ref = (pixels, ref['peak_mem_mb'])
            diff = float(np.max(np.abs(np.array(ours['sample']) - np.array(ref['sample']))))
            if not diff <= args.tolerance:
                sys.exit(f'scale {scale}: ours and the official algorithm differ by {diff:.3g} (> {args.tolerance:g})')
            record.update(ref_peak_mem_mb=ref['peak_mem_mb'], ref_fwd_s=ref['fwd_s'], max_abs_diff=_sig(diff, 3))
            if ours['peak_mem_mb'] is not None and ref['peak_mem_mb']:
                record['mem_ratio'] = round(ours['peak_mem_mb'] / ref['peak_mem_mb'], 3)
        if scale == MEM_GOAL_SCALE:
            record.update(required_mem_ratio=REQUIRED_MEM_RATIO, meets_mem_goal=None if record['mem_ratio'] is None
                          else bool(record['mem_ratio'] <= REQUIRED_MEM_RATIO))
        yield record

# ----------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='16x16, channel_base 1024, channel_max 64, scales 1 2')
    parser.add_argument('--parts', nargs='+', choices=['speed', 'memory'], default=['speed', 'memory'])
    parser.add_argument('--resolutions', type=int, nargs='+', default=None, help='speed: resolutions (256 512)')
    parser.add_argument('--batch', type=int, default=2, help='speed: batch size (2)')
    parser.add_argument('--channel-base', type=int, default=None, help='channel_base (65536)')
    parser.add_argument('--channel-max', type=int, default=None, help='channel_max (1024)')
    parser.add_argument('--repeats', type=int, default=None, help='speed: timed rounds, each runs both (5)')
    parser.add_argument('--tile-pixels', type=int, default=None,
                        help="speed: ours' tile_pixels forward argument (default: the network's)")
    parser.add_argument('--profile', type=int, default=0, help='speed: also list the N busiest aten ops of each')
    parser.add_argument('--mem-resolution', type=int, default=None, help='memory: the model resolution (256)')
    parser.add_argument('--mem-batch', type=int, default=1, help='memory: batch size (1)')
    parser.add_argument('--scales', type=float, nargs='+', default=None, help='memory: scales (1 2 4 8)')
    parser.add_argument('--max-ref-mem-gb', type=float, default=12.0,
                        help='memory: skip official points estimated above this many GiB (12)')
    parser.add_argument('--tolerance', type=float, default=1e-3, help='max abs image difference allowed (1e-3)')
    parser.add_argument('--threads', type=int, default=os.cpu_count() or 1, help='torch threads (default: all cores)')
    parser.add_argument('--worker-speed', default=None, help=argparse.SUPPRESS)   # one resolution, as JSON
    parser.add_argument('--worker-memory', default=None, help=argparse.SUPPRESS)  # one (impl, scale), as JSON
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.worker_speed is not None:
        print(json.dumps(run_speed(json.loads(args.worker_speed))), flush=True)
        return
    if args.worker_memory is not None:
        print(json.dumps(run_memory(json.loads(args.worker_memory))), flush=True)
        return

    quick = args.quick
    base = args.channel_base or (1024 if quick else 65536)
    cmax = args.channel_max or (64 if quick else 1024)
    resolutions = args.resolutions or ([16] if quick else [256, 512])
    repeats = args.repeats or (2 if quick else 5)
    args.scales = [int(s) if float(s).is_integer() else s for s in (args.scales or ([1, 2] if quick else [1, 2, 4, 8]))]
    mem_resolution = args.mem_resolution or (16 if quick else 256)

    if 'speed' in args.parts:
        for resolution in resolutions:
            spec = dict(config=f'creps-{resolution}', G_kwargs=generator_kwargs(resolution, base, cmax),
                        batch=args.batch, repeats=repeats, tolerance=args.tolerance, profile=args.profile,
                        tile_pixels=args.tile_pixels)
            print(json.dumps(_worker('speed', spec, args.threads)), flush=True)
    if 'memory' in args.parts:
        for record in memory_records(args, generator_kwargs(mem_resolution, base, cmax)):
            print(json.dumps(record), flush=True)


if __name__ == '__main__':
    main()
