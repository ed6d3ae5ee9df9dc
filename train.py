"""Train a StyleGAN2 / StyleGAN3 model (and, as they land, the other configs of training/configs.py).

Examples:

\b
# One process on the CPU, a tiny run:
python train.py --outdir=training-runs --cfg=stylegan2 --data=datasets/shapes-32.zip \\
    --gpus=1 --batch=8 --gamma=1 --kimg=1 --device=cpu --metrics=none

\b
# StyleGAN3-T on 8 GPUs of one node:
python train.py --outdir=training-runs --cfg=stylegan3-t --data=datasets/afhqv2-512x512.zip \\
    --gpus=8 --batch=32 --gamma=8.2 --mirror=1

\b
# Two nodes of 8 GPUs (run on each node; torchrun sets the ranks):
torchrun --nnodes=2 --node_rank=$NODE_RANK --nproc_per_node=8 --master_addr=$HEAD --master_port=29500 \\
    train.py --outdir=training-runs --cfg=stylegan3-r --data=datasets/ffhq-1024x1024.zip --batch=32 --gamma=32.8

\b
# GRAM on posed 256x256 faces in GRAM's layout (8 GPUs of 4 images, G in chunks of 1; --gamma is its r1_lambda):
python train.py --outdir=training-runs --cfg=gram-ffhq --data=datasets/ffhq-256x256-cameras.zip \\
    --gpus=8 --batch=32 --batch-gpu=1 --gamma=1 --mirror=1 --mirror-cameras=1

\b
# EpiGRAF on posed 512x512 faces: 64x64 patches of the full image, no upsampler (camera_angles datasets: dataset_tool.py):
python train.py --outdir=training-runs --cfg=epigraf --data=datasets/ffhq-512-epigraf.zip \
    --gpus=4 --batch=64 --gamma=0.1 --mirror=1 --mirror-cameras=1

\b
# Continue a run exactly where it stopped (latest snapshot of the run directory):
python train.py --outdir=training-runs --resume=training-runs/00003-stylegan2-shapes-32-gpus1-batch8-gamma1
"""

import glob
import json
import os
import re
import shutil
import signal
import sys

import click
import torch

import dnnlib
from dnnlib import cli
from dnnlib import signals
from metrics import metric_main, metric_utils
from metrics.detectors import DetectorError
from torch_utils import distributed
from training import configs, snapshots
from training.dataset import DatasetError

#----------------------------------------------------------------------------

class OptionError(ValueError):
    """Inconsistent or missing command-line options; the message is one sentence."""

_EG3D = configs.EG3D_OPTION_DEFAULTS
_EPIGRAF = configs.EPIGRAF_OPTION_DEFAULTS


class GammaType(cli.FiniteFloat):
    """--gamma: a float >= 0, or 'auto' (StyleGAN2-ADA's and EpiGRAF's 0.0002 * resolution ** 2 / batch)."""
    name = 'float or auto'

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.strip().lower() == 'auto':
            return 'auto'
        return super().convert(value, param, ctx)

# Options that may change when resuming without changing what the next steps compute.
_BOOKKEEPING_OPTIONS = {'outdir', 'resume', 'dry_run', 'device', 'trust_code', 'kimg', 'tick', 'snap', 'metrics', 'detector',
                        'metric_detectors',
                        'workers', 'nobench', 'desc', 'grid', 'data', 'gpus', 'batch_gpu'}
_REQUIRED_OPTIONS = ['cfg', 'data', 'gpus', 'batch', 'gamma']

def _parse_comma_separated_list(value):
    if isinstance(value, list):
        return value
    if value is None or value.lower() == 'none' or value == '':
        return []
    items = [item.strip() for item in value.split(',') if item.strip()]
    if any(item.lower() == 'none' for item in items):
        raise OptionError(f'--metrics={value} mixes "none" with metric names; pass either none or the metrics.')
    return items

def _parse_grid(value):
    if value is None:
        return None
    try:
        return list(dnnlib.util.parse_grid_size(value))
    except ValueError:
        raise OptionError(f'--grid={value} must look like COLUMNSxROWS, e.g. 8x4.') from None

#----------------------------------------------------------------------------
# Turning options into training-loop arguments.

def _merge_resumed_options(opts, given, saved):
    """An exact resume starts from the saved options; options given on this command line win."""
    merged = dnnlib.EasyDict(saved)
    for key, value in opts.items():
        if key in given or key not in saved or key in ('outdir', 'resume', 'dry_run', 'device', 'trust_code') or \
                (key == 'gpus' and distributed.launched_by_torchrun()):  # torchrun decides the process count
            merged[key] = value
    return merged

def _changed_dynamics(opts, saved):
    def effective_batch_gpu(o):
        return o.get('batch_gpu') or o['batch'] // o['gpus']
    changed = [f'--{key.replace("_", "-")} {saved[key]} -> {opts[key]}' for key in sorted(saved)
               if key not in _BOOKKEEPING_OPTIONS and key in opts and opts[key] != saved[key]]
    if effective_batch_gpu(opts) != effective_batch_gpu(saved):
        changed.append(f'batch per chunk {effective_batch_gpu(saved)} -> {effective_batch_gpu(opts)}')
    return changed

def _inspect_dataset(opts):
    """Open the dataset once: check it and record resolution, size and whether labels are cameras."""
    from training.dataset import ImageFolderDataset
    dataset = ImageFolderDataset(path=opts.data, use_labels=opts.cond, max_size=None, xflip=False, random_seed=opts.seed)
    if opts.mirror:  # raises when mirroring would break image-camera pairs
        ImageFolderDataset(path=opts.data, use_labels=opts.cond, xflip=True,
                           xflip_camera_labels=opts.mirror_cameras, random_seed=opts.seed).close()
    resolution = dataset.resolution
    if resolution < 4 or resolution & (resolution - 1):
        raise DatasetError(f'{opts.data} has {resolution}x{resolution} images; the networks need a power of two '
                           f'of at least 4 (re-pack it with dataset_tool.py --resolution).')
    facts = dnnlib.EasyDict(resolution=resolution, dataset_size=len(dataset), dataset_name=dataset.name,
                            camera_labels=bool(opts.cond and dataset.has_camera_labels),
                            camera_label_problem=dataset.camera_label_problem if opts.cond else None)
    facts.image_layout = (dataset.num_channels, dataset.label_dim)  # for the --resume check; not an option
    if facts.camera_labels:  # the data's camera scale, for networks with their own world units (GRAM)
        facts.camera_radius, facts.camera_focal = _camera_statistics(dataset._get_raw_labels())
        facts.camera_mean_angles = _mean_epigraf_angles(dataset._get_raw_labels())
    dataset.close()
    return facts

def _camera_statistics(labels):
    """(median distance of the camera centres from the world origin, median normalised focal) of [N, 25] labels."""
    import numpy as np
    labels = np.asarray(labels, dtype=np.float64)
    radius = np.linalg.norm(labels[:, [3, 7, 11]], axis=1)
    return float(np.median(radius)), float(np.median(labels[:, 16]))

def _mean_epigraf_angles(labels):
    """EpiGRAF's mean (yaw, pitch, roll) of [N, 25] camera labels: its generator's mean_camera_pose."""
    from training import cameras
    angles = cameras.epigraf_angles_from_label(torch.as_tensor(labels, dtype=torch.float64))
    return [float(v) for v in angles.mean(dim=0)]

def _validate(opts):
    under_torchrun = distributed.launched_by_torchrun()
    missing = [name for name in _REQUIRED_OPTIONS if opts.get(name) is None and not (name == 'gpus' and under_torchrun)]
    if missing:
        raise OptionError(f'Missing option(s) {", ".join("--" + m for m in missing)} (they may be omitted only '
                          f'when --resume points to a snapshot with a training state).')
    try:
        cli.check_output_path(opts.outdir, '--outdir', 'dir')
    except cli.CliError as error:
        raise OptionError(error.message) from None
    if opts.desc is not None and ('/' in opts.desc or os.sep in opts.desc):
        raise OptionError(f'--desc={opts.desc} would place the run directory outside --outdir; drop the path separators.')
    if opts.cfg not in configs.config_names():
        raise OptionError(f'--cfg={opts.cfg} is not a known config; choose one of {", ".join(configs.config_names())}.')
    if under_torchrun:
        _rank, world_size, _local_rank, local = distributed._torchrun_layout()  # DistributedSetupError on bad variables
        local = local or world_size
        if opts.gpus not in (None, world_size, local):
            raise OptionError(f'--gpus={opts.gpus} contradicts torchrun, which started {local} processes per node '
                              f'({world_size} in total); omit --gpus.')
        opts.gpus = world_size
    if opts.batch % opts.gpus != 0:
        raise OptionError(f'--batch={opts.batch} must be a multiple of --gpus={opts.gpus}.')
    batch_gpu = opts.batch_gpu or opts.batch // opts.gpus
    if opts.batch % (opts.gpus * batch_gpu) != 0:
        raise OptionError(f'--batch={opts.batch} must be a multiple of --gpus times --batch-gpu ({opts.gpus} x {batch_gpu}).')
    if configs.has_minibatch_std(opts.cfg) and (batch_gpu < opts.mbstd_group or batch_gpu % opts.mbstd_group != 0):
        raise OptionError(f'--batch-gpu={batch_gpu} must be a multiple of --mbstd-group={opts.mbstd_group} '
                          f'(the discriminator compares images in groups of that size).')
    if opts.mirror_cameras and not opts.mirror:
        raise OptionError('--mirror-cameras only applies together with --mirror=1.')
    if opts.device == 'cuda' and not torch.cuda.is_available():
        raise OptionError('--device=cuda was requested but no CUDA device is available; use --device=cpu.')
    for metric in opts.metrics:
        if not metric_main.is_valid_metric(metric):
            raise OptionError(f'--metrics={metric} is not a known metric; choose from {", ".join(metric_main.list_valid_metrics())}.')
    try:
        opts.metric_detectors = metric_utils.parse_detector_option(opts.get('detector') or ())
    except ValueError as error:
        raise OptionError(str(error)) from None

def _check_resume_fits(data, resume_pkl, opts, channels, label_dim, G_class_name):
    """The --resume generator must make images like the dataset's: same resolution and channels, and labels of the
    size the run will use, unless the run's generator declares how to start from other networks (resume_widening)."""
    G = data.get('G') if isinstance(data, dict) else None
    if G is None or not hasattr(G, 'img_resolution'):
        return
    def labels(dim):
        return f'{dim}-dimensional labels' if dim else 'no labels'
    ours, theirs = [], []
    if G.img_resolution != opts.resolution:
        ours.append(f'{G.img_resolution}x{G.img_resolution} images')
        theirs.append(f'{opts.resolution}x{opts.resolution} images')
    if getattr(G, 'img_channels', channels) != channels:
        ours.append(f'{G.img_channels} channel(s)')
        theirs.append(f'{channels} channel(s)')
    widens = hasattr(dnnlib.util.get_obj_by_name(G_class_name), 'resume_widening')
    if not widens and getattr(G, 'c_dim', label_dim) != label_dim:
        ours.append(labels(G.c_dim))
        theirs.append(labels(label_dim) + f' with --cond={int(bool(opts.cond))}')
    if ours:
        raise OptionError(f'--resume={resume_pkl} holds a network for {" and ".join(ours)}, but --data={opts.data} has '
                          f'{" and ".join(theirs)}; pass the dataset the snapshot was trained on as --data, or another --resume.')

def build_run(opts, given):
    """Validate the options and return (training_loop kwargs, run-dir description, options to save)."""
    state = None
    resume_pkl = resume_state = None
    if opts.resume is not None:
        resume_pkl, resume_state = snapshots.resolve_resume(opts.resume)
        if resume_state is not None:
            state = snapshots.load_training_state(resume_state)
            if state.get('options') is None:
                raise snapshots.ResumeError(f'{resume_state} does not record the options of its run; pass '
                                            f'--resume={resume_pkl} with all training options instead.')
            opts = _merge_resumed_options(opts, given, state['options'])
    _validate(opts)
    stray = sorted(name for name in given if name in configs.EG3D_OPTION_DEFAULTS)
    if stray and opts.cfg not in configs.EG3D_CONFIGS:
        raise OptionError(f'--{stray[0]} is an option of the eg3d configs, not of --cfg={opts.cfg}; drop it.')
    stray = sorted(name for name in given if name in configs.EPIGRAF_OPTION_DEFAULTS)
    if stray and opts.cfg != 'epigraf':
        raise OptionError(f'--{stray[0].replace("_", "-")} is an option of --cfg=epigraf, not of --cfg={opts.cfg}; drop it.')
    if opts.get('patch_split') is not None and opts.cfg not in configs.GRAM_CONFIGS:
        raise OptionError(f'--patch-split is an option of the gram configs, not of --cfg={opts.cfg}; drop it.')
    for name in ('cond', 'aug'):
        if opts.get(name) is None:
            opts[name] = configs.option_default(opts.cfg, name)
    facts = _inspect_dataset(opts)
    image_layout = facts.pop('image_layout')  # (channels, label size)
    opts.update(facts)
    if opts.gamma == 'auto':  # StyleGAN2-ADA's heuristic, EpiGRAF's training.gamma=auto
        opts.gamma = 0.0002 * opts.resolution ** 2 / opts.batch
    resume_data = None
    if resume_pkl is not None and not re.match(r'^[a-z]+://', resume_pkl):
        resume_data = snapshots.load_network_snapshot(resume_pkl, trust_code=opts.trust_code,  # fail now, before a run directory exists
                                                      trust_option='--trust-code')

    try:
        c = configs.build_training_options(opts)
    except ValueError as error:  # a config's own requirement, e.g. camera labels for raycond
        raise OptionError(str(error)) from None
    if resume_data is not None:
        _check_resume_fits(resume_data, resume_pkl, opts, *image_layout, c.G_kwargs.class_name)
        del resume_data
    c.grid_size = opts.grid
    c.trust_code = opts.trust_code
    if resume_pkl is not None:
        c.resume_pkl = resume_pkl
        c.resume_state = resume_state
        if resume_state is None:  # weights only: the official fine-tuning adjustments
            c.ada_kimg = 100
            c.ema_rampup = None
            if not opts.get('resume_blur'):  # EG3D's --resume_blur keeps the blur and the swap fade
                c.loss_kwargs.blur_init_sigma = 0
                if 'gpc_reg_fade_kimg' in c.loss_kwargs:
                    c.loss_kwargs.gpc_reg_fade_kimg = 0
    saved_options = {key: value for key, value in opts.items()
                     if key not in ('dataset_size', 'dataset_name', 'resolution', 'camera_labels', 'camera_label_problem',
                                    'camera_radius', 'camera_focal', 'camera_mean_angles')}
    c.saved_options = saved_options

    notes = []
    if state is not None:
        changed = _changed_dynamics(opts, state['options'])
        if changed:
            notes.append('Resuming with changed options (' + '; '.join(changed) + '): training continues from the '
                         'saved state, but not as an exact continuation.')
    desc = f'{opts.cfg}-{opts.dataset_name}-gpus{opts.gpus}-batch{opts.batch}-gamma{opts.gamma:g}'
    if opts.desc is not None:
        desc += f'-{opts.desc}'
    return c, desc, notes

def next_run_dir(outdir, desc):
    prev_ids = [int(match.group()) for name in (os.listdir(outdir) if os.path.isdir(outdir) else [])
                if os.path.isdir(os.path.join(outdir, name)) and (match := re.match(r'^\d+', name))]
    return os.path.join(outdir, f'{max(prev_ids, default=-1) + 1:05d}-{desc}')

#----------------------------------------------------------------------------
# Every process runs this.

# What a run writes before and beside its snapshots. A run directory that holds only these and no
# network snapshot has nothing of value in it, and goes when the run fails.
_RUN_DIR_BOOKKEEPING = re.compile(r'training_options\.json|log\.txt|reals\.png|fakes_init\.png|fakes\d+(-\d+)?\.png|'
                                  r'stats\.jsonl|events\.out\.tfevents\..*|\..+\.tmp-\d+')

def _remove_run_dir(run_dir):
    """Remove a run directory this process created unless it holds something of value; -> why it was kept, or None."""
    try:
        names = sorted(os.listdir(run_dir))
    except FileNotFoundError:  # already gone
        return None
    if any(name.startswith('network-snapshot-') for name in names):
        return 'it holds a network snapshot'
    foreign = [name for name in names if not _RUN_DIR_BOOKKEEPING.fullmatch(name)]
    if foreign:
        return f'it holds {foreign[0]}, which this run did not write'
    try:
        shutil.rmtree(run_dir)
    except OSError as error:
        return f'it could not be removed ({error.strerror})'
    return None

def _end_failed_run(error, run_dir, user_errors, keep_for_log):
    """The one clean-up of a run that ends early (a user error, a bug, or a signal before the training loop's own
    handler took over): remove the run directory unless it holds something of value; -> the line to print, or None.

    `keep_for_log`: error types whose run directory stays for its log even without a snapshot."""
    line = None
    if isinstance(error, KeyboardInterrupt):
        line = signals.message(error)
    elif isinstance(error, user_errors):
        line = f'Error: {error}'
    if run_dir is None:
        return line
    if isinstance(error, keep_for_log) and not glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')):
        kept = 'its log shows where the losses became non-finite'
    else:
        kept = _remove_run_dir(run_dir)
    if kept is None:
        if line is None or isinstance(error, KeyboardInterrupt):  # an error's own sentence needs no addition
            line = ' '.join(filter(None, [line, f'Removed the run directory {run_dir}, which held no snapshot yet.']))
        return line
    line = ' '.join(filter(None, [line, f'The run directory {run_dir} is kept: {kept}.']))
    with open(os.path.join(run_dir, 'log.txt'), 'a') as f:  # the log of a kept run says how it ended
        f.write(line + '\n')
    return line

def _worker(c, outdir, desc, notes):
    from training.training_loop import NonFiniteLossError, training_loop
    user_errors = (NonFiniteLossError, DatasetError, snapshots.ResumeError)
    # Until the training loop installs its own handler (which stops after the current step and writes a
    # resumable snapshot), SIGTERM unwinds like Ctrl-C through the clean-up below.
    with signals.unwind_on_stop_signals():
        run_dir = None  # set on the main process once it has created the directory
        logger = None
        try:
            shared_run_dir = None
            if distributed.is_main():
                os.makedirs(outdir, exist_ok=True)
                while True:  # never reuse a directory that exists; another run may take a number at the same moment
                    candidate = next_run_dir(outdir, desc)
                    try:
                        os.makedirs(candidate)
                    except FileExistsError:
                        continue
                    run_dir = shared_run_dir = candidate
                    break
                snapshots.atomic_write(os.path.join(run_dir, 'training_options.json'),
                                       lambda f: f.write(json.dumps(c, indent=2)), mode='w')
            if distributed.get_world_size() > 1:
                box = [shared_run_dir]
                torch.distributed.broadcast_object_list(box, src=0)
                shared_run_dir = box[0]
            if c.device == 'cpu' and distributed.get_world_size() > 1 and 'OMP_NUM_THREADS' not in os.environ:
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // distributed.get_world_size()))

            if run_dir is not None:
                logger = dnnlib.util.Logger(os.path.join(run_dir, 'log.txt'), file_mode='a')
                print('Training options:')
                print(json.dumps(c, indent=2))
                print(f'\nOutput directory: {run_dir}')
                print(f'Processes: {distributed.get_world_size()} on {c.device}\n')
                for note in notes:
                    print('Note:', note)
            kwargs = {key: value for key, value in c.items() if key != 'device'}
            result = training_loop(run_dir=shared_run_dir, **kwargs)
        except BaseException as error:
            expected = isinstance(error, user_errors + (KeyboardInterrupt,))
            if expected:
                # Drop the loop's frames now: they hold the DataLoader, whose workers must stop before exit.
                error.__traceback__ = None
            if logger is not None:
                logger.close()  # log.txt lies in the run directory
            line = _end_failed_run(error, run_dir, user_errors, NonFiniteLossError) if distributed.is_main() else None
            if line is not None:
                print(line, file=sys.stderr)
            if not expected:
                raise
            raise SystemExit(signals.exit_status(error) if isinstance(error, KeyboardInterrupt) else 1) from None
        if result.status == 'interrupted' and run_dir is not None:
            print(f'Interrupted by {signal.Signals(result.signum).name}; continue with '
                  f'python train.py --outdir={outdir} --resume={run_dir}')
        if logger is not None:
            logger.close()
        if result.status == 'interrupted':
            raise SystemExit(128 + result.signum)

#----------------------------------------------------------------------------

@click.command(help=__doc__, context_settings=dict(max_content_width=110))
# Required (unless --resume continues a run with a training state).
@click.option('--outdir', help='Where to make the run directory', metavar='DIR', required=True)
@click.option('--cfg', help='Base configuration', type=click.Choice(configs.config_names()))
@click.option('--data', help='Training data (zip or folder made by dataset_tool.py)', metavar='[ZIP|DIR]')
@click.option('--gpus', help='Processes on this node (one per GPU; on --device=cpu, CPU processes)', metavar='INT', type=click.IntRange(min=1))
@click.option('--batch', help='Total batch size', metavar='INT', type=click.IntRange(min=1))
@click.option('--gamma', help='R1 regularization weight (GRAM: its r1_lambda, penalty gamma/2 |grad|^2), or auto: 0.0002 res^2 / batch', metavar='FLOAT|auto', type=GammaType(min=0))
# Optional features.
@click.option('--cond', help='Train conditional model (labels from dataset.json)  [default: False; True for the eg3d and gram configs]', metavar='BOOL', type=bool)
@click.option('--mirror', help='Enable dataset x-flips', metavar='BOOL', type=bool, default=False, show_default=True)
@click.option('--mirror-cameras', help='With --mirror and camera labels: mirror the camera poses too', metavar='BOOL', type=bool, default=False, show_default=True)
@click.option('--aug', help='Augmentation mode (camera-labelled --cond data gets colour augmentation only)  [default: ada; noaug for the eg3d and gram configs]', type=click.Choice(['noaug', 'ada', 'fixed']))
@click.option('--resume', help='Run directory or snapshot to resume from (exactly, when its training state exists), or an official pickle/URL', metavar='[PATH|URL]')
@click.option('--freezed', help='Freeze first layers of D', metavar='INT', type=click.IntRange(min=0), default=0, show_default=True)
# Misc hyperparameters.
@click.option('--p', help='Probability for --aug=fixed', metavar='FLOAT', type=cli.FiniteFloat(min=0, max=1), default=0.2, show_default=True)
@click.option('--target', help='Target value for --aug=ada', metavar='FLOAT', type=cli.FiniteFloat(min=0, max=1), default=0.6, show_default=True)
@click.option('--batch-gpu', help='Limit batch size per GPU (gradient accumulation)', metavar='INT', type=click.IntRange(min=1))
@click.option('--cbase', help='Capacity multiplier', metavar='INT', type=click.IntRange(min=1), default=32768, show_default=True)
@click.option('--cmax', help='Max. feature maps', metavar='INT', type=click.IntRange(min=1), default=512, show_default=True)
@click.option('--glr', help='G learning rate  [default: varies]', metavar='FLOAT', type=cli.FiniteFloat(min=0))
@click.option('--dlr', help='D learning rate  [default: 0.002; 0.0002 for the gram configs]', metavar='FLOAT', type=cli.FiniteFloat(min=0))
@click.option('--map-depth', help='Mapping network depth (not for the gram configs)  [default: varies]', metavar='INT', type=click.IntRange(min=1))
@click.option('--mbstd-group', help='Minibatch std group size (not for the gram configs)', metavar='INT', type=click.IntRange(min=1), default=4, show_default=True)
# Misc settings.
@click.option('--desc', help='String to include in result dir name', metavar='STR')
@click.option('--metrics', help='Quality metrics, comma-separated, or "none"  [default: fid50k_full]', metavar='[NAME|A,B,C|none]')
@click.option('--detector', help='Local metric detector file: PATH (Inception) or KIND=PATH, KIND inception|vgg16; repeatable', metavar='[KIND=]PATH', multiple=True)
@click.option('--kimg', help='Total training duration (thousands of images; fractions allowed)', metavar='KIMG', type=cli.FiniteFloat(min=0, min_open=True), default=25000, show_default=True)
@click.option('--tick', help='How often to print progress', metavar='KIMG', type=cli.FiniteFloat(min=0, min_open=True), default=4, show_default=True)
@click.option('--snap', help='How often to save snapshots  [default: 50; 100 for the raycond configs]', metavar='TICKS', type=click.IntRange(min=1))
@click.option('--seed', help='Random seed', metavar='INT', type=click.IntRange(min=0), default=0, show_default=True)
@click.option('--fp32', help='Disable mixed-precision (CUDA; the CPU is always fp32)', metavar='BOOL', type=bool, default=False, show_default=True)
@click.option('--nobench', help='Disable cuDNN benchmarking', metavar='BOOL', type=bool, default=False, show_default=True)
@click.option('--workers', help='DataLoader worker processes', metavar='INT', type=click.IntRange(min=0), default=3, show_default=True)
@click.option('--device', help='Where to train  [default: cuda if available, else cpu]', type=click.Choice(['cuda', 'cpu']))
@click.option('--grid', help='Columns x rows of the image snapshots  [default: about 7680x4320 pixels on GPUs, 8x4 on the CPU]', metavar='WxH')
@click.option('--trust-code', help='Execute code embedded in a --resume pickle (only for files you trust)', is_flag=True)
# EG3D options (the eg3d configs), spelled as EG3D's train.py spells them.
@click.option('--neural_rendering_resolution_initial', help='EG3D: Neural rendering resolution at the start', metavar='INT', type=click.IntRange(min=4), default=_EG3D['neural_rendering_resolution_initial'], show_default=True)
@click.option('--neural_rendering_resolution_final', help='EG3D: Neural rendering resolution at the end of the fade  [default: = initial]', metavar='INT', type=click.IntRange(min=4))
@click.option('--neural_rendering_resolution_fade_kimg', help='EG3D: Kimg to fade the neural rendering resolution', metavar='KIMG', type=cli.FiniteFloat(min=0), default=_EG3D['neural_rendering_resolution_fade_kimg'], show_default=True)
@click.option('--blur_fade_kimg', help='EG3D: Blur the D input over this many kimg (at batch 32)', metavar='KIMG', type=cli.FiniteFloat(min=0), default=_EG3D['blur_fade_kimg'], show_default=True)
@click.option('--gen_pose_cond', help='EG3D: Condition the mapping on the camera (generator pose conditioning)', metavar='BOOL', type=bool, default=_EG3D['gen_pose_cond'], show_default=True)
@click.option('--c-scale', 'c_scale', help='EG3D: Scale of the camera label the mapping sees', metavar='FLOAT', type=cli.FiniteFloat(min=0), default=_EG3D['c_scale'], show_default=True)
@click.option('--c-noise', 'c_noise', help='EG3D: Declared by EG3D, unused', metavar='FLOAT', type=cli.FiniteFloat(min=0), default=_EG3D['c_noise'], show_default=True)
@click.option('--gpc_reg_prob', help='EG3D: Probability of swapping the mapping camera (with --gen_pose_cond)', metavar='FLOAT', type=cli.FiniteFloat(min=0, max=1), default=_EG3D['gpc_reg_prob'], show_default=True)
@click.option('--gpc_reg_fade_kimg', help='EG3D: Kimg to fade the swapping probability from 1', metavar='KIMG', type=cli.FiniteFloat(min=0), default=_EG3D['gpc_reg_fade_kimg'], show_default=True)
@click.option('--disc_c_noise', help='EG3D: Std of the noise on D\'s camera label (times the batch std)', metavar='FLOAT', type=cli.FiniteFloat(min=0), default=_EG3D['disc_c_noise'], show_default=True)
@click.option('--sr_noise_mode', help='EG3D: Noise of the super-resolution blocks', type=click.Choice(['random', 'none']), default=_EG3D['sr_noise_mode'], show_default=True)
@click.option('--patch-split', '--patch_split', 'patch_split', help='GRAM: Render the G step in this many pixel ranges (same gradients, 1/N of the activation memory)', metavar='INT', type=click.IntRange(min=1), default=None)
@click.option('--resume_blur', '--resume-blur', 'resume_blur', help='EG3D: Keep the D-input blur and the swap fade when --resume loads weights only', metavar='BOOL', type=bool, default=_EG3D['resume_blur'], show_default=True)
@click.option('--sr_num_fp16_res', help='EG3D: Float16 super-resolution blocks (CUDA)', metavar='INT', type=click.IntRange(min=0), default=_EG3D['sr_num_fp16_res'], show_default=True)
@click.option('--g_num_fp16_res', help='EG3D: Float16 backbone resolutions (CUDA)', metavar='INT', type=click.IntRange(min=0), default=_EG3D['g_num_fp16_res'], show_default=True)
@click.option('--d_num_fp16_res', help='EG3D: Float16 D resolutions (CUDA)', metavar='INT', type=click.IntRange(min=0), default=_EG3D['d_num_fp16_res'], show_default=True)
@click.option('--sr_first_cutoff', help='EG3D: Declared by EG3D, unused', metavar='INT', type=click.IntRange(min=1), default=_EG3D['sr_first_cutoff'], show_default=True)
@click.option('--sr_first_stopband', help='EG3D: Declared by EG3D, unused', metavar='FLOAT', type=cli.FiniteFloat(min=0), default=_EG3D['sr_first_stopband'], show_default=True)
@click.option('--style_mixing_prob', help='EG3D: Style-mixing probability', metavar='FLOAT', type=cli.FiniteFloat(min=0, max=1), default=_EG3D['style_mixing_prob'], show_default=True)
@click.option('--sr-module', 'sr_module', help='EG3D: Super-resolution module  [default: by resolution]', metavar='STR')
@click.option('--density_reg', help='EG3D: Density regularisation weight', metavar='FLOAT', type=cli.FiniteFloat(min=0), default=_EG3D['density_reg'], show_default=True)
@click.option('--density_reg_every', help='EG3D: Density regularisation interval (G steps)', metavar='INT', type=click.IntRange(min=1), default=_EG3D['density_reg_every'], show_default=True)
@click.option('--density_reg_p_dist', help='EG3D: Density regularisation perturbation', metavar='FLOAT', type=cli.FiniteFloat(min=0), default=_EG3D['density_reg_p_dist'], show_default=True)
@click.option('--reg_type', help='EG3D: Density regularisation type', type=click.Choice(['l1', 'l1-alt', 'monotonic-detach', 'monotonic-fixed', 'total-variation']), default=_EG3D['reg_type'], show_default=True)
@click.option('--decoder_lr_mul', help='EG3D: Decoder learning-rate multiplier', metavar='FLOAT', type=cli.FiniteFloat(min=0), default=_EG3D['decoder_lr_mul'], show_default=True)
@click.option('--triplane-res', help='EpiGRAF: Tri-plane resolution (model.generator.tri_plane.res)', metavar='INT', type=click.IntRange(min=4), default=_EPIGRAF['triplane_res'], show_default=True)
@click.option('--triplane-channels', help='EpiGRAF: Features per plane (tri_plane.feat_dim)', metavar='INT', type=click.IntRange(min=1), default=_EPIGRAF['triplane_channels'], show_default=True)
@click.option('--patch-res', help='EpiGRAF: Patch resolution G renders and D sees (training.patch.resolution)', metavar='INT', type=click.IntRange(min=4), default=_EPIGRAF['patch_res'], show_default=True)
@click.option('--patch-dist', help='EpiGRAF: Patch scale distribution (patch_beta, patch_uniform, patch_discrete_uniform; none = whole images)', type=click.Choice(['beta', 'uniform', 'discrete_uniform', 'none']), default=_EPIGRAF['patch_dist'], show_default=True)
@click.option('--patch-anneal-kimg', help='EpiGRAF: Kimg to anneal the patch scales (training.patch.anneal_kimg)', metavar='KIMG', type=cli.FiniteFloat(min=0), default=_EPIGRAF['patch_anneal_kimg'], show_default=True)
@click.option('--ray-steps', help='EpiGRAF: Coarse (and as many importance) samples per ray (num_ray_steps)', metavar='INT', type=click.IntRange(min=3), default=_EPIGRAF['ray_steps'], show_default=True)
@click.option('--camera-cond-g', help='EpiGRAF: Condition G\'s mapping on the camera (model.generator.camera_cond)', metavar='BOOL', type=bool, default=_EPIGRAF['camera_cond_g'], show_default=True)
@click.option('--camera-cond-d', help='EpiGRAF: Condition D on the camera (off in EpiGRAF, whose README recommends it against flat shapes)', metavar='BOOL', type=bool, default=_EPIGRAF['camera_cond_d'], show_default=True)
@click.option('--camera-cond-d-drop-p', help='EpiGRAF: Dropout of D\'s camera conditioning', metavar='FLOAT', type=cli.FiniteFloat(min=0, max=1), default=_EPIGRAF['camera_cond_d_drop_p'], show_default=True)
@click.option('--camera-cond-g-drop-p', help='EpiGRAF: Dropout of G\'s camera conditioning', metavar='FLOAT', type=cli.FiniteFloat(min=0, max=1), default=_EPIGRAF['camera_cond_g_drop_p'], show_default=True)
@click.option('--nerf-noise-kimg', help='EpiGRAF: Kimg over which the density noise decays from 1 to 0', metavar='KIMG', type=cli.FiniteFloat(min=0, min_open=True), default=_EPIGRAF['nerf_noise_kimg'], show_default=True)
@click.option('--bg-model', help='EpiGRAF: Background model (model.generator.bg_model.type; plane: a 2D background from the decoder; sphere: a NeRF++ background INR)', type=click.Choice(['none', 'plane', 'sphere']), default=_EPIGRAF['bg_model'], show_default=True)
@click.option('--fov', help='EpiGRAF: Field of view in degrees (dataset.camera.fov)  [default: the data\'s focal]', metavar='DEG', type=cli.FiniteFloat(min=0, min_open=True))
@click.option('--ray-start', help='EpiGRAF: Near distance of the rays  [default: 0.88 x the data\'s camera radius]', metavar='FLOAT', type=cli.FiniteFloat(min=0, min_open=True))
@click.option('--ray-end', help='EpiGRAF: Far distance of the rays  [default: 1.12 x the data\'s camera radius]', metavar='FLOAT', type=cli.FiniteFloat(min=0, min_open=True))
@click.option('--cube-scale', help='EpiGRAF: Half side of the tri-plane cube  [default: 0.2 x the data\'s camera radius]', metavar='FLOAT', type=cli.FiniteFloat(min=0, min_open=True))
@click.option('--white-back', help='EpiGRAF: White background (dataset.white_back)', metavar='BOOL', type=bool, default=_EPIGRAF['white_back'], show_default=True)
@click.option('-n', '--dry-run', help='Print training options and exit', is_flag=True)
@signals.exit_on_interrupt
def main(**kwargs):
    ctx = click.get_current_context()
    given = {name for name in kwargs if ctx.get_parameter_source(name) in
             (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)}
    opts = dnnlib.EasyDict(kwargs)
    device_defaulted = opts.device is None
    opts.device = opts.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        if opts.metrics is None:
            opts.metrics = 'fid50k_full'
        opts.metrics = _parse_comma_separated_list(opts.metrics)
        opts.grid = _parse_grid(opts.grid)
        c, desc, notes = build_run(opts, given)
    except (OptionError, DatasetError, snapshots.ResumeError, distributed.DistributedSetupError) as error:
        print(f'Error: {error}', file=sys.stderr)
        sys.exit(1)
    if device_defaulted and c.device == 'cpu' and c.num_gpus > 1 and not distributed.launched_by_torchrun():
        print(f'No CUDA device: --gpus={c.num_gpus} runs {c.num_gpus} CPU processes (pass --device=cpu to silence '
              f'this note).', file=sys.stderr)

    if opts.dry_run:
        print(json.dumps(c, indent=2))
        print(f'\nRun directory: {next_run_dir(opts.outdir, desc)} (dry run: nothing created)')
        for note in notes:
            print('Note:', note)
        return

    if c.metrics:
        try:
            metric_main.fetch_detectors(c.metrics, c.metric_detectors, verbose=distributed.get_rank() == 0)
        except DetectorError as error:
            print(f'Error: {error} (or train without metrics: --metrics=none)', file=sys.stderr)
            sys.exit(1)

    try:
        os.makedirs(opts.outdir, exist_ok=True)
    except OSError as error:
        print(f'Error: Cannot create --outdir={opts.outdir} ({error.strerror}); pass a folder you can write to.', file=sys.stderr)
        sys.exit(1)

    torch.multiprocessing.set_start_method('spawn', force=True)
    try:
        distributed.launch(_worker, num_procs=None if distributed.launched_by_torchrun() else c.num_gpus,
                           args=(c, opts.outdir, desc, notes), device_type=c.device)
    except distributed.DistributedSetupError as error:
        print(f'Error: {error}', file=sys.stderr)
        sys.exit(1)
    except torch.multiprocessing.ProcessExitedException as error:
        sys.exit(error.exit_code if error.exit_code and error.exit_code > 0 else 1)

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()

#----------------------------------------------------------------------------
