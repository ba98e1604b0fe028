"""Issue 13, defect 5: the token file cannot be planted, raced or looped (POSIX rules)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from georeasoner_plugin.backend.auth import TokenFileError, load_or_create_token

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX ownership and O_NOFOLLOW rules")
ROOT = Path(__file__).resolve().parents[2]


def test_a_dangling_symlink_is_refused_with_advice_not_a_recursion_error(tmp_path):
    link = tmp_path / "token"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(TokenFileError, match="symbolic link"):
        load_or_create_token(link)


def test_a_symlink_to_someone_elses_file_is_refused_and_not_chmodded(tmp_path):
    planted = tmp_path / "theirs"
    planted.write_text("a-token-they-can-read-0123456789\n")
    os.chmod(planted, 0o644)
    link = tmp_path / "token"
    link.symlink_to(planted)
    with pytest.raises(TokenFileError, match="symbolic link"):
        load_or_create_token(link)
    assert stat.S_IMODE(planted.stat().st_mode) == 0o644  # untouched


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_file_owned_by_another_user_is_refused(tmp_path):
    path = tmp_path / "token"
    path.write_text("a-token-they-can-read-0123456789\n")
    os.chown(path, 65534, 65534)
    with pytest.raises(TokenFileError, match="another user"):
        load_or_create_token(path)


def test_a_folder_writable_by_others_is_refused_with_advice(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o777)
    with pytest.raises(TokenFileError, match="chmod go-w"):
        load_or_create_token(folder / "token")
    assert not (folder / "token").exists()


def test_a_fifo_at_the_token_path_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "token"
    os.mkfifo(fifo)
    with pytest.raises(TokenFileError, match="not a regular file"):
        load_or_create_token(fifo)


def test_concurrent_starters_all_get_the_one_token(tmp_path):
    """Many starters at once, in threads and in processes: none sees a half-written file. The old
    O_EXCL-then-write left the file empty for a moment, and some starters failed."""
    failures, tokens = [], []
    for trial in range(60):
        path = tmp_path / f"t{trial}" / "token"
        barrier = threading.Barrier(6)
        results = []

        def start(barrier=barrier, path=path, results=results):  # this trial's, bound now
            barrier.wait()
            try:
                results.append(load_or_create_token(path))
            except TokenFileError as exc:
                failures.append(str(exc))

        threads = [threading.Thread(target=start) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        tokens.append(set(results))
    assert not failures, failures[:3]
    assert all(len(t) == 1 for t in tokens)
    # Processes too (separate interpreters, as four servers started by hand would be).
    path = tmp_path / "procs" / "token"
    script = ("import sys; from pathlib import Path; from georeasoner_plugin.backend.auth import load_or_create_token;"
              " print(load_or_create_token(Path(sys.argv[1])))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert len({out.strip() for out, _ in outputs}) == 1
    assert not list(path.parent.glob(".token.*"))  # no temporary file left behind
