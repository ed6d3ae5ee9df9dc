"""Compute quality metrics (FID, KID, precision/recall, PPL, IS, equivariance) for a network pickle.

    # FID against the training set recorded in the snapshot (one GPU).
    python calc_metrics.py --metrics=fid50k_full --network=training-runs/00000-.../network-snapshot-000100.pkl

    # A quick FID on the CPU against an explicit dataset.
    python calc_metrics.py --metrics=fid2k_full --network=snapshot.pkl --data=shapes-32.zip --device=cpu

    # Several metrics over 2 GPUs, for an official pickle.
    python calc_metrics.py --metrics=fid50k_full,kid50k_full,pr50k3_full --gpus=2 \\
        --network=https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/stylegan3-t-ffhq-1024x1024.pkl \\
        --data=ffhq-1024x1024.zip
"""

import os
import sys

import click
import torch

import dnnlib
from dnnlib import cli
from dnnlib import signals
from metrics import metric_main
from metrics import metric_utils
from metrics.detectors import DetectorError
from torch_utils import distributed
from training import capabilities, generation, snapshots
from training.dataset import DatasetError, MissingLabelsError


class CommandError(click.ClickException):
    """One sentence on stderr, exit code 1, no traceback."""


def parse_metrics(text):
    metrics = [name.strip() for name in text.split(',') if name.strip()]
    if not metrics:
        raise CommandError('--metrics is empty; pass one or more metric names, e.g. --metrics=fid50k_full.')
    for metric in metrics:
        if not metric_main.is_valid_metric(metric):
            raise CommandError(f'--metrics: {metric} is not a known metric; choose from {", ".join(metric_main.list_valid_metrics())}.')
    return metrics


def dataset_kwargs_for(opts, G, training_set_kwargs):
    """The reference dataset: --data, else the one recorded in the pickle; at the generator's output resolution."""
    if opts.data is not None:
        kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=opts.data)
    elif training_set_kwargs:
        kwargs = dnnlib.EasyDict(training_set_kwargs)
    else:
        raise CommandError(f'{opts.network} records no training dataset; pass the reference images with --data.')
    resolution = generation.scaled_side(G, opts.scale)  # int(img_resolution * scale), as the generator renders
    kwargs.update(use_labels=G.c_dim != 0, max_size=None)
    if opts.mirror is not None:
        kwargs.update(xflip=opts.mirror, xflip_camera_labels=opts.mirror)  # a mirrored image has a mirrored camera
    kwargs.setdefault('xflip', False)
    hint = '' if opts.data is not None else ' (the dataset recorded in the pickle; pass --data to use another)'
    try:
        dataset = dnnlib.util.construct_class_by_name(**dict(kwargs, use_labels=False, resolution=None))
        try:
            found = dataset.resolution
        finally:
            dataset.close()
    except DatasetError as error:
        raise CommandError(f'{error}{hint}') from None
    if found != resolution:
        raise CommandError(resolution_mismatch(opts, G, kwargs.get('path'), found, resolution))
    kwargs.update(resolution=resolution)
    if G.c_dim:
        try:
            dataset = dnnlib.util.construct_class_by_name(**dict(kwargs, xflip=False))
            label_dim = dataset.label_dim if dataset.has_labels else 0
            dataset.close()
        except MissingLabelsError:  # no labels in dataset.json: said below, against what the network takes
            label_dim = 0
        except DatasetError as error:  # labels that are there but unusable (NaN, not cameras): what is wrong
            raise CommandError(f'{error}{hint}') from None
        if label_dim != G.c_dim:
            found = f'{label_dim}-dimensional labels' if label_dim else 'no labels'
            raise CommandError(f'The network takes {G.c_dim}-dimensional labels but dataset {kwargs.path} has {found}{hint}; '
                               f'pass the dataset the network was trained on with --data.')
        try:
            dnnlib.util.construct_class_by_name(**kwargs).close()
        except DatasetError as error:
            raise CommandError(f'{error}{hint}') from None
    return kwargs


def resolution_mismatch(opts, G, path, found, resolution):
    """The sentence for reference images that are not the size the generator renders (int(img_resolution * scale))."""
    source = f'Dataset {path}' if opts.data is not None else f'The dataset recorded in the pickle, {path},'
    at_scale = '' if opts.scale is None else f' at --scale={opts.scale:.10g} (int({G.img_resolution} * {opts.scale:.10g}))'
    fixes = [f'a dataset of {resolution}x{resolution} images with --data']
    if capabilities.accepts(G, 'scale'):
        fixes.insert(0, f'--scale={generation.scale_for_side(G.img_resolution, found)} to render {found}x{found}')
    return (f'{source} has {found}x{found} images but the generator renders {resolution}x{resolution}{at_scale}; '
            f'pass {" or ".join(fixes)}.')


def run_dir_of(network):
    """The training run directory holding the pickle, where results are appended (None for other pickles)."""
    if '://' in network:
        return None
    folder = os.path.dirname(os.path.abspath(network))
    return folder if os.path.isfile(os.path.join(folder, 'training_options.json')) else None


def _worker(args):
    rank, world_size = distributed.get_rank(), distributed.get_world_size()
    if args.device == 'cpu' and world_size > 1 and 'OMP_NUM_THREADS' not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    torch.backends.cuda.matmul.allow_tf32 = False  # Metrics are defined in full fp32.
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device, distributed.get_local_rank()) if args.device == 'cuda' else torch.device('cpu')
    G = args.G.to(device)
    for metric in args.metrics:
        if rank == 0 and args.verbose:
            print(f'Calculating {metric}...', flush=True)
        try:
            result = metric_main.calc_metric(metric=metric, G=G, G_kwargs=args.G_kwargs, dataset_kwargs=args.dataset_kwargs,
                                             num_gpus=world_size, rank=rank, device=device, seed=args.seed,
                                             detector_urls=args.detector_urls, verbose=args.verbose)
        except (metric_utils.MetricError, DetectorError, DatasetError) as error:
            if rank == 0:
                print(f'Error: {metric}: {error}', file=sys.stderr)
            raise SystemExit(1)
        if rank == 0:
            metric_main.report_metric(result, run_dir=args.run_dir, snapshot_pkl=args.network)


@click.command()
@click.option('--network', 'network', help='Network pickle filename or URL', metavar='PATH', required=True)
@click.option('--metrics', help='Quality metrics, comma-separated', metavar='[NAME|A,B,C]', default='fid50k_full', show_default=True)
@click.option('--data', help='Dataset to compare against  [default: look up from the pickle]', metavar='[ZIP|DIR]')
@click.option('--mirror', help='Mirror the dataset (legacy fid50k/kid50k/pr50k3 only)  [default: look up from the pickle]', type=bool, metavar='BOOL')
@click.option('--gpus', help='Number of processes (GPUs, or CPU processes with --device=cpu)', type=click.IntRange(min=1), default=1, show_default=True)
@click.option('--device', help='Where to run  [default: cuda if available, else cpu]', type=click.Choice(['cuda', 'cpu']))
@click.option('--scale', help='Output scale for any-scale generators: int(resolution * S) pixels per side, the resolution the dataset must have', type=cli.FiniteFloat(min=0, min_open=True), metavar='S')
@click.option('--detector', 'detectors', help='Local detector file: PATH (Inception) or KIND=PATH with KIND inception|vgg16; repeatable', metavar='[KIND=]PATH', multiple=True)
@click.option('--seed', help='Seed for the generated samples', type=click.IntRange(min=0), default=0, show_default=True)
@click.option('--verbose', help='Print progress', type=bool, default=True, show_default=True, metavar='BOOL')
@click.option('--trust-code', help='Execute code embedded in the pickle (only for files you trust)', is_flag=True)
@signals.exit_on_interrupt
def main(**kwargs):
    """Calculate quality metrics for a network pickle.

    \b
    Recommended metrics:
      fid50k_full  Fréchet inception distance against the full dataset.
      kid50k_full  Kernel inception distance against the full dataset.
      pr50k3_full  Precision and recall against the full dataset.
      ppl2_wend    Perceptual path length in W, endpoints, full image.
      eqt50k_int   Equivariance w.r.t. integer translation (EQ-T).
      eqt50k_frac  Equivariance w.r.t. fractional translation (EQ-T_frac).
      eqr50k       Equivariance w.r.t. rotation (EQ-R).
    \b
    Quick checks (fewer generated images, so biased upwards; compare only like with like):
      fid10k_full, fid2k_full
    \b
    Legacy metrics:
      fid50k, kid50k, pr50k3 (at most 50k reference images, mirrored if the dataset is), is50k.

    Generated images get labels (class or camera) drawn from the dataset. Results are printed and,
    when the pickle lies in a training run directory, appended to its metric-<name>.jsonl.
    The Inception network defaults to pytorch-fid's weights file; PR and PPL use NVIDIA's vgg16.pkl.
    Downloads are cached (DNNLIB_CACHE_DIR); offline, place the files there or pass --detector.
    """
    opts = dnnlib.EasyDict(kwargs)
    try:
        args = prepare(opts)
    except (click.ClickException, generation.GenerationError) as error:  # CommandError, dnnlib.cli.CliError
        print(f'Error: {error.message if isinstance(error, click.ClickException) else error}', file=sys.stderr)
        sys.exit(1)

    torch.multiprocessing.set_start_method('spawn', force=True)
    try:
        distributed.launch(_worker, num_procs=None if distributed.launched_by_torchrun() else opts.gpus,
                           args=(args,), device_type=args.device)
    except distributed.DistributedSetupError as error:
        print(f'Error: {error}', file=sys.stderr)
        sys.exit(1)
    except torch.multiprocessing.ProcessExitedException as error:
        sys.exit(error.exit_code if error.exit_code and error.exit_code > 0 else 1)


def prepare(opts):
    """Check the options, load the network and describe the work for every process."""
    metrics = parse_metrics(opts.metrics)
    run_dir = run_dir_of(opts.network)
    if run_dir is not None:  # the results are appended to its metric-<name>.jsonl files
        cli.check_output_path(run_dir, '--network', 'dir', what=f'the run directory {run_dir} of --network',
                              fix='copy the pickle out of it, or make it writable')
    try:
        detector_urls = metric_utils.parse_detector_option(opts.detectors)
    except ValueError as error:
        raise CommandError(str(error)) from None
    device = generation.choose_device(opts.device)
    if device.type == 'cuda' and not distributed.launched_by_torchrun() and opts.gpus > torch.cuda.device_count():
        raise CommandError(f'--gpus={opts.gpus} but PyTorch sees {torch.cuda.device_count()} CUDA device(s); lower --gpus.')
    if opts.verbose:
        print(f'Loading network from "{opts.network}"...')
    try:
        data = snapshots.open_network_pkl(opts.network, trust_code=opts.trust_code, trust_option='--trust-code')
    except snapshots.NetworkPickleError as error:
        raise CommandError(str(error)) from None
    G = data['G_ema']
    if G is None:
        raise CommandError(f'{opts.network} holds no G_ema generator to evaluate.')
    G = G.eval().requires_grad_(False).cpu()
    G_kwargs = dnnlib.EasyDict()
    if opts.scale is not None:
        side = generation.check_scale(G, opts.scale)  # a generator that takes scale=, and at least one pixel
        cli.check_image_size(side, side, getattr(G, 'img_channels', 3), '--scale')
        G_kwargs.scale = opts.scale
    dataset_kwargs = dataset_kwargs_for(opts, G, data.get('training_set_kwargs'))
    try:  # Before any work: a detector that cannot be found is reported now, not after the dataset pass.
        metric_main.fetch_detectors(metrics, detector_urls, verbose=opts.verbose)
    except DetectorError as error:
        raise CommandError(str(error)) from None
    return dnnlib.EasyDict(G=G, G_kwargs=G_kwargs, metrics=metrics, dataset_kwargs=dataset_kwargs, device=device.type,
                           detector_urls=detector_urls, seed=opts.seed, verbose=opts.verbose, network=opts.network,
                           run_dir=run_dir)


if __name__ == '__main__':
    main()
