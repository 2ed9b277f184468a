"""imas-data splits replaces only its own earlier lists: the manifest's mark and digests tell them apart."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from imas.data import split_lists
from imas.data.commands import main as imas_data
from tests.conftest import make_cityscapes
from tests.test_data_splits import fake_voc

USERS_LIST = "2007_000032\n2007_000039\n"  # a list dropped in from another codebase


def pascal(tmp_path: Path, out: Path, *extra: str) -> int:
    voc, sbd = tmp_path / "VOC2012", tmp_path / "sbd"
    if not voc.exists():
        fake_voc(tmp_path)
    args = ["--voc", str(voc), "--sbd", str(sbd), "--out", str(out), "--classic", "5", "--blended", "8"]
    return imas_data(["splits", "pascal", *args, *extra])


def files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def one_sentence(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1 and captured.out == ""
    return captured.err.removeprefix("error: ").rstrip("\n")


def no_draw(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("the pools were read before the refusal")

    monkeypatch.setattr(split_lists, "make_pascal", fail)
    monkeypatch.setattr(split_lists, "make_cityscapes", fail)


def test_a_users_list_is_refused_and_left_untouched(tmp_path, monkeypatch, capsys):
    out = tmp_path / "splits"
    out.mkdir()
    (out / "val.txt").write_text(USERS_LIST)
    no_draw(monkeypatch)
    assert pascal(tmp_path, out) == 2
    assert one_sentence(capsys) == (
        f"--out {out} holds val.txt, which imas-data splits did not write; "
        "move it, choose another --out, or add --force to replace it"
    )
    assert files(out) == {"val.txt": USERS_LIST.encode()}


def test_a_users_cityscapes_list_is_refused_and_several_are_counted(tmp_path, monkeypatch, capsys):
    out = tmp_path / "splits"
    for name in ("3/labeled.txt", "3/unlabeled.txt", "val.txt"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(USERS_LIST)
    no_draw(monkeypatch)
    args = ["splits", "cityscapes", "--root", str(tmp_path / "nowhere"), "--out", str(out), "--sizes", "3"]
    assert imas_data(args) == 2
    assert one_sentence(capsys) == (
        f"--out {out} holds val.txt (and 2 more lists), which imas-data splits did not write; "
        "move them, choose another --out, or add --force to replace them"
    )
    assert set(files(out).values()) == {USERS_LIST.encode()}


def test_a_users_manifest_is_refused_and_force_replaces_it(tmp_path, capsys):
    out = tmp_path / "splits"
    out.mkdir()
    (out / "manifest.json").write_text('{"notes": "mine"}\n')
    assert pascal(tmp_path, out) == 2
    assert one_sentence(capsys) == (
        f"--out {out} holds manifest.json, which imas-data splits did not write; "
        "move it, choose another --out, or add --force to replace it"
    )
    assert files(out) == {"manifest.json": b'{"notes": "mine"}\n'}
    assert pascal(tmp_path, out, "--force") == 0
    assert json.loads((out / "manifest.json").read_text())["written_by"] == "imas-data splits"


def test_force_replaces_a_users_list(tmp_path, capsys):
    out = tmp_path / "splits"
    out.mkdir()
    (out / "val.txt").write_text(USERS_LIST)
    assert pascal(tmp_path, out, "--force") == 0
    assert capsys.readouterr().err == ""
    val = (out / "val.txt").read_bytes()
    assert val.decode().splitlines() == [f"2008_{i:06d}" for i in range(10)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["written_by"] == "imas-data splits"
    assert manifest["lists"]["val.txt"]["sha256"] == hashlib.sha256(val).hexdigest()


def test_a_rerun_replaces_its_own_lists(tmp_path, capsys):
    out = tmp_path / "splits"
    assert pascal(tmp_path, out) == 0
    first = files(out)
    manifest = json.loads(first["manifest.json"])
    assert manifest["written_by"] == "imas-data splits" and "earlier_lists" not in manifest
    assert set(manifest["lists"]) | {"manifest.json"} == set(first)
    assert pascal(tmp_path, out) == 0
    assert capsys.readouterr().err == "" and files(out) == first  # silent, byte-identical

    # Another seed rewrites its own lists; other sizes leave the earlier ones recorded, so a later run
    # with those sizes replaces them too.
    assert pascal(tmp_path, out, "--seed", "1") == 0
    assert pascal(tmp_path, out, "--classic", "6") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["earlier_lists"]) == {"classic/5/labeled.txt", "classic/5/unlabeled.txt"}
    assert pascal(tmp_path, out) == 0
    assert set(json.loads((out / "manifest.json").read_text())["earlier_lists"]) == {
        "classic/6/labeled.txt",
        "classic/6/unlabeled.txt",
    }
    assert capsys.readouterr().err == ""

    root = tmp_path / "cityscapes"
    make_cityscapes(root, {"train": [f"aachen_000000_{i:06d}" for i in range(6)], "val": ["lindau_000000_1"]})
    city = ["splits", "cityscapes", "--root", str(root), "--out", str(tmp_path / "city"), "--sizes", "3"]
    assert imas_data(city) == 0 and imas_data(city) == 0


def test_an_edited_own_list_is_refused(tmp_path, monkeypatch, capsys):
    out = tmp_path / "splits"
    assert pascal(tmp_path, out) == 0
    edited = out / "classic/5/labeled.txt"
    edited.write_text(edited.read_text() + "2007_000999\n")
    before = files(out)
    capsys.readouterr()
    no_draw(monkeypatch)
    assert pascal(tmp_path, out) == 2
    assert one_sentence(capsys) == (
        f"--out {out} holds classic/5/labeled.txt, which was edited since imas-data splits wrote it; "
        "move it, choose another --out, or add --force to replace it"
    )
    assert files(out) == before


@pytest.mark.parametrize("blocker", ["classic", "val.txt"])
def test_a_file_for_a_folder_or_a_folder_for_a_list_is_refused_even_with_force(tmp_path, capsys, blocker):
    out = tmp_path / "splits"
    (out / "val.txt" if blocker == "val.txt" else out).mkdir(parents=True)
    if blocker == "classic":
        (out / "classic").write_text(USERS_LIST)
    assert pascal(tmp_path, out, "--force") == 2
    what = (
        "a file classic where imas-data splits writes a folder"
        if blocker == "classic"
        else "a folder val.txt"
    )
    assert one_sentence(capsys).startswith(f"--out {out} holds {what}")


def test_a_draw_that_fails_writes_nothing(tmp_path, capsys):
    out = tmp_path / "splits"
    assert pascal(tmp_path, out, "--blended", "1000") == 2
    assert "cannot draw 1000 labeled images" in one_sentence(capsys)
    assert not out.exists() or files(out) == {}
    assert pascal(tmp_path, out) == 0
