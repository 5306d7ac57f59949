"""The ``tcompress quantize`` options of issue 4: --rotate [--online-hadamard] and --act-bits."""

from __future__ import annotations

import pytest
import tcompress
from tcompress import cli


def test_quantize_with_rotation_and_activation_bits_saves_a_loadable_folder(stories260k_dir, tmp_path, capsys):
    out_dir = tmp_path / "w8a8-rot"
    args = ["quantize", str(stories260k_dir), "--out", str(out_dir), "--bits", "8", "--group-size", "none"]
    assert cli.main([*args, "--act-bits", "8", "--rotate", "--online-hadamard", "--rotate-seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "rotated" in out and "quantized 35 projections" in out
    model = tcompress.load_compressed(out_dir)
    kinds = [c["kind"] for c in model.tcompress_config]
    assert kinds == ["rotate", "quantize"]
    assert model.tcompress_config[0]["seed"] == 3 and model.tcompress_config[0]["online_hadamard"] is True
    assert model.tcompress_config[1]["act_bits"] == 8
    down = model.model.layers[0].mlp.down_proj
    assert down.online_hadamard and down.act_bits == 8
    assert not model.model.layers[0].self_attn.q_proj.online_hadamard


def test_online_hadamard_without_rotate_is_an_error(stories260k_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["quantize", str(stories260k_dir), "--out", str(tmp_path / "x"), "--online-hadamard"])
    assert exc.value.code == 2 and "--rotate" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_act_bits_outside_8_and_4_is_refused(stories260k_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["quantize", str(stories260k_dir), "--out", str(tmp_path / "x"), "--act-bits", "6"])
    assert exc.value.code == 2 and "--act-bits" in capsys.readouterr().err
