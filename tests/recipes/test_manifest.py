"""tcompress.json against its schema: every edit a user (or a disk) can make is a ValueError naming the field, raised
before anything is built or allocated."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
from tcompress.recipes import QuantizeConfig, compress_, load_compressed, save_compressed


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from model_factories import tiny_mistral

    model = compress_(tiny_mistral(), QuantizeConfig(bits=4, group_size=4))
    return save_compressed(model, tmp_path_factory.mktemp("manifest") / "m")


@pytest.fixture
def folder(saved, tmp_path):
    import shutil

    return shutil.copytree(saved, tmp_path / "m")


def _edit(folder, change):
    path = folder / "tcompress.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _first_module(manifest):
    return next(iter(manifest["modules"].values()))


EDITS = {
    "missing bytes": (lambda m: m["files"]["model.safetensors"].pop("bytes"), r"files\['model.safetensors'\]\.bytes"),
    "missing sha256": (lambda m: m["files"]["model.safetensors"].pop("sha256"), r"\.sha256 must be 64"),
    "bytes a string": (lambda m: m["files"]["model.safetensors"].update(bytes="12"), r"\.bytes must be an integer"),
    "format_version a string": (lambda m: m.update(format_version="1"), "format_version must be an integer"),
    "format_version null": (lambda m: m.update(format_version=None), "format_version must be an integer"),
    "files entry a list": (lambda m: m["files"].update({"model.safetensors": [1, 2]}), "must be an object"),
    "modules a list": (lambda m: m.update(modules=[1]), "modules must be an object"),
    "dtype nonexistent": (lambda m: m.update(dtype="nonexistent"), "dtype must be one of float32"),
    "dtype a torch function": (lambda m: m.update(dtype="load"), "dtype must be one of float32"),
    "bias_dtype nonexistent": (
        lambda m: _first_module(m).update(bias=True, bias_dtype="nonexistent"),
        r"\.bias_dtype must be one of",
    ),
    "negative in_features": (lambda m: _first_module(m).update(in_features=-64), r"\.in_features must be an integer"),
    "huge in_features": (lambda m: _first_module(m).update(in_features=2**40), r"\.in_features must be an integer"),
    "bits a string": (lambda m: _first_module(m)["spec"].update(bits="4"), r"\.spec must be a valid quantization"),
    "symmetric a string": (lambda m: _first_module(m)["spec"].update(symmetric="yes"), "symmetric must be True"),
    "unknown module type": (lambda m: _first_module(m).update(type="Evil"), r"\.type must be QuantLinear"),
    "unknown recipe kind": (lambda m: m.update(recipe=[{"kind": "evil"}]), r"recipe\[0\] must be a recipe config"),
    "recipe a string": (lambda m: m.update(recipe="abc"), "recipe must be a list of recipe configs"),
    "recipe field of the wrong type": (
        lambda m: m["recipe"][0].update(symmetric="yes"),
        r"recipe\[0\] must be a recipe config tcompress knows \(QuantizeConfig: symmetric must be True or False",
    ),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_manifest_is_a_clear_error(folder, edit):
    change, match = EDITS[edit]
    _edit(folder, change)
    with pytest.raises(ValueError, match=match):
        load_compressed(folder)


def test_a_binary_manifest_is_a_clear_error(folder):
    (folder / "tcompress.json").write_bytes(b"\xcc\xff\x00binary")
    with pytest.raises(ValueError, match="is not valid UTF-8 JSON"):
        load_compressed(folder)


def test_a_size_edited_to_match_nothing_is_refused_before_allocating(folder):
    # in_features within the schema's range but not what the file holds: refused from the header, not allocated.
    _edit(folder, lambda m: _first_module(m).update(in_features=1 << 24))
    with pytest.raises(ValueError, match=r"implies .*qweight of shape \(64, 8388608\).* holds \(64, 32\)"):
        load_compressed(folder)


def test_an_edited_safetensors_header_with_its_checksum_updated_is_a_clear_error(folder):
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    (header_size,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + header_size].decode()
    damaged = header.replace('"dtype":"U8"', '"dtype":"ZZ"', 1)
    assert damaged != header
    data[8 : 8 + header_size] = damaged.encode()
    weights.write_bytes(bytes(data))

    def resign(m):
        m["files"]["model.safetensors"].update(sha256=hashlib.sha256(bytes(data)).hexdigest(), bytes=len(data))

    _edit(folder, resign)
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        load_compressed(folder)
