"""The compression steps work on the live model and leave it computing what it did before, with real (not cached)
measurements of every variant."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tcompress import evaluate
from tcompress.report.budgets import budget
from tcompress.report.context import ReportContext
from tcompress.report.steps_compression import quantization, spectral, wall


@pytest.mark.parametrize("family", ["tiny_gpt2", "tiny_mistral"])
def test_compression_steps_restore_the_model(family, request):
    model = request.getfixturevalue(family)
    ids = torch.randint(0, model.config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(0))
    quick = dataclasses.replace(budget("quick"), quant_configs=("W8", "W4"), spectral_methods=("plain",))
    ctx = ReportContext(model, None, family, quick, None, ids, None, ids, log=lambda line: None)
    reference = evaluate.perplexity(model, ids, progress=False).ppl
    params = {k: v.clone() for k, v in model.state_dict().items()}
    modules = dict(model.named_modules())
    results = {step.__name__: step(ctx) for step in (quantization, spectral, wall)}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in params.items())
    assert all(modules[n] is m for n, m in model.named_modules()) and len(modules) == len(dict(model.named_modules()))
    assert evaluate.perplexity(model, ids, progress=False).ppl == reference == ctx.baseline().ppl

    rows = {(r["setting"], r["rotated"]): r["ppl"] for r in results["quantization"]["rows"]}
    assert rows[("fp32", True)] == pytest.approx(reference, rel=1e-4)  # rotation is exact
    for key in (("W8", False), ("W4", False), ("W4", True)):
        assert rows[key] is not None and rows[key] != reference
    assert all(p["perplexity"] != reference for p in results["spectral"]["points"])
    for variant in results["wall"]["runs"][0]["variants"]:
        assert variant["perplexity"] != reference
