"""Snapshot files of a run: atomic writes, network pickles, training states, and finding what to resume.

A network snapshot `network-snapshot-<kimg>.pkl` is the official pickle: a dict of G, D, G_ema,
augment_pipe and training_set_kwargs. Beside it, `training-state-<kimg>.pt` holds everything else an
exact continuation needs (optimizer states, image counter, tick, loss and ADA state, the options of
the run). It is a `torch.save` file of tensors, numbers, strings and containers only, so it loads
with `weights_only=True` and can never run code.
"""

import copy
import glob
import importlib
import inspect
import os
import pickle
import re

import torch

import dnnlib
from torch_utils import persistence
from training import capabilities, configs

STATE_FORMAT = 'raycond-training-state'
STATE_VERSION = 1

class ResumeError(ValueError):
    """A --resume source that cannot be used; the message is one sentence naming it and the fix."""

#----------------------------------------------------------------------------
# Atomic writes: a reader never sees a half-written file, and a crash leaves no partial output.

def atomic_write(path, write_fn, mode='wb'):
    """Call `write_fn(file)` on a temporary file in the same folder, then rename it to `path`."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp_path = os.path.join(folder, f'.{name}.tmp-{os.getpid()}')
    try:
        with open(tmp_path, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise

def unused_path(path):
    """`path` itself when free, else the first free `<stem>-<n><ext>`: earlier outputs are never replaced."""
    if not os.path.exists(path):
        return path
    stem, ext = os.path.splitext(path)
    n = 1
    while os.path.exists(f'{stem}-{n}{ext}'):
        n += 1
    return f'{stem}-{n}{ext}'

#----------------------------------------------------------------------------
# Writing.

def state_path_for(snapshot_path):
    """`.../network-snapshot-X.pkl` -> `.../training-state-X.pt`."""
    folder, name = os.path.split(snapshot_path)
    stem = os.path.splitext(name)[0]
    return os.path.join(folder, re.sub(r'^network-snapshot', 'training-state', stem) + '.pt')

def save_network_snapshot(path, modules, training_set_kwargs):
    """Write the official snapshot dict; networks are copied to the CPU, in eval mode, without gradients."""
    data = dict(training_set_kwargs=dict(training_set_kwargs))
    for name, module in modules.items():
        if module is not None:
            module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
        data[name] = module
    atomic_write(path, lambda f: pickle.dump(data, f))

def save_training_state(path, state):
    state = dict(state, format=STATE_FORMAT, version=STATE_VERSION)
    atomic_write(path, lambda f: torch.save(state, f))

#----------------------------------------------------------------------------
# Reading.

def load_training_state(path):
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # torch's own message is several lines of advice that does not apply here
        raise ResumeError(f'Cannot read the training state {path} ({type(error).__name__}): it is damaged or not a '
                          f'training state; resume from another snapshot, or from its .pkl alone.') from None
    if not isinstance(state, dict) or state.get('format') != STATE_FORMAT:
        raise ResumeError(f'{path} is not a training state written by this code; resume from its .pkl alone instead.')
    if state.get('version') != STATE_VERSION:
        raise ResumeError(f'{path} has training-state version {state.get("version")}, this code reads '
                          f'version {STATE_VERSION}; resume from its .pkl alone instead.')
    return state

def snapshot_order(snapshot_path):
    """Chronological key of a snapshot in its run: (kimg, n) of `network-snapshot-<kimg>[-<n>].pkl`.

    `unused_path` numbers later snapshots of the same kimg -1, -2, ...; the name alone orders them,
    so no (possibly large) training state is read to choose one.
    """
    match = re.fullmatch(r'network-snapshot-(\d+)(?:-(\d+))?\.pkl', os.path.basename(snapshot_path))
    if not match:
        return (-1, -1)
    return (int(match.group(1)), int(match.group(2) or 0))

def resolve_resume(source):
    """Map a --resume value to (snapshot path or URL, training-state path or None).

    A run directory resolves to its latest snapshot; a snapshot resumes exactly when its training
    state lies beside it, and from its weights alone otherwise (official pickles, URLs, and the
    foreign checkpoints of FOREIGN_CHECKPOINT_READERS, such as a GRAM release folder or generator.pth).
    """
    if re.match(r'^[a-z]+://', source):
        return source, None
    if foreign_checkpoint_reader(source) is not None:  # e.g. a GRAM release folder: weights only
        return source, None
    if os.path.isdir(source):
        snapshots = glob.glob(os.path.join(source, 'network-snapshot-*.pkl'))
        if not snapshots:
            raise ResumeError(f'The run directory {source} holds no network-snapshot-*.pkl to resume from.')
        with_state = [path for path in snapshots if os.path.isfile(state_path_for(path))]
        source = max(with_state or snapshots, key=lambda path: (snapshot_order(path), path))
    if not os.path.isfile(source):
        raise ResumeError(f'--resume={source} is neither a snapshot file nor a run directory.')
    state_path = state_path_for(source)
    return source, (state_path if os.path.isfile(state_path) else None)

class NetworkPickleError(ValueError):
    """A file that cannot be used as a network pickle; the message is one sentence naming it and the fix."""

def _register_no_exec_classes():
    """Import every module of the family registry: importing one registers its classes with the no-exec loader."""
    for module in configs.network_modules():
        importlib.import_module(module)

def _refusal_text(error, trust_option):
    """The no-exec loader's refusal, its advice naming `trust_option` (e.g. a script's '--trust-code') when given."""
    text = str(error)
    if trust_option is None:
        return text  # Python callers read the loader's own advice: trust_code=True
    advice = f'if you trust the file and its author, pass {trust_option}'
    if persistence._TRUST_HINT in text:
        return text.replace(persistence._TRUST_HINT, advice)
    return f'{text.rstrip(".")}; {advice}.'

def load_network_pkl(f, force_fp16=False, trust_code=False, name=None, trust_option=None):
    """Read a network pickle from the binary file `f`: a dict with G, D, G_ema, augment_pipe, training_set_kwargs.

    Our snapshots and the official StyleGAN2-ADA / StyleGAN3 pickles are rebuilt from our classes
    without executing the code embedded in them unless `trust_code`; StyleGAN2 TensorFlow pickles
    (G, D, Gs) are converted to our StyleGAN2 networks without TensorFlow. `force_fp16` rebuilds the
    networks with fp16 on the four highest resolutions and clamping at 256, as the official option.
    Problems raise NetworkPickleError with one sentence naming `name`; a refusal to run embedded code
    advises `trust_code=True`, or `trust_option` when given (the scripts pass '--trust-code').
    """
    from training import tf_stylegan2
    _register_no_exec_classes()
    name = name or getattr(f, 'name', 'the network pickle')
    try:
        data = persistence.load(f, trust_code=trust_code, stand_ins=tf_stylegan2.STAND_INS)
    except persistence.UnsafePickleError as error:
        raise NetworkPickleError(f'Cannot load {name} without executing code from it: '
                                 f'{_refusal_text(error, trust_option)}') from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as error:
        raise NetworkPickleError(f'Cannot read {name} ({type(error).__name__}: {error}); the file is damaged or '
                                 f'not a network pickle.') from None
    if tf_stylegan2.is_tf_pickle(data):
        try:
            data = tf_stylegan2.convert_tf_pickle(data)
        except tf_stylegan2.TFConversionError as error:
            raise NetworkPickleError(f'Cannot convert the TensorFlow pickle {name}: {error}') from None
    return _finish_snapshot(data, name, force_fp16)

def _with_fp16(module, name):
    """The official --force-fp16: rebuild with num_fp16_res=4, conv_clamp=256 and copy every tensor."""
    from torch_utils import misc
    if not hasattr(module, 'init_kwargs'):
        raise NetworkPickleError(f'{name}: {type(module).__name__} does not record its constructor arguments, so '
                                 f'it cannot be rebuilt in fp16; drop --force-fp16.')
    kwargs = copy.deepcopy(dict(module.init_kwargs))
    cls = type(module).__bases__[0] if persistence.is_persistent(type(module)) else type(module)  # the decorated class
    parameters = inspect.signature(cls.__init__).parameters
    if 'num_fp16_res' not in parameters and not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        raise NetworkPickleError(f'{name}: {type(module).__name__} has no float16 layers to switch on; '
                                 f'drop --force-fp16.')
    target = kwargs.get('synthesis_kwargs', kwargs)
    target['num_fp16_res'] = 4
    target['conv_clamp'] = 256
    if kwargs == module.init_kwargs:
        return module
    rebuilt = type(module)(*getattr(module, 'init_args', ()), **kwargs).eval().requires_grad_(False)
    misc.copy_params_and_buffers(module, rebuilt, require_all=True)
    return rebuilt

# Checkpoints of other codebases that are not pickles: (what they are, claims(path) -> bool, read(path) -> the
# snapshot dict), as dotted names imported on use. A reader executes nothing from the files and raises
# NetworkPickleError (one sentence) for a file it claims but cannot use. Local paths only (files or folders).
FOREIGN_CHECKPOINT_READERS = [
    ('an official GRAM checkpoint (generator.pth, ema.pth)',
     'training.gram_checkpoints.claims', 'training.gram_checkpoints.load_gram_checkpoint'),
]

def foreign_checkpoint_reader(source):
    """(description, read) of the first foreign reader that claims the local path `source`, else None."""
    if dnnlib.util.is_url(source, allow_file_urls=True) or not os.path.exists(source):
        return None
    for description, claims, read in FOREIGN_CHECKPOINT_READERS:
        if dnnlib.util.get_obj_by_name(claims)(source):
            return description, dnnlib.util.get_obj_by_name(read)
    return None

def _finish_snapshot(data, name, force_fp16):
    """Check the snapshot dict, fill the optional entries, and apply --force-fp16."""
    if not isinstance(data, dict) or not all(isinstance(data.get(key), torch.nn.Module) for key in ('G', 'D', 'G_ema')):
        raise NetworkPickleError(f'{name} is not a network snapshot (a pickled dict with G, D and G_ema networks).')
    data = dict(data)
    data.setdefault('training_set_kwargs', None)
    data.setdefault('augment_pipe', None)
    if force_fp16:
        for key in ('G', 'D', 'G_ema'):
            data[key] = _with_fp16(data[key], name)
    return data

def open_network_pkl(source, force_fp16=False, trust_code=False, trust_option=None):
    """load_network_pkl for a path or URL (downloaded through the dnnlib cache), or a foreign checkpoint.

    A local file or folder that a reader of FOREIGN_CHECKPOINT_READERS claims (an official GRAM
    release folder or its generator.pth) is read by it, without executing anything from it.
    """
    foreign = foreign_checkpoint_reader(source)
    if foreign is not None:  # never executes anything from the files, trust_code or not
        return _finish_snapshot(foreign[1](source), source, force_fp16)
    if not dnnlib.util.is_url(source, allow_file_urls=True) and not os.path.isfile(source):
        raise NetworkPickleError(f'{source} does not exist or is not a file; pass the path or URL of a network pickle '
                                 f'(or a folder of a supported foreign checkpoint, e.g. GRAM\'s generator.pth and ema.pth).')
    try:
        with dnnlib.util.open_url(source) as f:
            return load_network_pkl(f, force_fp16=force_fp16, trust_code=trust_code, name=source, trust_option=trust_option)
    except OSError as error:  # includes dnnlib.util.DownloadError
        raise NetworkPickleError(f'Cannot open {source} ({error}).') from None

def load_network_snapshot(source, trust_code=False, trust_option=None):
    """Read a snapshot pickle (path or URL) for --resume, without executing embedded code unless `trust_code`."""
    try:
        return open_network_pkl(source, trust_code=trust_code, trust_option=trust_option)
    except NetworkPickleError as error:
        raise ResumeError(f'Cannot resume from {source}: {error}') from None

def _named_tensors(module):
    return list(module.named_parameters()) + list(module.named_buffers())

def copy_weights_by_name(data, modules, source):
    """Copy every tensor whose name exists in both; raise one ResumeError listing every shape mismatch.

    Nothing is copied unless all shared names agree in shape, except where the destination
    generator declares how to start from the source's weights (`capabilities.resume_widening`; Ray
    Conditioning from a 2D StyleGAN pickle): then a tensor of another shape goes into the region the
    declaration names and any other mismatch keeps its initialisation. Returns the names of both
    kinds, dict(widened=[...], kept=[...]), for the log.
    """
    widen = capabilities.resume_widening(modules.get('G'), data.get('G'))
    pairs = []  # (destination tensor, source tensor, destination region)
    mismatches, report = [], dict(widened=[], kept=[])
    for name, module in modules.items():
        src = data.get(name)
        if module is None or not isinstance(src, torch.nn.Module):
            continue
        src_tensors = dict(_named_tensors(src))
        for tensor_name, tensor in _named_tensors(module):
            other = src_tensors.get(tensor_name)
            if other is None:
                continue
            if other.shape == tensor.shape:
                pairs.append((tensor, other, ...))
                continue
            full_name = f'{name}.{tensor_name}'
            region = widen(tensor_name, other.shape, tensor.shape) if widen else None
            if region is not None:
                pairs.append((tensor, other, region))
                report['widened'].append(full_name)
            elif widen:
                report['kept'].append(full_name)
            else:
                mismatches.append(f'{full_name} {list(other.shape)} vs {list(tensor.shape)}')
    if mismatches:
        raise ResumeError(f'Cannot resume from {source}: {len(mismatches)} tensor(s) have other shapes in the '
                          f'snapshot than in this configuration ({"; ".join(mismatches)}); train with the '
                          f'options the snapshot was made with (cfg, resolution, --cbase, --cmax, --cond, --map-depth).')
    with torch.no_grad():
        for tensor, other, region in pairs:
            tensor[region].copy_(other)
    return report

#----------------------------------------------------------------------------
