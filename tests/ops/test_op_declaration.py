"""The op layer's structure: one declaration registers every op, Python checks run once per call on each path, and
prepared-weight modules check only their input per forward, re-preparing exactly when a buffer is replaced."""

from __future__ import annotations

import copy
import importlib
import io
import pathlib
import pickle

import pytest
import tcompress
import torch
from tcompress import ops
from tcompress.nn import LinearBlock, QuantLinear, QuantSpec
from tcompress.ops import _op, _qlinear_checks
from tensors import randn, rel_error

linear_block_module = importlib.import_module("tcompress.ops.linear_block")
qlinear_module = importlib.import_module("tcompress.ops.qlinear")
OPS_DIR = pathlib.Path(tcompress.__file__).parent / "ops"
DECLARED = {
    "qlinear",
    "linear_block",
    "hadamard",
    "hadamard_out",
    "hadamard_",
    "exit_gate_stats",
    "exit_gate_head_stats",
    "quantize_weight",
    "dequantize",
    "pack_int4",
    "unpack_int4",
}


def test_every_op_comes_from_one_declaration():
    declared = {op.declaration.name for op in _op.Op.registered}
    assert declared == DECLARED
    for name in DECLARED:
        assert hasattr(torch.ops.tcompress, name)
    # No op file registers anything by hand, and none imports another op file's private names.
    for path in OPS_DIR.glob("*.py"):
        text = path.read_text()
        if path.name != "_op.py":
            assert "torch.library.custom_op" not in text and ".register_kernel" not in text, path.name
        for line in text.splitlines():
            # "from .qlinear import _x" is refused; shared helper modules (from . import _common, ._op) are not.
            if line.startswith("from .") and not line.startswith(("from ._", "from . import", "from .. import")):
                names = line.split(" import ", 1)[1]
                assert not any(n.strip().startswith("_") for n in names.strip("()").split(",")), (path.name, line)


@pytest.fixture
def count_weight_checks(monkeypatch):
    calls = []
    original = _qlinear_checks.check_weights

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(_qlinear_checks, "check_weights", counting)
    monkeypatch.setattr(qlinear_module, "check_weights", counting)
    return calls


def _quant_linear(bits=4, group_size=32, act_bits=None):
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 24)
    return QuantLinear.from_linear(lin, QuantSpec(bits, group_size, True), act_bits=act_bits)


def test_a_call_checks_once_on_each_path(count_weight_checks):
    q = _quant_linear()
    args = (q.qweight, q.scales, None, 4, 32, q.bias)
    ops.qlinear(randn(3, 64), *args)  # eager: the public label, no dispatcher
    assert count_weight_checks == ["tcompress.ops.qlinear"]
    count_weight_checks.clear()
    ops.qlinear(randn(3, 64).requires_grad_(), *args).sum().backward()  # autograd: the registered kernel checks
    assert count_weight_checks == ["tcompress::qlinear"]
    count_weight_checks.clear()
    ops.qlinear(torch.empty(3, 64, device="meta"), *(t.to("meta") if t is not None else t for t in args[:3]), 4, 32)
    assert count_weight_checks == ["tcompress::qlinear"]  # the fake


def test_prepared_module_checks_weights_once_and_again_when_a_buffer_is_replaced(count_weight_checks):
    q = _quant_linear()
    x = randn(2, 64)
    want = q(x)
    for _ in range(3):
        torch.testing.assert_close(q(x), want, rtol=0, atol=0)
    assert len(count_weight_checks) == 1
    q.to(torch.float32)  # nothing replaced: no new preparation
    q(x)
    assert len(count_weight_checks) == 1
    q.qweight = q.qweight.clone()
    q(x)
    assert len(count_weight_checks) == 2


def test_prepared_module_sees_in_place_changes_and_replaced_buffers():
    q = _quant_linear()
    x = randn(2, 64)
    before = q(x)
    with torch.no_grad():
        q.scales.mul_(2)  # in place: the prepared pointers still address it
    assert rel_error(q(x) - q.bias, 2 * (before - q.bias)) < 1e-6
    q.bias = torch.zeros(24)  # replaced: prepared again, so the bias is gone from the output
    assert rel_error(q(x), 2 * (before - _quant_linear().bias)) < 1e-6


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_do_not_share_prepared_pointers(how):
    q = _quant_linear()
    x = randn(2, 64)
    q(x)  # prepared
    if how == "deepcopy":
        c = copy.deepcopy(q)
    elif how == "pickle":
        c = pickle.loads(pickle.dumps(q))
    else:
        buffer = io.BytesIO()
        torch.save(q, buffer)
        buffer.seek(0)
        c = torch.load(buffer, weights_only=False)
    want = c(x)
    with torch.no_grad():
        q.scales.zero_()  # the original changes; the copy must not see it
    torch.testing.assert_close(c(x), want, rtol=0, atol=0)
    del q


def test_prepared_module_on_meta_dispatches():
    q = _quant_linear(8, None, act_bits=8).to("meta")
    y = q(torch.empty(5, 64, device="meta"))
    assert y.device.type == "meta" and y.shape == (5, 24)


def test_prepared_call_names_what_is_wrong_with_x():
    q = _quant_linear()
    with pytest.raises(ValueError, match="tcompress.ops.qlinear: x has inner size 63 but the weight expects .*64"):
        q(randn(2, 63))
    with pytest.raises(TypeError, match="tcompress.ops.qlinear: x must have dtype float32"):
        q(torch.ones(2, 64, dtype=torch.int64))
    with pytest.raises(ValueError, match="tcompress.ops.qlinear: the weights are on cpu but x is on meta"):
        q(torch.empty(2, 64, device="meta"))
    with pytest.raises(ValueError, match="tcompress.ops.qlinear_a8: act_bits must be 8 or 4"):
        ops.PreparedQLinear(q.qweight, q.scales, None, 4, 32, act_bits=3)


def test_linear_block_prepares_once(monkeypatch):
    calls = []
    original = linear_block_module._check_factors
    monkeypatch.setattr(linear_block_module, "_check_factors", lambda *a: calls.append(a[0]) or original(*a))
    torch.manual_seed(0)
    U, V = torch.randn(48, 8) * 0.1, torch.randn(8, 48) * 0.1
    block = LinearBlock.from_factors(U, V, torch.randn(48), torch.randn(48))
    x = randn(3, 48)
    want = ops.linear_block_reference(x, block.U, block.V, block.b, block.mu)
    for _ in range(3):
        assert rel_error(block(x), want) < 1e-5
    assert len(calls) == 1
    block.b = block.b.clone()
    block(x)
    assert len(calls) == 2
    y = block(randn(3, 48).requires_grad_())  # autograd path: still correct, through the dispatcher
    assert y.requires_grad
