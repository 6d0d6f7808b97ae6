"""A model folder is trusted only as far as its manifest vouches for it: `lite translate --model DIR` on
tampered copies of the smoke run's exported folders exits 2 with one line naming the file and what was
expected. Every case copies a folder of the session's `exported` run into tmp_path and changes the copy."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import lite

from export.manifest import FileEntry, Manifest, read_manifest, write_manifest
from export.packing import pack_file
from lite.files import sha256_file
from lite.records import from_dict


def _copy(exported: Path, name: str, dest: Path) -> Path:
    return Path(shutil.copytree(exported / "export" / name, dest))


def _edit_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    change(manifest)
    path.write_text(json.dumps(manifest), encoding="utf-8")


def _rewrite_manifest(folder: Path) -> Manifest:
    """The manifest again over the folder's files as they are now (what an exporter would write)."""
    record = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return write_manifest(folder, from_dict(Manifest, record, "manifest"))


def _translate(folder: Path) -> tuple[int, list[str], str]:
    done = lite("translate", "--model", str(folder), "--beam", "1", "Click OK.")
    return done.returncode, done.stderr.decode().splitlines(), done.stdout.decode()


def _refused(folder: Path, message: str) -> None:
    code, err, out = _translate(folder)
    assert (code, err, out) == (2, [f"lite translate: error: {message}"], "")


def _checksum_message(file: Path, listed: FileEntry) -> str:
    size = file.stat().st_size
    found = f"{size} bytes" + (f", sha256 {sha256_file(file)[:16]}..." if size == listed.bytes else "")
    return (
        f"{file}: checksum mismatch with manifest.json (expected {listed.bytes} bytes, "
        f"sha256 {listed.sha256[:16]}...; found {found}): corrupt or modified file"
    )


def test_untouched_copy_translates(exported, tmp_path):
    code, err, out = _translate(_copy(exported, "tflite-fp32", tmp_path / "m"))
    assert code == 0 and out.strip(), err


def test_edited_graph_bytes(exported, tmp_path):
    folder = _copy(exported, "tflite-fp32", tmp_path / "m")
    graph = folder / "model.tflite"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of a weight: the interpreter would load it without complaint
    graph.write_bytes(bytes(data))
    _refused(folder, _checksum_message(graph, read_manifest(folder, verify=False).files["model.tflite"]))


def test_edited_packed_graph(exported, tmp_path):
    folder = _copy(exported, "onnx-fp32", tmp_path / "m")
    for name in ("encoder.onnx", "decoder.onnx"):
        pack_file(folder / name)
    _edit_manifest(folder, lambda m: m.update(graphs={k: v + ".xz" for k, v in m["graphs"].items()}))
    manifest = _rewrite_manifest(folder)
    assert _translate(folder)[0] == 0  # the packed copy itself is fine
    graph = folder / "decoder.onnx.xz"
    graph.write_bytes(graph.read_bytes()[:-100])  # truncated
    _refused(folder, _checksum_message(graph, manifest.files["decoder.onnx.xz"]))


def test_swapped_tokenizer(exported, small_tokenizer, tmp_path):
    folder = _copy(exported, "tflite-fp32", tmp_path / "m")
    shutil.copyfile(small_tokenizer, folder / "spm.model")  # another valid sentencepiece model
    listed = read_manifest(exported / "export" / "tflite-fp32").files["spm.model"]
    _refused(folder, _checksum_message(folder / "spm.model", listed))


def test_manifest_with_empty_files(exported, tmp_path):
    folder = _copy(exported, "tflite-fp32", tmp_path / "m")
    _edit_manifest(folder, lambda m: m.update(files={}))
    _refused(
        folder,
        f'{folder / "manifest.json"}: "files" lists none of the files the runtime loads; '
        "expected sha256 and bytes of model.tflite, spm.model",
    )


def test_graph_path_escaping_with_dotdot(exported, tmp_path):
    _copy(exported, "tflite-fp32", tmp_path / "other")  # a valid graph where the path points
    folder = _copy(exported, "tflite-fp32", tmp_path / "m")
    _edit_manifest(folder, lambda m: m["graphs"].update(tflite="../other/model.tflite"))
    _refused(
        folder,
        f"{folder / 'manifest.json'}: graphs.tflite = '../other/model.tflite' leaves the model "
        f"folder; expected a file name inside {folder}",
    )


def test_absolute_graph_path(exported, tmp_path):
    elsewhere = _copy(exported, "tflite-fp32", tmp_path / "other") / "model.tflite"
    folder = _copy(exported, "tflite-fp32", tmp_path / "m")
    _edit_manifest(folder, lambda m: m["graphs"].update(tflite=str(elsewhere)))
    _refused(
        folder,
        f"{folder / 'manifest.json'}: graphs.tflite = '{elsewhere}' is an absolute path; "
        f"expected a file name inside {folder}",
    )


def test_tokenizer_and_file_names_are_held_to_the_same_rules(exported, tmp_path):
    folder = _copy(exported, "tflite-fp32", tmp_path / "m")
    manifest = folder / "manifest.json"
    _edit_manifest(folder, lambda m: m.update(tokenizer="../spm.model"))
    _refused(
        folder, f"{manifest}: tokenizer = '../spm.model' leaves the model folder; expected a file name inside {folder}"
    )
    shutil.copyfile(exported / "export" / "tflite-fp32" / "manifest.json", manifest)
    _edit_manifest(folder, lambda m: m["files"].update({"/etc/hostname": {"sha256": "0" * 64, "bytes": 1}}))
    _refused(
        folder, f"{manifest}: files key = '/etc/hostname' is an absolute path; expected a file name inside {folder}"
    )


def test_symlink_out_of_the_folder(exported, tmp_path):
    elsewhere = _copy(exported, "tflite-fp32", tmp_path / "other") / "model.tflite"  # same bytes, same checksum
    folder = _copy(exported, "tflite-fp32", tmp_path / "m")
    (folder / "model.tflite").unlink()
    os.symlink(elsewhere, folder / "model.tflite")
    _refused(
        folder,
        f"{folder / 'manifest.json'}: files key = 'model.tflite' resolves to {elsewhere.resolve()}, "
        f"outside the model folder (a symlink?); expected a file name inside {folder}",
    )
    # a symlink that stays inside the folder is just a file of the folder
    shutil.move(elsewhere, folder / "real.tflite")
    (folder / "model.tflite").unlink()
    os.symlink("real.tflite", folder / "model.tflite")
    assert _translate(folder)[0] == 0


def test_onnx_external_weights_are_listed_and_verified(exported, tmp_path):
    onnx = pytest.importorskip("onnx")
    folder = _copy(exported, "onnx-fp32", tmp_path / "m")
    graph = onnx.load(str(folder / "encoder.onnx"))
    onnx.save(
        graph,
        str(folder / "encoder.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="encoder.onnx.data",
        size_threshold=1024,
    )
    manifest = _rewrite_manifest(folder)
    assert "encoder.onnx.data" in manifest.files and _translate(folder)[0] == 0
    data = folder / "encoder.onnx.data"
    weights = bytearray(data.read_bytes())
    weights[100] ^= 0x01
    data.write_bytes(bytes(weights))
    _refused(folder, _checksum_message(data, manifest.files["encoder.onnx.data"]))
    _edit_manifest(folder, lambda m: m["files"].pop("encoder.onnx.data"))
    _refused(
        folder,
        f"{data}: loaded by the runtime (external weights of encoder.onnx) but not listed in "
        'manifest.json; expected its sha256 and bytes under "files"',
    )


@pytest.mark.parametrize(
    "name, says",
    [
        ("../x", "leaves the model folder"),
        ("a/../../x", "leaves the model folder"),
        ("..\\x", "leaves the model folder"),
        ("/etc/passwd", "is an absolute path"),
        ("C:\\x", "is an absolute path"),
        ("\\\\server\\x", "is an absolute path"),
        ("", "is ''"),
        ("a\0b", "is not a usable path"),
        (".", "names the folder itself"),
    ],
)
def test_names_that_leave_the_folder(tmp_path, name, says):
    from export.manifest import member_path
    from lite.errors import ModelFolderError

    with pytest.raises(ModelFolderError, match=f"^{tmp_path / 'manifest.json'}: graphs.tflite") as err:
        member_path(tmp_path, name, "graphs.tflite")
    assert says in str(err.value) and "\n" not in str(err.value)
    assert member_path(tmp_path, "sub/model.tflite", "graphs.tflite") == tmp_path / "sub" / "model.tflite"


def test_external_weights_are_found_in_nested_graphs():
    """onnx_external_data reads the locations the runtime has no onnx package to read, subgraphs included."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from export.manifest import onnx_external_data

    def external(name: str, location: str) -> TensorProto:
        t = helper.make_tensor(name, TensorProto.FLOAT, [1], [0.0])
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=location)
        t.external_data.add(key="offset", value="0")
        return t

    branch = helper.make_graph(
        [helper.make_node("Identity", ["w_inner"], ["y"])],
        "branch",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [external("w_inner", "inner.data")],
    )
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [external("w_outer", "outer.data")],
    )
    data = helper.make_model(graph).SerializeToString()
    assert sorted(onnx_external_data(data)) == ["inner.data", "inner.data", "outer.data"]
    assert onnx_external_data(helper.make_model(helper.make_graph([], "g", [], [])).SerializeToString()) == []
    with pytest.raises(ValueError):
        onnx_external_data(data[:-3])


def test_a_manifest_written_before_loads_unchanged(tmp_path):
    """A schema-1 manifest as `lite export` wrote it before the Manifest dataclass (the smoke run's
    onnx-fp32): every key is declared, and writing it again gives the same text."""
    raw = (Path(__file__).parent / "data" / "manifest-onnx-fp32-schema1.json").read_text(encoding="utf-8")
    (tmp_path / "manifest.json").write_text(raw, encoding="utf-8")
    manifest = read_manifest(tmp_path, verify=False)  # the graphs themselves are not kept
    assert manifest.graph_macs.graph == manifest.graph_macs.analytic and manifest.ids.eos == 2
    assert json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n" == raw


def test_manifest_reads_and_writes_back_unchanged(exported, tmp_path):
    """read_manifest -> write_manifest gives the same bytes: every key a manifest carries is declared."""
    for name in ("tflite-fp32", "onnx-int8"):
        folder = _copy(exported, name, tmp_path / name)
        before = (folder / "manifest.json").read_bytes()
        manifest = read_manifest(folder)
        assert manifest.to_json() == json.loads(before)
        assert write_manifest(folder, manifest) == manifest
        assert (folder / "manifest.json").read_bytes() == before


def test_manifest_fields_are_checked_strictly(exported, tmp_path):
    folder = _copy(exported, "tflite-fp32", tmp_path / "m")
    manifest = folder / "manifest.json"
    _edit_manifest(folder, lambda m: m.update(colour="red"))  # a typo must not pass for an unset field
    code, err, out = _translate(folder)
    assert (code, out, len(err)) == (2, "", 1)
    assert err[0].startswith(f"lite translate: error: {manifest}: unknown key(s) colour (expected one of: batches, ")
    shutil.copyfile(exported / "export" / "tflite-fp32" / "manifest.json", manifest)
    _edit_manifest(folder, lambda m: m["ids"].update(eos="2"))
    _refused(folder, f"{manifest}.ids.eos: expected int, got '2'")
    shutil.copyfile(exported / "export" / "tflite-fp32" / "manifest.json", manifest)
    _edit_manifest(folder, lambda m: m.pop("batches"))
    _refused(folder, f"{manifest}: missing field(s) batches (needed by tflite graphs)")
