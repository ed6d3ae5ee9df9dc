"""Feature statistics shared by the metrics: running float64 moments and/or all features, and their cache.

`FeatureStats` keeps NVIDIA's API and conventions (moments accumulated in float64, covariance over
N, samples from several processes interleaved), so that numbers match the official metric code.
Cached statistics are written as `.npz` files of plain arrays: loading them never executes code.
"""

import contextlib
import copy
import hashlib
import os
import sys

import numpy as np
import torch

import dnnlib

class MetricError(ValueError):
    """A metric cannot be computed for this network or dataset; the message is one sentence naming the fix."""


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

    def append_torch(self, x, num_gpus=1, rank=0, group_size=1):
        """Add a [N, F] tensor; with several processes every one receives all batches, interleaved.

        The rows of each process come in groups of `group_size`; group t of process r lands at group
        position t * num_gpus + r (with groups of 1, NVIDIA's order), so the statistics do not depend
        on which process computed which sample.
        """
        if x.ndim != 2 or not 0 <= rank < num_gpus or x.shape[0] % group_size:
            raise ValueError('append_torch needs [N, F] features, 0 <= rank < num_gpus and N a multiple of group_size.')
        if num_gpus > 1:
            gathered = []
            for src in range(num_gpus):
                y = x.clone()
                torch.distributed.broadcast(y, src=src)
                gathered.append(y.reshape(-1, group_size, x.shape[1]))
            x = torch.stack(gathered, dim=1).flatten(0, 2)
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


# ----------------------------------------------------------------------------------------------
# What a metric is computed on.


class MetricOptions:
    """Everything a metric needs: the generator, the dataset, the process layout and the detectors.

    - `G`, `G_kwargs`: the generator and extra synthesis keywords (`noise_mode`, `scale`).
    - `dataset_kwargs`: how to construct the real dataset (`class_name` plus its arguments).
    - `num_gpus`, `rank`: the process layout; with several processes torch.distributed must be set up.
    - `device`: where networks run (default CPU).
    - `seed`: fixes the latents and the labels drawn for the generator, so that a metric evaluated
      twice on the same network, or split over another number of processes, sees the same samples.
    - `detector_urls`: overrides of the default detector locations, e.g. {'inception': 'local.pth'}.
    - `cache`: read and write the dataset statistics cache.
    - `verbose`: progress lines on rank 0.
    """

    def __init__(self, G=None, G_kwargs={}, dataset_kwargs={}, num_gpus=1, rank=0, device=None, seed=0,
                 detector_urls=None, cache=True, verbose=False, num_workers=None):
        assert 0 <= rank < num_gpus
        self.G = G
        self.G_kwargs = dnnlib.EasyDict(G_kwargs)
        self.dataset_kwargs = dnnlib.EasyDict(dataset_kwargs)
        self.num_gpus = num_gpus
        self.rank = rank
        self.device = torch.device('cpu' if device is None else device)
        self.seed = seed
        self.detector_urls = dict(detector_urls or {})
        self.cache = cache
        self.verbose = verbose and rank == 0
        self.num_workers = min(3, os.cpu_count() or 1) if num_workers is None else num_workers

    def detector_url(self, kind):
        """The location of detector `kind` ('inception' or 'vgg16'): the user's override, else the default."""
        from metrics import detectors
        return self.detector_urls.get(kind, detectors.DEFAULT_URLS[kind])


def get_feature_detector(opts, url):
    """The detector at `url` on opts.device; with several processes rank 0 downloads it first."""
    from metrics import detectors
    if opts.num_gpus > 1 and opts.rank != 0:
        torch.distributed.barrier()
    try:
        detector = detectors.load_detector(url, device=opts.device, verbose=opts.verbose)
    finally:
        if opts.num_gpus > 1 and opts.rank == 0:
            torch.distributed.barrier()
    return detector


def _broadcast_flag(opts, flag):
    if opts.num_gpus == 1:
        return bool(flag)
    value = torch.tensor([float(flag)], dtype=torch.float64, device=_collective_device(opts))
    torch.distributed.broadcast(value, src=0)
    return bool(value.item())


def _collective_device(opts):
    # NCCL moves only CUDA tensors; gloo only CPU ones.
    return opts.device if torch.distributed.get_backend() == 'nccl' else torch.device('cpu')


class ProgressMonitor:
    """Progress of one feature pass on rank 0: a tqdm bar on a terminal, else about ten log lines."""

    def __init__(self, opts, tag, num_items):
        self.tag, self.num_items = tag, num_items
        self.enabled = opts.verbose
        self.bar = None
        self.next_report = 0
        if self.enabled and sys.stderr.isatty():
            import tqdm
            self.bar = tqdm.tqdm(total=num_items, desc=tag, unit='img', leave=False)

    def update(self, done):
        done = min(done, self.num_items)
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            if done >= self.num_items:
                self.bar.close()
            return
        if done >= self.next_report or done >= self.num_items:
            print(f'{self.tag}: {done}/{self.num_items} images', flush=True)
            self.next_report = done + max(self.num_items // 10, 1)


def _dataset_fingerprint(dataset_kwargs):
    """Size and modification time of the dataset file or folder, so that a re-packed dataset misses the cache."""
    path = dataset_kwargs.get('path')
    if not isinstance(path, str) or not os.path.exists(path):
        return None
    if os.path.isfile(path):
        info = os.stat(path)
        return (os.path.abspath(path), info.st_size, info.st_mtime_ns)
    entries = []
    for root, _dirs, files in os.walk(path):
        for name in sorted(files):
            info = os.stat(os.path.join(root, name))
            entries.append((os.path.relpath(os.path.join(root, name), path), info.st_size, info.st_mtime_ns))
    return (os.path.abspath(path), hashlib.md5(repr(sorted(entries)).encode('utf-8')).hexdigest())


def _effective_dataset_kwargs(dataset_kwargs):
    """The dataset kwargs without those that change nothing, so that train.py and calc_metrics.py share a cache entry."""
    kwargs = dict(dataset_kwargs)
    kwargs.pop('use_labels', None)  # Labels do not change the images.
    if kwargs.get('max_size') is None:
        kwargs.pop('random_seed', None)  # Only picks the max_size subset.
    if not kwargs.get('xflip'):
        kwargs.pop('xflip_camera_labels', None)
    for name in ('max_size', 'xflip', 'xflip_camera_labels'):
        if name in kwargs and not kwargs[name]:
            del kwargs[name]  # Same as the default.
    return kwargs


def to_detector_images(images):
    """Generator output in [-1, 1] -> uint8 exactly as a saved PNG (x*127.5+128, clamped, truncated), 3 channels."""
    images = (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


def compute_feature_stats_for_dataset(opts, detector_url, detector_kwargs, rel_lo=0, rel_hi=1, batch_size=64,
                                      data_loader_kwargs=None, max_items=None, **stats_kwargs):
    """Features of the real images (items rank, rank + num_gpus, ...), cached on disk when opts.cache.

    rel_lo / rel_hi (the official progress range) are accepted so that code written for the official
    signature runs; progress here is reported per pass.
    """
    dataset = dnnlib.util.construct_class_by_name(**opts.dataset_kwargs)
    data_loader_kwargs = dict(pin_memory=opts.device.type == 'cuda', num_workers=opts.num_workers,
                              **(data_loader_kwargs or {}))
    if data_loader_kwargs['num_workers'] > 0:
        data_loader_kwargs.setdefault('prefetch_factor', 2)

    cache_file = None
    if opts.cache:
        key_items = dict(dataset_kwargs=_effective_dataset_kwargs(opts.dataset_kwargs), dataset_fingerprint=_dataset_fingerprint(opts.dataset_kwargs),
                         detector_url=detector_url, detector_kwargs=detector_kwargs, stats_kwargs=stats_kwargs,
                         max_items=max_items)
        detector_name = os.path.splitext(os.path.basename(str(detector_url).split('?')[0]))[0]
        cache_file = stats_cache_path(dataset.name, detector_name, **key_items)
        if _broadcast_flag(opts, opts.rank == 0 and os.path.isfile(cache_file)):
            dataset.close()
            return FeatureStats.load(cache_file)

    num_items = len(dataset) if max_items is None else min(len(dataset), max_items)
    stats = FeatureStats(max_items=num_items, **stats_kwargs)
    progress = ProgressMonitor(opts, 'dataset features', num_items)
    detector = get_feature_detector(opts, detector_url)

    # Every process reads the same number of items; the few repeated at the end fall beyond max_items.
    per_rank = (num_items - 1) // opts.num_gpus + 1
    item_subset = [(i * opts.num_gpus + opts.rank) % num_items for i in range(per_rank)]
    loader = torch.utils.data.DataLoader(dataset=dataset, sampler=item_subset, batch_size=batch_size, **data_loader_kwargs)
    for images, _labels in loader:
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        features = detector(images.to(opts.device), **detector_kwargs)
        stats.append_torch(features, num_gpus=opts.num_gpus, rank=opts.rank)
        progress.update(stats.num_items)
    dataset.close()

    if cache_file is not None and opts.rank == 0:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        stats.save(cache_file)
    return stats


# Latents and labels come in fixed chunks seeded by (seed, chunk index): sample k is the same whatever
# the batch size or the number of processes.
_SAMPLE_CHUNK = 1024


class GeneratorSamples:
    """Deterministic latents z_k and dataset labels c_k for global sample indices k."""

    def __init__(self, opts):
        self.opts = opts
        self.z_dim, self.c_dim = opts.G.z_dim, opts.G.c_dim
        self.dataset = dnnlib.util.construct_class_by_name(**opts.dataset_kwargs) if self.c_dim else None
        self._chunks = {}

    def _chunk(self, index):
        if index not in self._chunks:
            if len(self._chunks) > 4:
                self._chunks.clear()
            rng = np.random.default_rng([self.opts.seed, index])
            z = rng.standard_normal([_SAMPLE_CHUNK, self.z_dim]).astype(np.float32)
            label_idx = rng.integers(len(self.dataset), size=_SAMPLE_CHUNK) if self.dataset is not None else None
            self._chunks[index] = (z, label_idx)
        return self._chunks[index]

    def get(self, indices):
        """(z [N, z_dim], c [N, c_dim]) on opts.device for the global sample indices."""
        z = np.zeros([len(indices), self.z_dim], dtype=np.float32)
        c = np.zeros([len(indices), self.c_dim], dtype=np.float32)
        for row, k in enumerate(indices):
            chunk_z, chunk_labels = self._chunk(k // _SAMPLE_CHUNK)
            z[row] = chunk_z[k % _SAMPLE_CHUNK]
            if self.dataset is not None:
                c[row] = self.dataset.get_label(int(chunk_labels[k % _SAMPLE_CHUNK]))
        return torch.from_numpy(z).to(self.opts.device), torch.from_numpy(c).to(self.opts.device)

    def rank_indices(self, batch_index, batch_size, group_size=1):
        """Global indices of this process's batch `batch_index`, in groups of `group_size` consecutive samples.

        Batch b of every process together covers samples [b * batch_size * num_gpus, (b + 1) * batch_size * num_gpus);
        group t of process r is group number (b * batch_size / group_size + t) * num_gpus + r of the whole set.
        """
        opts = self.opts
        assert batch_size % group_size == 0
        groups_per_batch = batch_size // group_size
        indices = []
        for t in range(groups_per_batch):
            group = (batch_index * groups_per_batch + t) * opts.num_gpus + opts.rank
            indices += range(group * group_size, (group + 1) * group_size)
        return indices


def run_generator(opts, z, c):
    """Images in [-1, 1] from opts.G: mapping, then synthesis with the camera (for camera-conditioned
    synthesis networks) and opts.G_kwargs (`noise_mode`, default 'random' as in the official metrics; `scale`)."""
    from training import generation
    G = opts.G
    ws = G.mapping(z, c)
    return generation.synthesize(G, ws, c=c, noise_mode=opts.G_kwargs.get('noise_mode', 'random'),
                                 scale=opts.G_kwargs.get('scale'))


@contextlib.contextmanager
def seeded_torch_rng(opts, *stream, per_rank=True):
    """Seed torch's RNG (CPU and opts.device) from (opts.seed, [rank,] *stream) for the duration, then restore it,
    so that the generator's random noise inputs are reproducible."""
    devices = [opts.device] if opts.device.type == 'cuda' else []
    with torch.random.fork_rng(devices=devices):
        entropy = [opts.seed, opts.rank, *stream] if per_rank else [opts.seed, *stream]
        torch.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
        yield


def compute_feature_stats_for_generator(opts, detector_url, detector_kwargs, rel_lo=0, rel_hi=1, batch_size=64,
                                        batch_gen=None, **stats_kwargs):
    """Features of generated images, quantised like saved PNGs; labels (cameras included) drawn from the dataset.

    Each process generates its interleaved share of the samples; every process ends up with all features.
    rel_lo / rel_hi are accepted for the official signature, as in compute_feature_stats_for_dataset.
    """
    if batch_gen is None:
        batch_gen = min(batch_size, 4)
    assert batch_size % batch_gen == 0
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    opts = _with_generator(opts, G)
    samples = GeneratorSamples(opts)
    stats = FeatureStats(**stats_kwargs)
    assert stats.max_items is not None
    progress = ProgressMonitor(opts, 'generator features', stats.max_items)
    detector = get_feature_detector(opts, detector_url)

    # Generated in groups of batch_gen consecutive samples, each with its own noise seed: the images (random
    # noise inputs included) do not depend on the number of processes or the batch size.
    batch_index = 0
    while not stats.is_full():
        indices = samples.rank_indices(batch_index, batch_size, group_size=batch_gen)
        images = []
        with torch.no_grad():
            for start in range(0, batch_size, batch_gen):
                with seeded_torch_rng(opts, indices[start] // batch_gen, per_rank=False):
                    z, c = samples.get(indices[start:start + batch_gen])
                    images.append(to_detector_images(run_generator(opts, z, c)))
        features = detector(torch.cat(images), **detector_kwargs)
        stats.append_torch(features, num_gpus=opts.num_gpus, rank=opts.rank, group_size=batch_gen)
        progress.update(stats.num_items)
        batch_index += 1
    if samples.dataset is not None:
        samples.dataset.close()
    return stats


def _with_generator(opts, G):
    clone = copy.copy(opts)
    clone.G = G
    return clone


def parse_detector_option(values):
    """--detector values -> {'inception': location, 'vgg16': location}; raises ValueError with one sentence.

    Each value is a file path or URL of the Inception network, or KIND=PATH with KIND inception or vgg16.
    """
    from metrics import detectors
    locations = {}
    for value in values:
        kind, sep, location = value.partition('=')
        if not sep or '://' in kind or os.sep in kind:  # A bare path or URL names the Inception network.
            kind, location = 'inception', value
        if kind not in detectors.DEFAULT_URLS:
            raise ValueError(f'--detector={value}: {kind} is not a detector kind; use inception=PATH or vgg16=PATH.')
        if '://' not in location and not os.path.isfile(location):
            raise ValueError(f'--detector={value}: file {location} does not exist.')
        locations[kind] = location if '://' in location else os.path.abspath(location)
    return locations


def compute_real_and_generated_stats(opts, detector_url, detector_kwargs, max_real, num_gen, **stats_kwargs):
    """(dataset stats of up to max_real images, generator stats of num_gen images) with the same detector."""
    real = compute_feature_stats_for_dataset(opts, detector_url, detector_kwargs, max_items=max_real, **stats_kwargs)
    generated = compute_feature_stats_for_generator(opts, detector_url, detector_kwargs, max_items=num_gen, **stats_kwargs)
    return real, generated
