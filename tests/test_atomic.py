"""procvision.atomic: the one atomic-write helper."""

import json
import os

import pytest

from procvision.atomic import (
    OutputPathError,
    check_output_file,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_writes_replace_whole_files_and_leave_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json_atomic(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    write_csv_atomic(tmp_path / "t.csv", ["x", "y"], [[1, 2]])
    assert (tmp_path / "t.csv").read_text() == "x,y\n1,2\n"
    assert sorted(os.listdir(target.parent)) == ["out.json"]


def test_a_failing_writer_keeps_the_old_file(tmp_path):
    from procvision.atomic import atomic_write

    target = tmp_path / "keep.txt"
    target.write_text("old")

    def boom(f):
        f.write("partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom, "w")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["keep.txt"]


@pytest.mark.parametrize("kind", ["dir", "dot", "slash", "inside_file", "device"])
def test_paths_that_are_not_files_are_refused(tmp_path, kind):
    (tmp_path / "afile").write_text("x")
    path = {
        "dir": str(tmp_path),
        "dot": ".",
        "slash": str(tmp_path / "new") + "/",
        "inside_file": str(tmp_path / "afile" / "x.png"),
        "device": "/dev/null",
    }[kind]
    with pytest.raises(OutputPathError):
        check_output_file(path)
    assert (tmp_path / "afile").read_text() == "x"
