"""The training loop shared by every config: phases, EMA, ADA, ticks, snapshots, exact resume.

One function, `training_loop(**kwargs)`, runs in every process of a (possibly distributed) run; it
expects `torch_utils.distributed` to be set up already (train.py does that through
`distributed.launch`).

How it differs from the official loop, and why:
- **Randomness depends only on what is being computed, not on the process layout.** Each global
  batch is split into chunks of `batch_gpu` images; chunk k of a step always holds the same images,
  latents and labels, and the random draws inside G, D, the loss and the augmentation pipe are
  seeded from (seed, step, phase, k). So a run on 1 process with gradient accumulation and a run on
  N processes compute the same gradients (up to float summation order), and a resumed run repeats
  exactly what the uninterrupted one would have done, without saving any RNG state.
- **Gradients are averaged over the whole batch**: each chunk's loss is weighted by 1/chunks per
  process, and the all-reduced sum is divided by the number of processes (the official loop sums
  over accumulation rounds instead; Adam barely notices the scale, but equality across layouts does).
- **Options some recipes need** (off by default): `grad_clip` clips each network's total gradient
  norm after accumulation and averaging, before its optimizer step; `ema_warmup` caps the EMA decay
  at (1 + n) / (10 + n) at the n-th update, as torch_ema does; `param_groups` in G_opt_kwargs /
  D_opt_kwargs give the parameters under named submodules their own optimizer settings.
- **Mixed precision** (`amp`, CUDA only, off by default; GRAM's recipe): forwards under autocast,
  losses times a dynamic scale, gradients unscaled before clipping, non-finite steps skipped
  (training/mixed_precision.py).
- **Exact resume**: beside every network snapshot a training state holds the optimizer states,
  counters, loss and ADA state (see training/snapshots.py).
- **Preemption**: SIGTERM or SIGINT makes every process stop at the same step and write a
  resumable snapshot; non-finite losses stop the run with the phase and tick named.
"""

import copy
import json
import os
import signal
import time

import numpy as np
import PIL.Image
import torch

import dnnlib
from torch_utils import distributed, misc, training_stats
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
from training import capabilities, snapshots
from training.mixed_precision import MixedPrecision
from training.dataset import DatasetError

#----------------------------------------------------------------------------

class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training on would only spread garbage into the weights."""

#----------------------------------------------------------------------------
# Data order: every process reads its own contiguous slice of each global batch.

class BatchSliceSampler(torch.utils.data.Sampler):
    """Indices of one process's share of the global stream of `misc.InfiniteSampler`.

    The stream is cut into global batches of `batch_size`; process `rank` of `num_replicas` takes
    positions [rank * b, (rank + 1) * b) of each, b = batch_size / num_replicas. Chunk k of
    `batch_gpu` images therefore holds the same images for any number of processes.
    """

    def __init__(self, dataset, batch_size, rank, num_replicas, seed, start_index):
        super().__init__()
        self.stream = misc.InfiniteSampler(dataset, rank=0, num_replicas=1, seed=seed, start_index=start_index)
        share = batch_size // num_replicas
        self.batch_size, self.lo, self.hi = batch_size, rank * share, (rank + 1) * share

    def __iter__(self):
        for position, index in enumerate(self.stream):
            if self.lo <= position % self.batch_size < self.hi:
                yield index

def _next_batch(iterator):
    try:
        return next(iterator)
    except DatasetError as error:
        # An error in a DataLoader worker comes back with the worker's traceback in its message;
        # keep only the original sentence.
        lines = [line for line in str(error).splitlines() if 'DatasetError: ' in line]
        raise DatasetError(lines[-1].split('DatasetError: ', 1)[1] if lines else str(error)) from None

def _ignore_stop_signals(_worker_id):
    # DataLoader workers share the terminal's process group: Ctrl-C must not kill them while the
    # main process is still writing its snapshot (they exit with it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

#----------------------------------------------------------------------------
# Randomness derived from (seed, step, ...), independent of the process layout.

def _derived_seed(*numbers):
    return int(np.random.SeedSequence([int(n) for n in numbers]).generate_state(1)[0])

def _seed_device_rng(device, *numbers):
    seed = _derived_seed(*numbers)
    torch.random.default_generator.manual_seed(seed)
    if device.type == 'cuda':
        torch.cuda.manual_seed(seed)

def _draw_generator_inputs(training_set, z_dim, num_phases, batch_size, seed, batch_idx):
    """Latents [phases, batch, z_dim] and labels [phases, batch, c_dim] for one step (all processes)."""
    torch_gen = torch.Generator().manual_seed(_derived_seed(seed, batch_idx, 1))
    all_z = torch.randn([num_phases, batch_size, z_dim], generator=torch_gen)
    rnd = np.random.RandomState(_derived_seed(seed, batch_idx, 2) % (1 << 31))
    indices = rnd.randint(len(training_set), size=num_phases * batch_size)
    labels = np.stack([training_set.get_label(i) for i in indices]).reshape(num_phases, batch_size, -1)
    return all_z, torch.from_numpy(labels)

#----------------------------------------------------------------------------
# Image grids.

def default_grid_size(resolution, device_type='cuda'):
    """The official grid (about 7680x4320 pixels, 7..32 columns and 4..32 rows) on GPUs; 8x4 on the CPU.

    Up to 1024 images per snapshot take seconds on a GPU but minutes on a CPU, for every snapshot.
    """
    if device_type == 'cpu':
        return 8, 4
    return int(np.clip(7680 // resolution, 7, 32)), int(np.clip(4320 // resolution, 4, 32))

def setup_snapshot_image_grid(training_set, grid_size, random_seed=0):
    """Dataset indices for the grid; class-labelled data gets one class per row."""
    gw, gh = grid_size
    rnd = np.random.RandomState(random_seed)
    order = rnd.permutation(len(training_set)).tolist()
    if not training_set.has_onehot_labels:
        indices = [order[i % len(order)] for i in range(gw * gh)]
    else:
        by_label = dict()
        for idx in order:
            by_label.setdefault(tuple(training_set.get_details(idx).raw_label.flat), []).append(idx)
        keys = sorted(by_label)
        indices = []
        for row in range(gh):
            members = by_label[keys[row % len(keys)]]
            indices += [members[i % len(members)] for i in range(gw)]
    images, labels = zip(*[training_set[i] for i in indices])
    return np.stack(images), np.stack(labels)

def save_image_grid(images, path, drange, grid_size):
    """Write NCHW images as one PNG (rows of `grid_size[0]` images), atomically."""
    lo, hi = drange
    images = np.asarray(images, dtype=np.float32)
    images = np.rint((images - lo) * (255 / (hi - lo))).clip(0, 255).astype(np.uint8)
    gw, gh = grid_size
    _n, channels, height, width = images.shape
    grid = images.reshape(gh, gw, channels, height, width).transpose(0, 3, 1, 4, 2).reshape(gh * height, gw * width, channels)
    image = PIL.Image.fromarray(grid[:, :, 0], 'L') if channels == 1 else PIL.Image.fromarray(grid, 'RGB')
    snapshots.atomic_write(path, lambda f: image.save(f, format='PNG'))

def _generate_grid(G_ema, grid_z, grid_c, batch):
    """{file suffix: NCHW images}: '' for the image, plus a dict generator's other images (EG3D: '_raw', '_depth')."""
    parts = {}
    options = dict(noise_mode='const') if capabilities.accepts(G_ema, 'noise_mode') else {}  # GRAM's G has no noise
    with torch.no_grad():
        for z, c in zip(grid_z.split(batch), grid_c.split(batch)):
            for suffix, images in capabilities.image_outputs(G_ema, G_ema(z, c, **options)).items():
                parts.setdefault(suffix, []).append(images.cpu())
    return {suffix: torch.cat(images).numpy() for suffix, images in parts.items()}

def save_generated_grid(grids, path, grid_size):
    """Write the grids of _generate_grid: `path` for the image, `<stem><suffix>.png` for the others.

    Images are in [-1, 1]; depth (a one-channel '_depth') is shown as EG3D does: negated, over its own range.
    """
    stem, ext = os.path.splitext(path)
    for suffix, images in grids.items():
        drange = [-1, 1]
        if suffix == '_depth':
            images = -images
            drange = [float(images.min()), float(images.max()) + 1e-8]
        save_image_grid(images, stem + suffix + ext, drange=drange, grid_size=grid_size)

#----------------------------------------------------------------------------
# Stop requests (preemption, Ctrl-C).

class StopSignals:
    """Remembers the first SIGTERM / SIGINT; later ones are ignored so the snapshot can finish."""

    def __init__(self):
        self.signum = 0
        self._previous = dict()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def _handle(self, signum, _frame):
        if self.signum == 0:
            self.signum = signum
            if distributed.is_main():
                print(f'\nReceived {signal.Signals(signum).name}: stopping after the current step and writing a '
                      f'resumable snapshot (send SIGKILL to abort without one).', flush=True)

    def restore(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

#----------------------------------------------------------------------------

def _cpu_mem_gb():
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**30
    except (OSError, ValueError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

def _broadcast_module(module):
    for tensor in misc.params_and_buffers(module):
        torch.distributed.broadcast(tensor, src=0)

def _all_reduce_max(values, device):
    flags = torch.as_tensor(values, dtype=torch.float32, device=device)
    if distributed.get_world_size() > 1:
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    return flags.cpu().tolist()

def _average_gradients(module, world_size):
    params = [param for param in module.parameters() if param.numel() > 0 and param.grad is not None]
    if len(params) == 0:
        return
    flat = torch.cat([param.grad.flatten() for param in params])
    if world_size > 1:
        torch.distributed.all_reduce(flat)
        flat /= world_size
    torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
    for param, grad in zip(params, flat.split([param.numel() for param in params])):
        param.grad = grad.reshape(param.shape)

def _optimizer_params(module, param_groups):
    """The `params` argument of an optimizer for `module`: its parameters, or groups of them.

    `param_groups` (the optional `param_groups` entry of G_opt_kwargs / D_opt_kwargs) is a list of
    dicts, each with a `prefix` (a submodule path, e.g. 'representation.sample_network') and the
    optimizer settings of its group (e.g. lr). A parameter named `prefix` or `prefix.<...>` joins the
    first entry that names it; the others form a last group with the optimizer's own settings.
    """
    if not param_groups:
        return module.parameters()
    named = list(module.named_parameters())
    groups, taken = [], set()
    for entry in param_groups:
        entry = dict(entry)
        prefix = entry.pop('prefix', None)
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f'Each param_groups entry needs a "prefix" naming a submodule; got {entry}.')
        names = [name for name, _ in named if name not in taken and (name == prefix or name.startswith(prefix + '.'))]
        if not names:
            raise ValueError(f'param_groups prefix "{prefix}" names no parameter of {type(module).__name__} that an '
                             f'earlier entry has not taken.')
        taken.update(names)
        chosen = set(names)
        groups.append(dict(entry, params=[param for name, param in named if name in chosen]))
    rest = [param for name, param in named if name not in taken]
    if rest:
        groups.append(dict(params=rest))
    return groups

def _load_optimizer_state(opt, saved):
    # Hyper-parameters come from this run's options (the user may have changed --glr); moments from the state.
    current = [{key: value for key, value in group.items() if key != 'params'} for group in opt.param_groups]
    opt.load_state_dict(saved)
    for group, hyper in zip(opt.param_groups, current):
        group.update(hyper)

#----------------------------------------------------------------------------

def training_loop(
    run_dir                 = '.',      # Output directory.
    training_set_kwargs     = {},       # Options for training set.
    data_loader_kwargs      = {},       # Options for torch.utils.data.DataLoader.
    G_kwargs                = {},       # Options for generator network.
    D_kwargs                = {},       # Options for discriminator network.
    G_opt_kwargs            = {},       # Options for generator optimizer.
    D_opt_kwargs            = {},       # Options for discriminator optimizer.
    augment_kwargs          = None,     # Options for augmentation pipeline. None = disable.
    loss_kwargs             = {},       # Options for loss function.
    metrics                 = [],       # Metrics to evaluate after each network snapshot.
    metric_detectors        = {},       # Detector locations overriding the defaults, e.g. {'inception': path}.
    random_seed             = 0,        # Global random seed.
    num_gpus                = 1,        # Number of processes (must equal the distributed world size).
    batch_size              = 4,        # Total batch size for one training iteration.
    batch_gpu               = 4,        # Images per chunk (gradient accumulation inside a process).
    ema_kimg                = 10,       # Half-life of the exponential moving average (EMA) of generator weights.
    ema_rampup              = 0.05,     # EMA ramp-up coefficient. None = no rampup.
    G_reg_interval          = None,     # How often to perform regularization for G? None = disable lazy regularization.
    D_reg_interval          = 16,       # How often to perform regularization for D? None = disable lazy regularization.
    augment_p               = 0,        # Initial value of augmentation probability.
    ada_target              = None,     # ADA target value. None = fixed p.
    ada_interval            = 4,        # How often to perform ADA adjustment?
    ada_kimg                = 500,      # ADA adjustment speed, measured in how many kimg it takes for p to increase/decrease by one unit.
    total_kimg              = 25000,    # Total length of the training, measured in thousands of real images.
    kimg_per_tick           = 4,        # Progress snapshot interval.
    image_snapshot_ticks    = 50,       # How often to save image snapshots? None = disable.
    network_snapshot_ticks  = 50,       # How often to save network snapshots? None = disable.
    resume_pkl              = None,     # Network pickle (path or URL) to resume from.
    resume_state            = None,     # Training state beside resume_pkl: continue exactly.
    trust_code              = False,    # Execute code embedded in resume_pkl (only for files you trust).
    cudnn_benchmark         = True,     # Enable torch.backends.cudnn.benchmark?
    grid_size               = None,     # (columns, rows) of the image snapshots; None = default_grid_size().
    check_interval          = 4,        # Steps between checks for stop signals and non-finite losses.
    grad_clip               = None,     # {'G': max_norm, 'D': max_norm}: clip that network's total gradient 2-norm before each step. None = never.
    ema_warmup              = False,    # Cap the EMA decay at (1 + n) / (10 + n) at the n-th update (torch_ema's warm-up)?
    amp                     = False,    # Autocast forwards to float16 with dynamic loss scaling (CUDA only; training/mixed_precision.py).
    saved_options           = None,     # JSON-able options stored in each training state (train.py's).
):
    """Train on the device set up by torch_utils.distributed; return EasyDict(status='done'|'interrupted',
    signum, snapshot_pkl, cur_nimg)."""
    start_time = time.time()
    device = distributed.get_device()
    rank, world_size = distributed.get_rank(), distributed.get_world_size()
    if num_gpus != world_size:
        raise ValueError(f'num_gpus={num_gpus} but {world_size} processes are running.')
    if batch_size % (world_size * batch_gpu) != 0:
        raise ValueError(f'batch_size={batch_size} must be a multiple of num_gpus * batch_gpu = {world_size * batch_gpu}.')
    grad_clip = dict(grad_clip or {})
    if not set(grad_clip) <= {'G', 'D'} or any(value is not None and not value > 0 for value in grad_clip.values()):
        raise ValueError(f'grad_clip must map "G" and/or "D" to a positive maximum gradient norm, got {grad_clip}.')
    is_main = rank == 0
    log = print if is_main else (lambda *args, **kwargs: None)

    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 changes the numerics the official results rely on
    torch.backends.cudnn.allow_tf32 = False
    conv2d_gradfix.enabled = True
    grid_sample_gradfix.enabled = True
    if world_size > 1:
        training_stats.init_multiprocessing(rank=rank, sync_device=device if device.type == 'cuda' else None)

    # Counters (restored by an exact resume).
    state = snapshots.load_training_state(resume_state) if resume_state is not None else None
    cur_nimg = state['cur_nimg'] if state else 0
    cur_tick = state['cur_tick'] if state else 0
    tick_start_nimg = state['tick_start_nimg'] if state else cur_nimg
    batch_idx = state['batch_idx'] if state else 0
    ada_signs = list(state['ada_signs']) if state else [0, 0]  # [count, sum] since the last ADA adjustment

    # Data.
    log('Loading training set...')
    training_set = dnnlib.util.construct_class_by_name(**training_set_kwargs)
    loader_kwargs = dict(data_loader_kwargs)
    if loader_kwargs.get('num_workers', 0) == 0:
        loader_kwargs.pop('prefetch_factor', None)
    else:
        loader_kwargs['worker_init_fn'] = _ignore_stop_signals
    log(f'Num images:  {len(training_set)}\nImage shape: {training_set.image_shape}\nLabel shape: {training_set.label_shape}\n')

    # Networks: identical on every process (same seed), then broadcast anyway to be safe.
    log('Constructing networks...')
    torch.manual_seed(random_seed)
    common_kwargs = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution,
                         img_channels=training_set.num_channels)
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe = None
    if augment_kwargs is not None and (augment_p > 0 or ada_target is not None):
        augment_pipe = dnnlib.util.construct_class_by_name(**augment_kwargs).train().requires_grad_(False).to(device)
        augment_pipe.p.copy_(torch.as_tensor(state['augment_p'] if state else augment_p))

    if resume_pkl is not None:
        log(f'Resuming from "{resume_pkl}"' + (' (exact continuation)' if state else ' (weights only)'))
        resume_data = snapshots.load_network_snapshot(resume_pkl, trust_code=trust_code)
        report = snapshots.copy_weights_by_name(resume_data, dict(G=G, D=D, G_ema=G_ema), resume_pkl)
        if report['widened'] or report['kept']:
            log(f'Weights of another model: {len(report["widened"])} tensor(s) of other shapes got the source '
                f'tensor in their leading part ({", ".join(report["widened"])}); {len(report["kept"])} stayed at '
                f'their initialisation ({", ".join(report["kept"]) or "none"}).')
        del resume_data
    if world_size > 1:
        for module in (G, D, G_ema, augment_pipe):
            if module is not None:
                _broadcast_module(module)

    # Loss and phases (lazy regularisation scales lr and betas like the official loop).
    loss = dnnlib.util.construct_class_by_name(device=device, G=G, D=D, augment_pipe=augment_pipe, **loss_kwargs)
    mixed_precision, note = MixedPrecision.for_device(device, amp)
    if note:
        log(note)
    loss.mixed_precision = mixed_precision
    phases = []
    optimizers = dict()
    for name, module, opt_kwargs, reg_interval in [('G', G, G_opt_kwargs, G_reg_interval), ('D', D, D_opt_kwargs, D_reg_interval)]:
        opt_kwargs = dnnlib.EasyDict(opt_kwargs)
        param_groups = [dict(entry) for entry in opt_kwargs.pop('param_groups', None) or []]
        clip = grad_clip.get(name)
        if reg_interval is None:
            params = _optimizer_params(module, param_groups)
            optimizers[name] = dnnlib.util.construct_class_by_name(params=params, **opt_kwargs)
            phases.append(dnnlib.EasyDict(name=name + 'both', module=module, opt=optimizers[name], interval=1, clip=clip))
        else:
            mb_ratio = reg_interval / (reg_interval + 1)
            for settings in [opt_kwargs] + param_groups:
                if 'lr' in settings:
                    settings['lr'] = settings['lr'] * mb_ratio
                if 'betas' in settings:
                    settings['betas'] = [beta ** mb_ratio for beta in settings['betas']]
            params = _optimizer_params(module, param_groups)
            optimizers[name] = dnnlib.util.construct_class_by_name(params=params, **opt_kwargs)
            phases.append(dnnlib.EasyDict(name=name + 'main', module=module, opt=optimizers[name], interval=1, clip=clip))
            phases.append(dnnlib.EasyDict(name=name + 'reg', module=module, opt=optimizers[name], interval=reg_interval,
                                          clip=clip))
    if state:
        for name, opt in optimizers.items():
            _load_optimizer_state(opt, state['optimizers'][name])
        loss.load_state_dict(state['loss'])
        mixed_precision.load_state_dict(state.get('amp', {}))
    ada_stats = training_stats.Collector(regex='Loss/signs/real') if (augment_pipe is not None and ada_target is not None) else None

    # Image grid.
    grid_size = tuple(grid_size) if grid_size is not None else default_grid_size(training_set.resolution, device.type)
    grid_z = grid_c = None
    if is_main:
        log('Exporting sample images...')
        grid_images, grid_labels = setup_snapshot_image_grid(training_set, grid_size, random_seed)
        save_image_grid(grid_images, os.path.join(run_dir, 'reals.png'), drange=[0, 255], grid_size=grid_size)
        grid_z = torch.randn([len(grid_images), G.z_dim], generator=torch.Generator().manual_seed(random_seed)).to(device)
        grid_c = torch.from_numpy(grid_labels).to(device)
        save_generated_grid(_generate_grid(G_ema, grid_z, grid_c, batch_gpu), os.path.join(run_dir, 'fakes_init.png'),
                            grid_size)

    # Logs.
    stats_collector = training_stats.Collector(regex='.*')
    stats_jsonl = stats_tfevents = None
    if is_main:
        stats_jsonl = open(os.path.join(run_dir, 'stats.jsonl'), 'at')
        try:
            import torch.utils.tensorboard as tensorboard
            stats_tfevents = tensorboard.SummaryWriter(run_dir)
        except ImportError as error:
            print('Skipping tfevents export:', error)

    def training_state(next_tick, next_tick_start_nimg, snapshot_name):
        return dict(cur_nimg=cur_nimg, cur_tick=next_tick, tick_start_nimg=next_tick_start_nimg, batch_idx=batch_idx,
                    optimizers={name: opt.state_dict() for name, opt in optimizers.items()}, loss=loss.state_dict(),
                    amp=mixed_precision.state_dict(),
                    augment_p=float(augment_pipe.p) if augment_pipe is not None else 0.0, ada_signs=list(ada_signs),
                    world_size=world_size, options=saved_options, snapshot=snapshot_name)

    def save_snapshot(next_tick, next_tick_start_nimg):
        """Write network-snapshot-<kimg>.pkl and its training state (collective); return the pkl path."""
        modules = dict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe)
        if world_size > 1:
            for module in modules.values():
                if module is not None:
                    misc.check_ddp_consistency(module, ignore_regex=r'.*\.[^.]+_(avg|ema)')
        snapshot_pkl = None
        if is_main:
            snapshot_pkl = snapshots.unused_path(os.path.join(run_dir, f'network-snapshot-{cur_nimg // 1000:06d}.pkl'))
            snapshots.save_network_snapshot(snapshot_pkl, modules, training_set_kwargs)
            snapshots.save_training_state(snapshots.state_path_for(snapshot_pkl),
                                          training_state(next_tick, next_tick_start_nimg, os.path.basename(snapshot_pkl)))
        distributed.barrier()
        return snapshot_pkl

    # Train.
    log(f'Training for {total_kimg} kimg...\n')
    stop = StopSignals()
    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    snapshot_pkl = None
    result = dnnlib.EasyDict(status='done', signum=0, snapshot_pkl=None)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    sampler = BatchSliceSampler(training_set, batch_size, rank, world_size, seed=random_seed, start_index=cur_nimg)
    training_set_iterator = iter(torch.utils.data.DataLoader(dataset=training_set, sampler=sampler,
                                                             batch_size=batch_size // world_size, **loader_kwargs))
    try:
        while True:
            # Fetch data: this process's share of the global batch, in chunks of batch_gpu.
            phase_real_img, phase_real_c = _next_batch(training_set_iterator)
            phase_real_img = (phase_real_img.to(device).to(torch.float32) / 127.5 - 1).split(batch_gpu)
            phase_real_c = phase_real_c.to(device).split(batch_gpu)
            num_chunks = len(phase_real_img)
            share = slice(rank * (batch_size // world_size), (rank + 1) * (batch_size // world_size))
            all_gen_z, all_gen_c = _draw_generator_inputs(training_set, G.z_dim, len(phases), batch_size, random_seed, batch_idx)

            for phase_idx, phase in enumerate(phases):
                if batch_idx % phase.interval != 0:
                    continue
                phase_start = time.perf_counter()
                gen_z = all_gen_z[phase_idx, share].to(device).split(batch_gpu)
                gen_c = all_gen_c[phase_idx, share].to(device).split(batch_gpu)
                phase.opt.zero_grad(set_to_none=True)
                phase.module.requires_grad_(True)
                gain = phase.interval / num_chunks * mixed_precision.loss_scale()
                for chunk, (real_img, real_c, z, c) in enumerate(zip(phase_real_img, phase_real_c, gen_z, gen_c)):
                    _seed_device_rng(device, random_seed, batch_idx, phase_idx, rank * num_chunks + chunk)
                    loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=z, gen_c=c,
                                              gain=gain, cur_nimg=cur_nimg)
                phase.module.requires_grad_(False)
                _average_gradients(phase.module, world_size)
                mixed_precision.unscale_(phase.opt)
                if phase.clip is not None:
                    torch.nn.utils.clip_grad_norm_([p for p in phase.module.parameters() if p.grad is not None],
                                                   phase.clip)
                mixed_precision.step(phase.opt)
                if device.type != 'cuda':
                    training_stats.report('Timing/' + phase.name, time.perf_counter() - phase_start)

            mixed_precision.update()

            # Generator EMA; buffers are copied, not averaged.
            ema_nimg = ema_kimg * 1000
            if ema_rampup is not None:
                ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
            ema_beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
            if ema_warmup:  # torch_ema's use_num_updates: this is update number batch_idx + 1
                ema_beta = min(ema_beta, (1 + (batch_idx + 1)) / (10 + (batch_idx + 1)))
            with torch.no_grad():
                for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                    p_ema.copy_(p.lerp(p_ema, ema_beta))
                for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                    b_ema.copy_(b)
            for name in capabilities.state_attributes(G):
                setattr(G_ema, name, copy.deepcopy(getattr(G, name)))

            cur_nimg += batch_size
            batch_idx += 1

            # ADA: move p towards the target overfitting heuristic E[sign(D(real))].
            if ada_stats is not None and batch_idx % ada_interval == 0:
                ada_stats.update()
                count = ada_stats.num('Loss/signs/real')
                ada_signs = [ada_signs[0] + count,
                             ada_signs[1] + (round(ada_stats.mean('Loss/signs/real') * count) if count else 0)]
                if ada_signs[0] > 0:
                    adjust = np.sign(ada_signs[1] / ada_signs[0] - ada_target) * (batch_size * ada_interval) / (ada_kimg * 1000)
                    augment_pipe.p.copy_((augment_pipe.p + adjust).clamp(min=0))
                ada_signs = [0, 0]

            done = cur_nimg >= total_kimg * 1000
            tick_due = done or cur_tick == 0 or cur_nimg >= tick_start_nimg + kimg_per_tick * 1000
            if tick_due or batch_idx % check_interval == 0:
                bad_terms = loss.nonfinite_terms()
                stop_signum, any_bad = _all_reduce_max([stop.signum, len(bad_terms) > 0], device)
                if any_bad:
                    where = ', '.join(bad_terms) or 'in another process'
                    raise NonFiniteLossError(f'A non-finite loss ({where}, as phase/loss) appeared during tick {cur_tick} '
                                             f'(before kimg {cur_nimg / 1000:.3f}); the run stopped without saving it. '
                                             f'Lower the learning rates or --gamma, or use --fp32, and resume from the last snapshot.')
                if stop_signum:
                    snapshot_pkl = save_snapshot(cur_tick, tick_start_nimg)
                    result.update(status='interrupted', signum=int(stop_signum), snapshot_pkl=snapshot_pkl)
                    log(f'Stopped at kimg {cur_nimg / 1000:.3f}; resumable snapshot: {snapshot_pkl}')
                    break
            if not tick_due:
                continue

            # Tick: status line.
            tick_end_time = time.time()
            fields = []
            fields += [f"tick {training_stats.report0('Progress/tick', cur_tick):<5d}"]
            fields += [f"kimg {training_stats.report0('Progress/kimg', cur_nimg / 1e3):<8.3f}"]
            fields += [f"time {dnnlib.util.format_time(training_stats.report0('Timing/total_sec', tick_end_time - start_time)):<12s}"]
            fields += [f"sec/tick {training_stats.report0('Timing/sec_per_tick', tick_end_time - tick_start_time):<7.1f}"]
            fields += [f"sec/kimg {training_stats.report0('Timing/sec_per_kimg', (tick_end_time - tick_start_time) / max(cur_nimg - tick_start_nimg, 1) * 1e3):<7.2f}"]
            fields += [f"maintenance {training_stats.report0('Timing/maintenance_sec', maintenance_time):<6.1f}"]
            fields += [f"cpumem {training_stats.report0('Resources/cpu_mem_gb', _cpu_mem_gb()):<6.2f}"]
            if device.type == 'cuda':
                fields += [f"gpumem {training_stats.report0('Resources/peak_gpu_mem_gb', torch.cuda.max_memory_allocated(device) / 2**30):<6.2f}"]
                fields += [f"reserved {training_stats.report0('Resources/peak_gpu_mem_reserved_gb', torch.cuda.max_memory_reserved(device) / 2**30):<6.2f}"]
                torch.cuda.reset_peak_memory_stats()
            fields += [f"augment {training_stats.report0('Progress/augment', float(augment_pipe.p.cpu()) if augment_pipe is not None else 0):.3f}"]
            training_stats.report0('Timing/total_hours', (tick_end_time - start_time) / (60 * 60))
            training_stats.report0('Timing/total_days', (tick_end_time - start_time) / (24 * 60 * 60))
            log(' '.join(fields))

            # Snapshots.
            if is_main and image_snapshot_ticks is not None and (done or cur_tick % image_snapshot_ticks == 0):
                save_generated_grid(_generate_grid(G_ema, grid_z, grid_c, batch_gpu),
                                    snapshots.unused_path(os.path.join(run_dir, f'fakes{cur_nimg // 1000:06d}.png')),
                                    grid_size)
            snapshot_pkl = None
            if network_snapshot_ticks is not None and (done or cur_tick % network_snapshot_ticks == 0):
                snapshot_pkl = save_snapshot(cur_tick + 1, cur_nimg)
                if metrics:
                    _evaluate_metrics(metrics, metric_detectors, G_ema, training_set_kwargs, run_dir, snapshot_pkl, device, stats_tfevents, cur_nimg)

            # Statistics of the tick.
            stats_collector.update()
            stats_dict = stats_collector.as_dict()
            timestamp = time.time()
            if stats_jsonl is not None:
                stats_jsonl.write(json.dumps(dict(stats_dict, timestamp=timestamp)) + '\n')
                stats_jsonl.flush()
            if stats_tfevents is not None:
                global_step = int(cur_nimg / 1e3)
                walltime = timestamp - start_time
                for name, value in stats_dict.items():
                    stats_tfevents.add_scalar(name, value.mean, global_step=global_step, walltime=walltime)
                stats_tfevents.flush()

            cur_tick += 1
            tick_start_nimg = cur_nimg
            tick_start_time = time.time()
            maintenance_time = tick_start_time - tick_end_time
            if done:
                result.snapshot_pkl = snapshot_pkl
                break
    finally:
        # Workers ignore stop signals, so they must be told to exit before this process does.
        shutdown_workers = getattr(training_set_iterator, '_shutdown_workers', None)
        if shutdown_workers is not None:
            shutdown_workers()
        stop.restore()
        if stats_jsonl is not None:
            stats_jsonl.close()
        if stats_tfevents is not None:
            stats_tfevents.close()

    result.cur_nimg = cur_nimg
    if result.status == 'done':
        log('\nExiting...')
    return result

#----------------------------------------------------------------------------

def _evaluate_metrics(metrics, metric_detectors, G_ema, training_set_kwargs, run_dir, snapshot_pkl, device, stats_tfevents, cur_nimg):
    """Run each metric on G_ema (all processes); rank 0 appends metric-<name>.jsonl."""
    metric_main = dnnlib.util.get_obj_by_name('metrics.metric_main')
    errors = (dnnlib.util.get_obj_by_name('metrics.metric_utils.MetricError'),
              dnnlib.util.get_obj_by_name('metrics.detectors.DetectorError'))
    for metric in metrics:
        try:
            result_dict = metric_main.calc_metric(metric=metric, G=G_ema, dataset_kwargs=training_set_kwargs,
                                                  num_gpus=distributed.get_world_size(), rank=distributed.get_rank(),
                                                  device=device, detector_urls=metric_detectors)
        except errors as error:  # A metric that cannot run must not end hours of training.
            if distributed.is_main():
                print(f'Warning: {metric} was not computed: {error}')
            continue
        if distributed.is_main():
            metric_main.report_metric(result_dict, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
            if stats_tfevents is not None:
                for name, value in result_dict.results.items():
                    stats_tfevents.add_scalar(f'Metrics/{name}', value, global_step=int(cur_nimg / 1e3))

#----------------------------------------------------------------------------
