"""The verdict rule and each finding's criteria on hand-made results (no model): what makes a finding reproduced,
partly reproduced, not reproduced or not measured."""

from __future__ import annotations

import pytest
from tcompress.report import findings
from tcompress.report.budgets import budget, depth_blocks, spaced_layers
from tcompress.report.findings import NOT_MEASURED, NOT_REPRODUCED, PARTLY, REPRODUCED, Criterion, judge, verdict


def _c(met):
    return Criterion("x", "y", None if met is None else "m", met)


@pytest.mark.parametrize(
    "mets, expected",
    [
        ([True, True], REPRODUCED),
        ([True, False], PARTLY),
        ([False, False], NOT_REPRODUCED),
        ([None, None], NOT_MEASURED),
        ([True, None], REPRODUCED),  # an unmeasured criterion is left out of the count
        ([False, None], NOT_REPRODUCED),
    ],
)
def test_verdict_rule(mets, expected):
    assert verdict([_c(m) for m in mets]) == expected


def test_spearman():
    assert findings._spearman([0, 1, 2, 3], [0.1, 0.2, 0.5, 0.9]) == pytest.approx(1.0)
    assert findings._spearman([0, 1, 2, 3], [0.9, 0.5, 0.2, 0.1]) == pytest.approx(-1.0)
    assert findings._spearman([0, 1, 2], [1.0, 1.0, 1.0]) == 0.0  # no variation: no correlation


def _r2(value):
    score = {"pooled": value, "per_dim": value}
    return {"output": score, "residual": score}


def _linearity(curve, pairs=()):
    return {
        "status": "ok",
        "result": {
            "curve": {"blocks": [{"layer": i, "r2": {"no_first": _r2(r), "all": _r2(r)}} for i, r in enumerate(curve)]},
            "conditional": {
                "pairs": [
                    {"upstream": 0, "layer": 1, "clean": _r2(c), "shifted_clean_fit": _r2(s), "shifted_refit": _r2(c)}
                    for c, s in pairs
                ]
            },
        },
    }


def _by_key(results):
    return {f.key: f for f in judge(results)}


def test_linearity_findings_follow_the_curve():
    rising = _by_key({"steps": {"linearity": _linearity([0.17, 0.5, 0.8, 0.93], [(0.9, 0.8)])}})
    assert rising["F4"].verdict == REPRODUCED and rising["F2"].verdict == REPRODUCED
    flat = _by_key({"steps": {"linearity": _linearity([0.95, 0.94, 0.95, 0.93], [(0.9, 0.9)])}})
    assert flat["F4"].verdict == NOT_REPRODUCED
    assert flat["F2"].verdict == PARTLY  # linear at the end (0.93 >= 0.9), but no loss under a shifted input


def test_failed_steps_leave_findings_not_measured():
    results = {"steps": {"linearity": {"status": "failed", "error": "boom"}}}
    assert all(f.verdict == NOT_MEASURED for f in judge(results))


def _sub_row(blocks, rank, change, ratio, fit="clean"):
    return {
        "blocks": blocks,
        "rank": rank,
        "fit": fit,
        "quantize": None,
        "compression_ratio": ratio,
        "ppl_change": change,
        "ppl_change_relative": change / 10,
    }


def test_headline_criteria():
    rows = [_sub_row([3], 16, 1.5, 34.0), _sub_row([0, 1, 2, 3], 16, 40.0, 34.0)]
    results = {"steps": {"substitution": {"status": "ok", "result": {"hidden_size": 64, "rows": rows}}}}
    assert _by_key(results)["headline"].verdict == REPRODUCED
    rows[1]["ppl_change"] = 2.0  # four blocks cost little more than one: "several blocks fail" is not seen
    assert _by_key(results)["headline"].verdict == PARTLY


def test_wall_criteria():
    def variant(name, ppl, err):
        return {"variant": name, "perplexity": ppl, "output_rel_error": err}

    run = {
        "rotated": False,
        "variants": [
            variant("direct-int4", 27.0, 0.1),
            variant("factored-int4", 1e6, 0.9),
            variant("direct-int5", 21.0, 0.05),
            variant("residual-int4+lr", 26.0, 0.07),
        ],
    }
    results = {"steps": {"wall": {"status": "ok", "result": {"runs": [run]}}}}
    assert _by_key(results)["F3"].verdict == REPRODUCED
    run["variants"][3]["perplexity"] = 20.0
    assert _by_key(results)["F3"].verdict == PARTLY


def test_budgets():
    assert budget("quick").eval_tokens == 4096
    with pytest.raises(ValueError, match="budget must be one of quick, standard, full; got 'x'"):
        budget("x")
    assert spaced_layers(3, 30) == [0, 14, 29]  # round(14.5) is 14 (banker's rounding)
    assert spaced_layers(10, 5) == [0, 1, 2, 3, 4]
    assert depth_blocks((0.5, 0.75, 0.9), 30) == [15, 22, 27]
    assert depth_blocks((0.5, 0.75, 0.9), 2) == [1]
