"""The test build cache (testkit.build_cache): a warm run reuses an entry, any change of what
determines it gives a new key, and a half-written, crashed or edited entry is never trusted."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from testkit.build_cache import CONTENTS, cache_key, cached_dir, cached_file


class Builder:
    """Writes a two-file entry whose content is `text`; counts its builds."""

    def __init__(self, text: str = "v1") -> None:
        self.text = text
        self.builds = 0

    def __call__(self, directory: Path) -> None:
        self.builds += 1
        (directory / "sub").mkdir(parents=True)
        (directory / "a.txt").write_text(self.text)
        (directory / "sub" / "b.bin").write_bytes(b"\x00" * 1000)


def _entry(root: Path) -> Path:
    (entry,) = [p for p in root.iterdir() if not p.name.startswith(".tmp-")]
    return entry


def test_the_key_changes_with_each_input_and_only_then(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "builder.py").write_text("x = 1\n")
    (src / "notes.txt").write_text("not python")
    one_file = tmp_path / "tool.py"
    one_file.write_text("y = 2\n")
    sources = [src, one_file]

    key = cache_key({"seed": 0}, sources, ["numpy"])
    assert cache_key({"seed": 0}, sources, ["numpy"]) == key
    assert cache_key({"seed": 1}, sources, ["numpy"]) != key
    assert cache_key({"seed": 0}, sources, ["numpy", "onnx"]) != key
    (src / "notes.txt").write_text("a directory counts by its *.py files")
    assert cache_key({"seed": 0}, sources, ["numpy"]) == key
    (src / "builder.py").write_text("x = 2\n")
    edited_in_dir = cache_key({"seed": 0}, sources, ["numpy"])
    assert edited_in_dir != key
    (src / "sub").mkdir()
    (src / "sub" / "new.py").write_text("")
    assert cache_key({"seed": 0}, sources, ["numpy"]) != edited_in_dir
    before = cache_key({"seed": 0}, sources, ["numpy"])
    one_file.write_text("y = 3\n")
    assert cache_key({"seed": 0}, sources, ["numpy"]) != before


def test_a_warm_call_copies_the_entry_without_building(tmp_path: Path) -> None:
    root, build = tmp_path / "cache", Builder()
    first = cached_dir("thing", "k1", build, tmp_path / "one", root=root)
    second = cached_dir("thing", "k1", build, tmp_path / "two", root=root)
    assert build.builds == 1
    for copy in (first, second):
        assert (copy / "a.txt").read_text() == "v1" and (copy / "sub" / "b.bin").stat().st_size == 1000
        assert not (copy / CONTENTS).exists()
    (first / "a.txt").write_text("a test edited its copy")  # ...which must not reach the cache
    assert (cached_dir("thing", "k1", build, tmp_path / "three", root=root) / "a.txt").read_text() == "v1"
    assert build.builds == 1


def test_a_half_written_entry_is_rebuilt_not_used(tmp_path: Path) -> None:
    root, build = tmp_path / "cache", Builder()
    half = root / "thing-k1"
    half.mkdir(parents=True)
    (half / "a.txt").write_text("v1")  # a crash before the rest and the contents record
    copy = cached_dir("thing", "k1", build, tmp_path / "copy", root=root)
    assert build.builds == 1
    assert (copy / "sub" / "b.bin").exists()


@pytest.mark.parametrize("damage", ["truncated", "deleted", "extra file", "bad record"])
def test_an_entry_changed_after_it_was_built_is_rebuilt(tmp_path: Path, damage: str) -> None:
    root, build = tmp_path / "cache", Builder()
    cached_dir("thing", "k1", build, tmp_path / "first", root=root)
    entry = _entry(root)
    if damage == "truncated":
        (entry / "sub" / "b.bin").write_bytes(b"\x00" * 10)
    elif damage == "deleted":
        (entry / "sub" / "b.bin").unlink()
    elif damage == "extra file":
        (entry / "stray.txt").write_text("left by someone")
    else:
        (entry / CONTENTS).write_text("{not json")
    copy = cached_dir("thing", "k1", build, tmp_path / "second", root=root)
    assert build.builds == 2
    assert (copy / "sub" / "b.bin").stat().st_size == 1000 and not (copy / "stray.txt").exists()


def test_a_build_that_crashes_leaves_nothing_a_later_run_trusts(tmp_path: Path) -> None:
    root = tmp_path / "cache"

    def crash(directory: Path) -> None:
        Builder()(directory)
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError, match="killed mid-build"):
        cached_dir("thing", "k1", crash, tmp_path / "copy", root=root)
    assert list(root.iterdir()) == []  # not even its temporary directory
    build = Builder()
    assert (cached_dir("thing", "k1", build, tmp_path / "copy", root=root) / "a.txt").read_text() == "v1"
    assert build.builds == 1


def test_a_copy_its_check_rejects_is_rebuilt(tmp_path: Path) -> None:
    root, build = tmp_path / "cache", Builder()
    cached_dir("thing", "k1", build, tmp_path / "first", root=root)
    entry = _entry(root)
    (entry / "a.txt").write_text("v0")  # re-sealed below: intact as recorded, yet wrong
    record = json.loads((entry / CONTENTS).read_text())
    record["a.txt"] = hashlib.sha256(b"v0").hexdigest()
    (entry / CONTENTS).write_text(json.dumps(record))

    def check(copy: Path) -> None:
        if (copy / "a.txt").read_text() != "v1":
            raise ValueError("not the artifact we built")

    copy = cached_dir("thing", "k1", build, tmp_path / "second", check=check, root=root)
    assert (copy / "a.txt").read_text() == "v1" and build.builds == 2


def test_concurrent_builds_of_one_entry_both_end_with_a_complete_copy(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    both_building = threading.Barrier(2, timeout=30)
    builds: list[int] = []

    def slow_build(directory: Path) -> None:
        Builder()(directory)
        builds.append(1)
        both_building.wait()  # neither has renamed its entry into place yet

    copies = [tmp_path / "a", tmp_path / "b"]
    threads = [
        threading.Thread(target=cached_dir, args=("thing", "k1", slow_build, c), kwargs={"root": root})
        for c in copies
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(builds) == 2
    for c in copies:
        assert (c / "a.txt").read_text() == "v1" and (c / "sub" / "b.bin").stat().st_size == 1000
    assert [p.name for p in root.iterdir()] == ["thing-k1"]  # one entry, no temporary left


def test_cached_file_checks_the_bytes_it_returns(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    built: list[int] = []

    def build(directory: Path) -> None:
        built.append(1)
        directory.mkdir(parents=True)
        (directory / "schemas.json").write_text('{"ok": true}')

    assert cached_file("schema", "k1", "schemas.json", build, root=root) == b'{"ok": true}'
    assert cached_file("schema", "k1", "schemas.json", build, root=root) == b'{"ok": true}'
    assert len(built) == 1
    (_entry(root) / "schemas.json").write_text('{"ok": tr')  # truncated by a crash or an editor
    assert cached_file("schema", "k1", "schemas.json", build, root=root) == b'{"ok": true}'
    assert len(built) == 2
