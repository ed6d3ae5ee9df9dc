"""The networks a visualizer may show: the pickles and run directories named at launch, and nothing else.

The page picks a network by id: '<n>' for the n-th pickle given at launch, '<n>/<file>' for a snapshot
of the n-th run directory. A run directory's snapshots are listed afresh on each request (a training
run adds them), and a snapshot id is honoured only when its file name is one of that listing: the
browser never sends a path. Loading goes through training.generation.load_generator (no code from the
pickle runs unless --trust-code), and at most `max_loaded` renderers stay in memory.
"""

import collections
import os
import re
import threading

from training import generation, snapshots
from viz.renderer import Renderer

SNAPSHOT_NAME = re.compile(r'network-snapshot-\d+(-\d+)?\.pkl')  # train.py's names (-<n>: a later one of that kimg)


class CatalogueError(ValueError):
    """An unknown network id or a network that cannot be loaded: one sentence for the page or the shell."""


class Catalogue:
    def __init__(self, paths, device='cpu', trust_code=False, max_loaded=2):
        self.entries = []
        for path in paths:
            path = os.path.abspath(os.path.expanduser(str(path)))
            if os.path.isdir(path):
                self.entries.append(('run', path))
            elif os.path.isfile(path):
                self.entries.append(('pkl', path))
            else:
                raise CatalogueError(f'{path} is neither a network pickle nor a run directory.')
        self.device = device
        self.trust_code = trust_code
        self.max_loaded = max_loaded
        self._loaded = collections.OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def snapshots(run_dir):
        """The snapshot file names of a run directory, oldest first."""
        try:
            names = os.listdir(run_dir)
        except OSError:
            return []
        return sorted((name for name in names if SNAPSHOT_NAME.fullmatch(name) and os.path.isfile(os.path.join(run_dir, name))),
                      key=snapshots.snapshot_order)

    def listing(self):
        """[{id, label, kind, snapshots?}] for the page's network picker."""
        items = []
        for index, (kind, path) in enumerate(self.entries):
            name = os.path.basename(path) or path
            if kind == 'pkl' and SNAPSHOT_NAME.fullmatch(name):  # snapshots of different runs share their names
                name = f'{os.path.basename(os.path.dirname(path))}/{name}'
            item = {'id': str(index), 'label': name, 'kind': kind}
            if kind == 'run':
                item['snapshots'] = [{'id': f'{index}/{name}', 'label': name} for name in self.snapshots(path)]
            items.append(item)
        return items

    def path_of(self, network_id):
        """The file of a network id (only ids of listing())."""
        text = str(network_id)
        index_text, _, name = text.partition('/')
        if not index_text.isdigit() or int(index_text) >= len(self.entries):
            raise CatalogueError(f'Unknown network {text!r}: choose one of the networks listed on the page.')
        kind, path = self.entries[int(index_text)]
        if kind == 'pkl':
            if name:
                raise CatalogueError(f'Unknown network {text!r}: choose one of the networks listed on the page.')
            return path
        if not name:
            names = self.snapshots(path)
            if not names:
                raise CatalogueError(f'The run directory {os.path.basename(path)} has no snapshots yet.')
            name = names[-1]
        if name not in self.snapshots(path):
            raise CatalogueError(f'Unknown snapshot {name!r} of {os.path.basename(path)}: choose one listed on the page.')
        return os.path.join(path, name)

    def renderer(self, network_id):
        """The Renderer of a network id, loading the pickle on first use."""
        path = self.path_of(network_id)
        with self._lock:
            key = (path, os.path.getmtime(path))
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            try:
                G = generation.load_generator(path, self.device, trust_code=self.trust_code)
            except generation.GenerationError as error:
                raise CatalogueError(str(error)) from None
            except (OSError, EOFError, ValueError) as error:
                raise CatalogueError(f'Cannot load {os.path.basename(path)}: {error}') from None
            renderer = Renderer(G, self.device)
            self._loaded[key] = renderer
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
            return renderer
