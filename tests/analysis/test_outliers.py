"""analysis.outliers: max/RMS and kurtosis against direct formulas, the effect of a rotation, JSON output."""

from __future__ import annotations

import json

import torch
from model_factories import tiny_mistral
from tcompress.analysis import outliers
from tcompress.recipes import QuantizeConfig, RotateConfig, compress_


def test_tensor_stats_match_the_formulas():
    x = torch.randn(50, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 + 1
    s = outliers.tensor_stats("x", x)
    assert s.numel == 2000 and s.rows == 50
    assert abs(s.max_over_rms - float(x.abs().max() / x.pow(2).mean().sqrt())) < 1e-9
    c = x - x.mean()
    assert abs(s.kurtosis - float(c.pow(4).mean() / c.pow(2).mean() ** 2)) < 1e-6
    row = (x.abs().amax(1) / x.pow(2).mean(1).sqrt()).mean()
    assert abs(s.row_max_over_rms - float(row)) < 1e-9


def test_a_hadamard_rotation_spreads_an_outlier():
    from tcompress.hadamard import random_hadamard

    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    x[:, 3] *= 50  # one outlier feature, as in trained LLMs
    before, after = outliers.tensor_stats("x", x), outliers.tensor_stats("xq", x @ random_hadamard(64, 0))
    assert after.row_max_over_rms < 0.5 * before.row_max_over_rms
    assert after.kurtosis < before.kurtosis


def test_model_statistics_cover_every_projection_and_serialize():
    model = tiny_mistral()
    windows = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    weights = outliers.weight_stats(model)
    acts = outliers.activation_stats(model, windows)
    errors = outliers.weight_quantization_error(model, QuantizeConfig(bits=4, group_size=None))
    assert len(weights) == len(acts) == len(errors) == 14
    assert all(a.rows == 32 for a in acts) and all(0 < e.relative_error < 1 for e in errors)
    json.dumps([w.to_dict() for w in weights] + [outliers.summarize(errors).to_dict()])
    # After rotation with the online transform the statistics still cover every projection, and the down inputs
    # seen by a quantizer are the transformed ones.
    rotated = compress_(tiny_mistral(), RotateConfig(online_hadamard=True))
    assert len(outliers.activation_stats(rotated, windows)) == 14
    quantized = compress_(tiny_mistral(), QuantizeConfig(bits=8, group_size=None))
    assert len(outliers.weight_stats(quantized)) == 14  # dequantized weights of QuantLinears


def test_summarize_means_and_maxima():
    items = [outliers.LayerQuantError("a", 4, None, 0.1), outliers.LayerQuantError("b", 4, None, 0.3)]
    s = outliers.summarize(items)
    assert s.count == 2 and abs(s.mean["relative_error"] - 0.2) < 1e-12 and s.max["relative_error"] == 0.3
    assert outliers.summarize([]).count == 0
