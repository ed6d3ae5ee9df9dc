"""Load network pickles of every supported kind, and re-save them in our format.

`load_network_pkl(f)` is what notebooks and third-party code call (as with NVIDIA's releases):

    import dnnlib, legacy
    with dnnlib.util.open_url('network-snapshot-000100.pkl') as f:
        G = legacy.load_network_pkl(f)['G_ema']

It reads our snapshots, the official StyleGAN2-ADA (PyTorch) and StyleGAN3 pickles and StyleGAN2 /
StyleGAN2-ADA TensorFlow pickles (converted to our StyleGAN2 networks, no TensorFlow needed). Nothing
embedded in a file is executed unless `trust_code=True` (needed only for networks from other
codebases, whose classes we do not have).

`convert_network_pickle` and the command line (through `training.snapshots.open_network_pkl`) also
read the official GRAM checkpoints, which are not pickles: a release folder
(`pretrained_models/FFHQ_default/` with generator.pth and ema.pth) or its generator.pth (the sibling
ema.pth is used when present), read weights-only (training.gram_checkpoints). G_ema gets the EMA
weights GRAM renders with, and D is freshly initialised (GRAM releases none).

    python legacy.py --source=stylegan2-cat-config-f.pkl --dest=stylegan2-cat-config-f-pt.pkl
    python legacy.py --source=pretrained_models/FFHQ_default/generator.pth --dest=gram-ffhq.pkl
"""

import os
import pickle

import click

import dnnlib
from dnnlib import cli
from dnnlib import signals
from training import snapshots
from training.snapshots import NetworkPickleError

__all__ = ['load_network_pkl', 'NetworkPickleError', 'convert_network_pickle']


def load_network_pkl(f, force_fp16=False, trust_code=False):
    """The dict (G, D, G_ema, augment_pipe, training_set_kwargs) stored in the binary file `f`.

    Raises NetworkPickleError with one sentence when the file cannot be used.
    """
    return snapshots.load_network_pkl(f, force_fp16=force_fp16, trust_code=trust_code)


def convert_network_pickle(source, dest, force_fp16=False, trust_code=False, trust_option=None):
    """Read `source` (path or URL, or a GRAM checkpoint) and write it to `dest` as one of our snapshots; never overwrites `dest`."""
    data = snapshots.open_network_pkl(source, force_fp16=force_fp16, trust_code=trust_code, trust_option=trust_option)
    try:
        with open(dest, 'xb'):  # Claim the name; a file already there stays untouched.
            pass
    except FileExistsError:
        raise NetworkPickleError(f'--dest={dest} already exists; choose a new file name.') from None
    except OSError as error:
        raise NetworkPickleError(f'Cannot write --dest={dest} ({error.strerror}).') from None
    try:
        snapshots.atomic_write(dest, lambda f: pickle.dump(data, f))
    except BaseException:
        if os.path.isfile(dest) and os.path.getsize(dest) == 0:
            os.remove(dest)  # Only our empty claim; nothing of the user's.
        raise


class _CommandError(click.ClickException):
    pass


@click.command()
@click.option('--source', help='Input pickle (path or URL), or a GRAM checkpoint (generator.pth, or its folder with ema.pth)', required=True, metavar='PATH')
@click.option('--dest', help='Output pickle (must not exist)', required=True, metavar='PATH')
@click.option('--force-fp16', help='Rebuild the networks with fp16 on the four highest resolutions', is_flag=True)
@click.option('--trust-code', help='Execute code embedded in --source (only for files you trust)', is_flag=True)
@signals.exit_on_interrupt
def main(source, dest, force_fp16, trust_code):
    """Convert a network pickle (ours, official StyleGAN2-ADA/StyleGAN3, or StyleGAN2 TensorFlow) or an official
    GRAM checkpoint (generator.pth with its ema.pth, or their folder) to our format.

    \b
    Examples:
    python legacy.py --source=https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks/stylegan2-cat-config-f.pkl \\
        --dest=stylegan2-cat-config-f.pkl
    python legacy.py --source=pretrained_models/FFHQ_default/generator.pth --dest=gram-ffhq.pkl
    """
    cli.check_output_path(dest, '--dest', 'file')  # before reading (or downloading) --source
    try:
        convert_network_pickle(source, dest, force_fp16=force_fp16, trust_code=trust_code, trust_option='--trust-code')
    except NetworkPickleError as error:
        raise _CommandError(str(error)) from None
    click.echo(f'Wrote {dest}')


if __name__ == '__main__':
    main()
