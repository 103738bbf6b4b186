"""Files glassgpt writes get the user's umask, like any other program's: the weights too (safetensors
on its own writes 0600)."""

import os
import stat

import pytest

from glassgpt.atomic import user_file_mode

from conftest import make_tiny_run


@pytest.fixture
def umask():
    before = os.umask(0o022)
    os.umask(before)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(before)


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_every_run_file_gets_the_users_umask(tmp_path, umask, mask):
    umask(mask)
    assert user_file_mode() == 0o666 & ~mask
    run = make_tiny_run(tmp_path / "run")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    assert "model.safetensors" in modes
    assert modes == {name: 0o666 & ~mask for name in modes}
