"""The metric registry: names, one function per metric, and the result format shared with the official code.

`calc_metric(metric, G=..., dataset_kwargs=..., num_gpus=..., rank=..., device=...)` returns
`EasyDict(results=EasyDict(<name>=<value>, ...), metric, total_time, total_time_str, num_gpus)` with the
same values on every process; `report_metric` appends it to `<run_dir>/metric-<metric>.jsonl`.

The `_full` metrics use the whole dataset without mirroring as the reference, as published numbers
do. `fid10k_full` and `fid2k_full` are quick checks: FID is biased upwards for fewer samples, so
compare them only with values computed with the same number.
"""

import copy
import json
import os
import time

import torch

import dnnlib
from metrics import detectors
from metrics import equivariance
from metrics import frechet_inception_distance
from metrics import inception_score
from metrics import kernel_inception_distance
from metrics import metric_utils
from metrics import perceptual_path_length
from metrics import precision_recall

_metric_dict = dict()
_metric_detectors = dict()  # metric name -> the detector kinds it uses


def register_metric(fn=None, *, detectors=()):
    """Decorator: register `fn` as the metric of its name; `detectors` are the detector kinds it uses
    ('inception', 'vgg16'), fetched before training or evaluation starts. `@register_metric` alone (the
    official form) registers a metric that needs no detector."""
    def decorator(fn):
        assert callable(fn)
        _metric_dict[fn.__name__] = fn
        _metric_detectors[fn.__name__] = tuple(detectors)
        return fn
    return decorator(fn) if fn is not None else decorator


def is_valid_metric(metric):
    return metric in _metric_dict


def list_valid_metrics():
    return list(_metric_dict.keys())


def detector_kinds(metric):
    """The detectors `metric` declared: 'inception' (FID, KID, IS), 'vgg16' (PR, PPL), none (equivariance)."""
    return list(_metric_detectors[metric])


def fetch_detectors(metrics, detector_urls=None, verbose=False):
    """Download (or find in the cache) every detector the metrics need, so that a missing file is reported
    before hours of work rather than at the first evaluation; raises detectors.DetectorError."""
    opts = metric_utils.MetricOptions(detector_urls=detector_urls)
    for kind in sorted({kind for metric in metrics for kind in detector_kinds(metric)}):
        detectors.fetch_detector_file(opts.detector_url(kind), verbose=verbose)


def calc_metric(metric, **kwargs):
    """Compute `metric` with `metric_utils.MetricOptions(**kwargs)`; every process must call it."""
    assert is_valid_metric(metric)
    opts = metric_utils.MetricOptions(**kwargs)
    start_time = time.time()
    results = _metric_dict[metric](opts)
    total_time = time.time() - start_time

    # Every process reports the numbers of rank 0, where the final maths runs.
    for key, value in list(results.items()):
        if opts.num_gpus > 1:
            value = torch.as_tensor(value, dtype=torch.float64, device=metric_utils._collective_device(opts))
            torch.distributed.broadcast(tensor=value, src=0)
            value = float(value.cpu())
        results[key] = float(value)

    return dnnlib.EasyDict(results=dnnlib.EasyDict(results), metric=metric, total_time=total_time,
                           total_time_str=dnnlib.util.format_time(total_time), num_gpus=opts.num_gpus)


def report_metric(result_dict, run_dir=None, snapshot_pkl=None):
    """Print the result as one JSON line and append it to <run_dir>/metric-<metric>.jsonl."""
    metric = result_dict['metric']
    assert is_valid_metric(metric)
    if run_dir is not None and snapshot_pkl is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    line = json.dumps(dict(result_dict, snapshot_pkl=snapshot_pkl, timestamp=time.time()))
    print(line)
    if run_dir is not None and os.path.isdir(run_dir):
        with open(os.path.join(run_dir, f'metric-{metric}.jsonl'), 'at') as f:
            f.write(line + '\n')


# ----------------------------------------------------------------------------------------------
# Recommended metrics: the reference is the whole dataset, unmirrored.


def _full_dataset(opts):
    opts = copy.copy(opts)
    opts.dataset_kwargs = dnnlib.EasyDict(opts.dataset_kwargs, max_size=None, xflip=False)
    return opts


@register_metric(detectors=['inception'])
def fid50k_full(opts):
    return dict(fid50k_full=frechet_inception_distance.compute_fid(_full_dataset(opts), max_real=None, num_gen=50000))


@register_metric(detectors=['inception'])
def kid50k_full(opts):
    kid = kernel_inception_distance.compute_kid(_full_dataset(opts), max_real=1000000, num_gen=50000,
                                                num_subsets=100, max_subset_size=1000)
    return dict(kid50k_full=kid)


@register_metric(detectors=['vgg16'])
def pr50k3_full(opts):
    precision, recall = precision_recall.compute_pr(_full_dataset(opts), max_real=200000, num_gen=50000,
                                                    nhood_size=3, row_batch_size=10000)
    return dict(pr50k3_full_precision=precision, pr50k3_full_recall=recall)


@register_metric(detectors=['vgg16'])
def ppl2_wend(opts):
    ppl = perceptual_path_length.compute_ppl(opts, num_samples=50000, epsilon=1e-4, space='w', sampling='end',
                                             crop=False, batch_size=2)
    return dict(ppl2_wend=ppl)


@register_metric
def eqt50k_int(opts):
    psnr = equivariance.compute_equivariances(opts, num_samples=50000, batch_size=4, compute_eqt_int=True)
    return dict(eqt50k_int=psnr[0])


@register_metric
def eqt50k_frac(opts):
    psnr = equivariance.compute_equivariances(opts, num_samples=50000, batch_size=4, compute_eqt_frac=True)
    return dict(eqt50k_frac=psnr[0])


@register_metric
def eqr50k(opts):
    psnr = equivariance.compute_equivariances(opts, num_samples=50000, batch_size=4, compute_eqr=True)
    return dict(eqr50k=psnr[0])


# ----------------------------------------------------------------------------------------------
# Quick checks: fewer generated images (FID is biased upwards; compare like with like).


@register_metric(detectors=['inception'])
def fid10k_full(opts):
    return dict(fid10k_full=frechet_inception_distance.compute_fid(_full_dataset(opts), max_real=None, num_gen=10000))


@register_metric(detectors=['inception'])
def fid2k_full(opts):
    return dict(fid2k_full=frechet_inception_distance.compute_fid(_full_dataset(opts), max_real=None, num_gen=2000))


# ----------------------------------------------------------------------------------------------
# Legacy metrics: the reference is at most 50k images and honours the dataset's mirroring.


def _legacy_dataset(opts):
    opts = copy.copy(opts)
    opts.dataset_kwargs = dnnlib.EasyDict(opts.dataset_kwargs, max_size=None)
    return opts


@register_metric(detectors=['inception'])
def fid50k(opts):
    return dict(fid50k=frechet_inception_distance.compute_fid(_legacy_dataset(opts), max_real=50000, num_gen=50000))


@register_metric(detectors=['inception'])
def kid50k(opts):
    kid = kernel_inception_distance.compute_kid(_legacy_dataset(opts), max_real=50000, num_gen=50000,
                                                num_subsets=100, max_subset_size=1000)
    return dict(kid50k=kid)


@register_metric(detectors=['vgg16'])
def pr50k3(opts):
    precision, recall = precision_recall.compute_pr(_legacy_dataset(opts), max_real=50000, num_gen=50000,
                                                    nhood_size=3, row_batch_size=10000)
    return dict(pr50k3_precision=precision, pr50k3_recall=recall)


@register_metric(detectors=['inception'])
def is50k(opts):
    mean, std = inception_score.compute_is(_legacy_dataset(opts), num_gen=50000, num_splits=10)
    return dict(is50k_mean=mean, is50k_std=std)
