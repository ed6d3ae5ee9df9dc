"""Framework-independent helpers: EasyDict, URL download cache, construct-by-name, logging."""

from .util import EasyDict, make_cache_dir_path
