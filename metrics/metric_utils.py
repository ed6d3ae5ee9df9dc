"""Feature statistics shared by the metrics: running float64 moments and/or all features, and their cache.

`FeatureStats` keeps NVIDIA's API and conventions (moments accumulated in float64, covariance over
N, samples from several processes interleaved), so that numbers match the official metric code.
Cached statistics are written as `.npz` files of plain arrays: loading them never executes code.
"""

import hashlib
import os

import numpy as np
import torch

import dnnlib

_STATS_FIELDS = ('capture_all', 'capture_mean_cov', 'max_items', 'num_items', 'num_features')


class FeatureStats:
    """Accumulates [N, F] feature batches: all of them (capture_all) and/or their first two moments."""

    def __init__(self, capture_all=False, capture_mean_cov=False, max_items=None):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features = None
        self.all_features = None
        self.raw_mean = None
        self.raw_cov = None

    def set_num_features(self, num_features):
        if self.num_features is not None:
            if num_features != self.num_features:
                raise ValueError(f'Features have {num_features} dimensions, earlier ones {self.num_features}.')
            return
        self.num_features = num_features
        self.all_features = []
        self.raw_mean = np.zeros([num_features], dtype=np.float64)
        self.raw_cov = np.zeros([num_features, num_features], dtype=np.float64)

    def is_full(self):
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x):
        """Add a [N, F] batch (kept as float32; moments summed in float64); items beyond max_items are dropped."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f'FeatureStats.append needs [N, F] features, got shape {list(x.shape)}.')
        if self.max_items is not None:
            x = x[:max(self.max_items - self.num_items, 0)]
        self.set_num_features(x.shape[1])
        if x.shape[0] == 0:
            return
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self.raw_mean += x64.sum(axis=0)
            self.raw_cov += x64.T @ x64

    def append_torch(self, x, num_gpus=1, rank=0):
        """Add a [N, F] tensor; with several processes every one receives all batches, interleaved by sample.

        Sample i of process r lands at position i * num_gpus + r, the order NVIDIA's code uses, so the
        statistics do not depend on which process computed which sample.
        """
        if x.ndim != 2 or not 0 <= rank < num_gpus:
            raise ValueError('append_torch needs [N, F] features and 0 <= rank < num_gpus.')
        if num_gpus > 1:
            gathered = []
            for src in range(num_gpus):
                y = x.clone()
                torch.distributed.broadcast(y, src=src)
                gathered.append(y)
            x = torch.stack(gathered, dim=1).flatten(0, 1)
        self.append(x.detach().cpu().numpy())

    def get_all(self):
        assert self.capture_all
        if not self.all_features:
            return np.zeros([0, self.num_features or 0], dtype=np.float32)
        return np.concatenate(self.all_features, axis=0)

    def get_all_torch(self):
        return torch.from_numpy(self.get_all())

    def get_mean_cov(self):
        """(mean [F], covariance [F, F]) in float64; the covariance divides by N, as NVIDIA's metrics do."""
        assert self.capture_mean_cov
        if self.num_items == 0:
            raise ValueError('No features were collected.')
        mean = self.raw_mean / self.num_items
        cov = self.raw_cov / self.num_items - np.outer(mean, mean)
        return mean, cov

    def save(self, path):
        """Write atomically as an .npz of plain arrays (numpy.load with allow_pickle=False reads it back)."""
        arrays = {name: np.asarray(-1 if getattr(self, name) is None else getattr(self, name)) for name in _STATS_FIELDS}
        if self.num_features is not None:
            arrays['raw_mean'], arrays['raw_cov'] = self.raw_mean, self.raw_cov
            if self.capture_all:
                arrays['all_features'] = self.get_all()
        folder, name = os.path.split(os.path.abspath(path))
        tmp_path = os.path.join(folder, f'.{name}.tmp-{os.getpid()}.npz')
        try:
            np.savez(tmp_path, **arrays)
            os.replace(tmp_path, path)
        finally:
            if os.path.exists(tmp_path):
                os.remove(tmp_path)

    @staticmethod
    def load(path):
        with np.load(path, allow_pickle=False) as data:
            values = {name: data[name].item() for name in _STATS_FIELDS}
            stats = FeatureStats(capture_all=bool(values['capture_all']), capture_mean_cov=bool(values['capture_mean_cov']),
                                 max_items=None if values['max_items'] == -1 else int(values['max_items']))
            if values['num_features'] != -1:
                stats.set_num_features(int(values['num_features']))
                stats.num_items = int(values['num_items'])
                stats.raw_mean, stats.raw_cov = data['raw_mean'], data['raw_cov']
                if stats.capture_all:
                    stats.all_features = [data['all_features']]
        return stats


def stats_cache_path(dataset_name, detector_name, **key_items):
    """`<cache>/gan-metrics/<dataset>-<detector>-<md5>.npz`; the md5 covers every key item, as the official key.

    Pass the dataset kwargs, the detector URL and kwargs and the statistics options: changing any of
    them (or moving the dataset) gives another file.
    """
    md5 = hashlib.md5(repr(sorted(key_items.items())).encode('utf-8')).hexdigest()
    safe = lambda text: ''.join(ch if ch.isalnum() or ch in '-_.' else '_' for ch in str(text))
    return dnnlib.util.make_cache_dir_path('gan-metrics', f'{safe(dataset_name)}-{safe(detector_name)}-{md5}.npz')
