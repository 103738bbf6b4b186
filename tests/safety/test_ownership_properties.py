"""The ownership rule as properties (hypothesis): whatever a folder holds and whichever names
glassgpt claims, removing "its" folder takes exactly the plain files, links and empty folders
under claimed names, never what a link points to, never anything else; a temporary name is
glassgpt's only in the exact form it makes, and a live process's is never abandoned."""

import tempfile
from pathlib import Path

from hypothesis import given, settings, strategies as st

from glassgpt.ownership import is_abandoned_temp, remove_owned_folder, temp_name_of, temp_path

from conftest import snapshot

KINDS = ("file", "empty folder", "full folder", "link to a file", "link to a folder", "dangling link")
NAMES = st.text("abx.-_0", min_size=1, max_size=8).filter(lambda n: n not in (".", ".."))


def make(entry: Path, kind: str, outside: Path) -> None:
    if kind == "file":
        entry.write_text(f"the user's {entry.name}\n")
    elif kind == "empty folder":
        entry.mkdir()
    elif kind == "full folder":
        entry.mkdir()
        (entry / "notes.txt").write_text("kept\n")
    elif kind == "link to a file":
        entry.symlink_to(outside / "victim")
    elif kind == "link to a folder":
        entry.symlink_to(outside)
    else:
        entry.symlink_to(outside / "missing")


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(NAMES, st.sampled_from(KINDS), max_size=8), st.data())
def test_removing_an_owned_folder_takes_exactly_what_the_rule_allows(entries, data):
    claimed = data.draw(st.sets(st.sampled_from(sorted(entries) or ["none"])))
    with tempfile.TemporaryDirectory() as tmp:
        folder, outside = Path(tmp) / "folder", Path(tmp) / "outside"
        outside.mkdir()
        (outside / "victim").write_text("the user's file outside\n")
        folder.mkdir()
        for name, kind in entries.items():
            make(folder / name, kind, outside)
        before, outside_before = snapshot(folder), snapshot(outside)

        gone = remove_owned_folder(folder, lambda name: name in claimed)

        removable = {n for n, k in entries.items() if n in claimed and k != "full folder"}
        assert snapshot(outside) == outside_before  # nothing a link points to is touched
        assert gone == (removable == set(entries)) == (not folder.exists())
        if not gone:
            kept = {rel: digest for rel, digest in before.items() if rel.split("/")[0] not in removable}
            assert snapshot(folder) == kept  # everything else exactly as it was


@settings(max_examples=300, deadline=None)
@given(NAMES, st.integers(0, 10**10 - 1), st.text("0123456789abcdef", min_size=8, max_size=8))
def test_a_temporary_name_is_glassgpts_only_in_the_form_it_makes(name, pid, nonce):
    assert temp_name_of(f"{name}.{pid}-{nonce}.tmp") == name
    for other in (f"{name}.tmp", f"{name}.{pid}-{nonce}", f"{name}.{pid}-{nonce}x.tmp", f"{name}.x{pid}-{nonce}.tmp",
                  f"{name}.{pid}-{nonce.upper()}.tmp" if nonce != nonce.upper() else f"{name}..tmp"):
        assert temp_name_of(other) is None, other


@settings(max_examples=50, deadline=None)
@given(NAMES)
def test_a_temporary_file_of_a_live_process_is_never_abandoned(name):
    with tempfile.TemporaryDirectory() as tmp:
        tmp_file = temp_path(Path(tmp) / name)
        assert temp_name_of(tmp_file.name) == name and tmp_file.read_bytes() == b""
        assert not is_abandoned_temp(tmp_file, {name})  # this process is alive: its file is in use
