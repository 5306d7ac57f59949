"""``load(..., device_map="auto")``, then analysis and compression on the loaded model. On a CPU-only machine
accelerate places every module on the CPU (no split, no hooks), so this checks the plumbing and the numbers, not a
multi-device split (which needs several GPUs)."""

from __future__ import annotations

import pytest
import torch
from tcompress import data, evaluate, models
from tcompress.analysis.activations import collect_block_statistics
from tcompress.recipes import QuantizeConfig, compress_


@pytest.fixture(scope="module")
def dispatched(request):
    import os

    if not os.environ.get("TCOMPRESS_DATA_DIR"):
        pytest.skip("shared assets not found: set TCOMPRESS_DATA_DIR to the ../shared folder")
    pytest.importorskip("accelerate")
    model, tokenizer = models.load("stories260k", device_map="auto")
    plain, _ = models.load("stories260k")
    windows = data.token_windows("\n".join(data.tinystories_texts()), tokenizer, 128, bos=True)[:4]
    return model, plain, windows


def test_dispatched_model_matches_the_plain_load(dispatched):
    model, plain, windows = dispatched
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert evaluate.perplexity(model, windows).ppl == pytest.approx(evaluate.perplexity(plain, windows).ppl, rel=1e-6)


def test_statistics_and_quantization_on_a_dispatched_model(dispatched):
    model, plain, windows = dispatched
    stats = collect_block_statistics(model, windows, layers=[0, 4], holdout=0.0, stats_device="cpu")
    ref = collect_block_statistics(plain, windows, layers=[0, 4], holdout=0.0)
    torch.testing.assert_close(stats.moments(4).cov_in(), ref.moments(4).cov_in())
    compress_(model, QuantizeConfig(bits=8, group_size=None))
    compress_(plain, QuantizeConfig(bits=8, group_size=None))
    assert evaluate.perplexity(model, windows).ppl == pytest.approx(evaluate.perplexity(plain, windows).ppl, rel=1e-5)
