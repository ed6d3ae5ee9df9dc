"""The repository is self-contained: no file refers to a folder beside the clone.

A user's clone has only the repository, so a path that leaves it (to a sibling `shared` folder)
points at nothing there. Every tracked file and every untracked file that git does not ignore is
read as text and must not contain such a path.
"""

import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Built so that this file does not itself contain the string it looks for.
NEEDLE = '/'.join(['..', 'shared'])


def _git_files(*args):
    result = subprocess.run(['git', 'ls-files', '-z', *args], cwd=REPO, capture_output=True, check=True)
    return [name for name in result.stdout.decode('utf-8', 'surrogateescape').split('\0') if name]


@pytest.fixture(scope='module')
def repository_files():
    if not os.path.isdir(os.path.join(REPO, '.git')) and not os.path.isfile(os.path.join(REPO, '.git')):
        pytest.fail(f'{REPO} is not a git checkout; this test lists files with git ls-files')
    files = sorted(set(_git_files()) | set(_git_files('--others', '--exclude-standard')))
    assert len(files) > 100 and 'README.md' in files, files[:10]
    return files


def _lines_with_needle(root, names):
    """'name:line' for every line of the text files `names` (relative to `root`) that holds NEEDLE."""
    found = []
    for name in names:
        path = os.path.join(root, name)
        if not os.path.isfile(path) or os.path.islink(path):
            continue  # deleted in the work tree but still in the index, or a link
        with open(path, 'rb') as f:
            data = f.read()
        if b'\0' in data[:8192]:
            continue  # binary
        lines = data.decode('utf-8', 'replace').splitlines()
        found += [f'{name}:{number}' for number, line in enumerate(lines, 1) if NEEDLE in line]
    return found


def test_no_file_refers_to_a_folder_beside_the_repository(repository_files):
    offenders = _lines_with_needle(REPO, repository_files)
    assert not offenders, f'{len(offenders)} lines refer to {NEEDLE}: ' + ', '.join(offenders)


def test_the_search_flags_a_reference_and_skips_binaries(tmp_path):
    (tmp_path / 'notes.md').write_text(f'intro\nsee {NEEDLE}/spec/x.json\n')
    (tmp_path / 'blob.bin').write_bytes(b'\0' + NEEDLE.encode())
    (tmp_path / 'clean.py').write_text('x = 1\n')
    assert _lines_with_needle(str(tmp_path), ['notes.md', 'blob.bin', 'clean.py', 'gone.txt']) == ['notes.md:2']
    assert NEEDLE not in open(__file__).read()
