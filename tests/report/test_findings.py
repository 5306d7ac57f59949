"""The verdict rule and each finding's criteria on hand-made results (no model): what makes a finding reproduced,
partly reproduced, not reproduced, not measured or not judged; every criterion just inside and just outside its
threshold."""

from __future__ import annotations

import math

import pytest
from tcompress.report import findings, markdown
from tcompress.report.budgets import budget, depth_blocks, spaced_layers
from tcompress.report.findings import (
    NOT_JUDGED,
    NOT_MEASURED,
    NOT_REPRODUCED,
    PARTLY,
    REPRODUCED,
    Criterion,
    judge,
    verdict,
)


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


def _ok(result):
    return {"status": "ok", "result": result}


def _by_key(results):
    return {f.key: f for f in judge(results)}


def _criteria(results, key):
    return _by_key(results)[key].criteria


# -- F2, F4: linearity ------------------------------------------------------------------------------------------


def _r2(value):
    score = {"pooled": value, "per_dim": value}
    return {"output": score, "residual": score}


def _linearity(curve, pairs=(), default="no_outliers", noise=0.0):
    """A linearity result whose default position set holds ``curve`` and ``pairs`` (clean, shifted); the other sets
    hold the values plus ``noise``, so reading the wrong set changes the outcome."""
    sets = {default: 0.0, "no_first": noise, "all": noise}
    curve_dict = {"blocks": [{"layer": i, "r2": {p: _r2(r + n) for p, n in sets.items()}} for i, r in enumerate(curve)]}
    if default is not None:
        curve_dict["default_positions"] = default
    pair_dicts = []
    for p, n in sets.items():
        for i, (c, s) in enumerate(pairs):
            pair = {"upstream": i, "layer": i + 1, "clean": _r2(c), "shifted_clean_fit": _r2(s - n)}
            pair["shifted_refit"] = _r2(c)
            if default is not None:
                pair["positions"] = p
            pair_dicts.append(pair)
        if default is None:
            break
    return _ok({"curve": curve_dict, "conditional": {"pairs": pair_dicts}})


def test_linearity_findings_follow_the_curve():
    rising = _by_key({"steps": {"linearity": _linearity([0.17, 0.5, 0.8, 0.93], [(0.9, 0.8)])}})
    assert rising["F4"].verdict == REPRODUCED and rising["F2"].verdict == REPRODUCED
    flat = _by_key({"steps": {"linearity": _linearity([0.95, 0.94, 0.95, 0.93], [(0.9, 0.9)])}})
    assert flat["F4"].verdict == NOT_REPRODUCED
    assert flat["F2"].verdict == PARTLY  # linear at the end (0.93 >= 0.9), but no loss under a shifted input


@pytest.mark.parametrize("last, met", [(0.90, True), (0.899, False)])
def test_f2_last_block_r2_threshold(last, met):
    assert _criteria({"steps": {"linearity": _linearity([0.5, last])}}, "F2")[0].met is met


@pytest.mark.parametrize(
    "pairs, met",
    [
        ([(0.9, 0.87), (0.8, 0.7)], True),  # both pairs lose ≥ 0.03
        ([(0.9, 0.871), (0.8, 0.7)], False),  # one loses 0.029
        ([(0.9, 0.5), (0.8, 0.81)], False),  # a large mean drop does not excuse a pair whose R² rises
    ],
)
def test_f2_conditional_drop_on_every_pair(pairs, met):
    c = _criteria({"steps": {"linearity": _linearity([0.5, 0.95], pairs)}}, "F2")[1]
    assert c.met is met
    assert c.measured.startswith("drops ") and c.measured.count("block") == len(pairs)


def test_linearity_criteria_read_the_recorded_default_positions():
    # The default set loses 0.05 per pair; "no_first" (+0.1 noise) would show a rise. The curve there is higher too.
    results = {"steps": {"linearity": _linearity([0.5, 0.85], [(0.9, 0.85)], noise=0.1)}}
    c1, c2 = _criteria(results, "F2")
    assert c1.met is False and "no_outliers" in c1.description  # 0.85 read, not 0.95
    assert c2.met is True
    assert findings.r2_curve(results["steps"]["linearity"]["result"]) == [(0, 0.5), (1, 0.85)]
    # Results that predate the field: "no_first".
    old = {"steps": {"linearity": _linearity([0.5, 0.95], [(0.9, 0.85)], default=None)}}
    assert findings.linearity_positions(old["steps"]["linearity"]["result"]) == "no_first"
    assert _criteria(old, "F2")[0].met is True and _criteria(old, "F2")[1].met is True


# Five blocks: Spearman's ρ = 1 − Σd²/20. Ranks [1, 3, 0, 2, 4] give Σd² = 10, ρ = 0.5; [0, 4, 1, 2, 3] give 0.4.
@pytest.mark.parametrize("ranks, met", [([1, 3, 0, 2, 4], True), ([0, 4, 1, 2, 3], False)])
def test_f4_rank_correlation_threshold(ranks, met):
    curve = [0.5 + 0.1 * r for r in ranks]
    assert _criteria({"steps": {"linearity": _linearity(curve)}}, "F4")[0].met is met


@pytest.mark.parametrize("last, met", [(0.7001, True), (0.6999, False)])
def test_f4_rise_threshold(last, met):
    assert _criteria({"steps": {"linearity": _linearity([0.5, 0.6, last])}}, "F4")[1].met is met


def test_failed_steps_leave_findings_not_measured():
    results = {"steps": {"linearity": {"status": "failed", "error": "boom"}}}
    assert all(f.verdict == NOT_MEASURED for f in judge(results))


# -- F1: geometry ----------------------------------------------------------------------------------------------


NULL = {
    "draws": 8,
    "seed": 0,
    "mean_canonical_correlation": 0.75,
    "mean_canonical_correlation_std": 0.01,
    "uncorrelated_fraction": 0.2,
    "uncorrelated_fraction_std": 0.01,
    "overlap": 0.4,
    "overlap_std": 0.01,
}


def _geo_layer(layer, corr=0.70, overlap=0.35, positions="no_outliers", null=True):
    gradient = {"mean_canonical_correlation": corr, "uncorrelated_fraction": 0.25, "overlap": overlap}
    g = {"layer": layer, "positions": positions, "gradient": gradient | {"random_overlap": 0.4}}
    if null:
        g["null"] = dict(NULL)
    return g


def _projection(layer, basis, ppl, kept, positions="no_outliers"):
    return {"layer": layer, "positions": positions, "basis": basis, "ppl": ppl, "baseline_ppl": 10.0} | {
        "retained_variance": kept
    }


def _geometry(layers, projections=(), default="no_outliers"):
    geometry = {"layers": list(layers)}
    if default is not None:
        geometry["default_positions"] = default
    return {"steps": {"geometry": _ok({"geometry": geometry, "projections": list(projections)})}}


def _effect_projections(layers=(0, 1, 2), kept=0.85, ppl=11.0, gradient_ppl=10.5):
    out = []
    for layer in layers:
        out += [_projection(layer, "variance", ppl, kept), _projection(layer, "gradient", gradient_ppl, 0.3)]
    return out


def test_f1_reproduced_when_every_criterion_holds():
    results = _geometry([_geo_layer(0), _geo_layer(1)], _effect_projections())
    f1 = _by_key(results)["F1"]
    assert f1.verdict == REPRODUCED
    assert "0.700 vs null 0.750 ± 0.010" in f1.criteria[0].measured and "8 draws" in f1.criteria[0].measured


@pytest.mark.parametrize("corr, met", [(0.77, True), (0.7701, False)])
def test_f1_cca_against_the_null_at_every_block(corr, met):
    # Null 0.75 ± 0.01: the bound is 0.77. One block at the bound's edge decides, the other is well inside.
    c = _criteria(_geometry([_geo_layer(0, corr=0.6), _geo_layer(1, corr=corr)]), "F1")[0]
    assert c.met is met


@pytest.mark.parametrize("overlap, met", [(0.42, True), (0.4201, False)])
def test_f1_overlap_against_the_null_at_every_block(overlap, met):
    c = _criteria(_geometry([_geo_layer(0), _geo_layer(1, overlap=overlap)]), "F1")[2]
    assert c.met is met


@pytest.mark.parametrize(
    "kept, ppl, met",
    [(0.80, 10.5, True), (0.799, 10.5, False), (0.80, 10.49, False)],  # held-out floor 0.80, harm ≥ 5% of 10.0
)
def test_f1_projection_keeps_held_out_variance_and_hurts(kept, ppl, met):
    c = _criteria(_geometry([_geo_layer(0)], _effect_projections(kept=kept, ppl=ppl, gradient_ppl=10.0)), "F1")[1]
    assert c.met is met


def test_f1_reads_the_default_positions_and_says_when_there_is_no_null():
    # Another position set with an aligned (correlated) subspace is not what the criterion reads.
    layers = [_geo_layer(0), _geo_layer(0, corr=0.99, overlap=0.99, positions="no_first")]
    projections = _effect_projections() + [_projection(0, "variance", 100.0, 0.1, positions="no_first")]
    assert _by_key(_geometry(layers, projections))["F1"].verdict == REPRODUCED
    # Results that predate the default field read "no_first"; those that predate the null leave CCA unmeasured.
    old = _geometry([_geo_layer(0, positions="no_first", null=False)], default=None)
    c = _criteria(old, "F1")
    assert len(c) == 3 and c[0].met is None and c[2].met is None and "no null recorded" in c[0].measured
    assert "(no_first)" in c[0].description


# -- F3: the reconstruction wall --------------------------------------------------------------------------------


def _wall(factored_ppl=1e6, factored_err=0.9, residual_ppl=26.0, quantization=12.0, direct_error=10.0):
    def variant(name, ppl, err, **extra):
        return {"variant": name, "perplexity": ppl, "output_rel_error": err} | extra

    terms = {
        "truncation": [1.0, 30.0],
        "eps_a_b": [1.0, quantization],
        "a_eps_b": [1.0, 0.0],
        "eps_a_eps_b": [1.0, 0.0],
        "ab": [1.0, 100.0],
    }
    direct_layers = [{"output_error_sq": direct_error**2 / 2}, {"output_error_sq": direct_error**2 / 2}]
    run = {
        "rotated": False,
        "variants": [
            variant("direct-int4", 27.0, 0.1, layers=direct_layers, cross_terms={}),
            variant("factored-int4", factored_ppl, factored_err, cross_terms=terms),
            variant("direct-int5", 21.0, 0.05),
            variant("residual-int4+lr", residual_ppl, 0.07),
        ],
    }
    return {"steps": {"wall": _ok({"runs": [run]})}}


def test_wall_criteria():
    assert _by_key(_wall())["F3"].verdict == REPRODUCED
    assert _by_key(_wall(residual_ppl=20.0))["F3"].verdict == PARTLY


@pytest.mark.parametrize("ppl, met", [(27.01, True), (27.0, False)])
def test_f3_factored_perplexity_above_direct(ppl, met):
    assert _criteria(_wall(factored_ppl=ppl), "F3")[0].met is met


@pytest.mark.parametrize("err, met", [(0.1001, True), (0.1, False)])
def test_f3_total_output_error_above_direct(err, met):
    c = _criteria(_wall(factored_err=err), "F3")[1]
    assert c.met is met and "total output error" in c.description


@pytest.mark.parametrize("ppl, met", [(21.01, True), (21.0, False)])
def test_f3_residual_perplexity_above_int5(ppl, met):
    assert _criteria(_wall(residual_ppl=ppl), "F3")[2].met is met


@pytest.mark.parametrize("quantization, met", [(12.0, True), (11.99, False)])
def test_f3_quantization_cross_terms_amplify_the_direct_error(quantization, met):
    # Direct Q(W)'s output error is 10 (two layers of 50 squared); the bound is 1.2× that.
    c = _criteria(_wall(quantization=quantization), "F3")[3]
    assert c.met is met and c.measured.startswith(f"{quantization:.4g} vs 10 (")


def test_f3_cross_terms_combine_as_the_norm_of_uncorrelated_errors():
    results = _wall(quantization=0.0)
    terms = results["steps"]["wall"]["result"]["runs"][0]["variants"][1]["cross_terms"]
    terms["eps_a_b"][1], terms["a_eps_b"][1], terms["eps_a_eps_b"][1] = 9.0, 6.0, 2.0  # √(81 + 36 + 4) = 11
    c = _criteria(results, "F3")[3]
    assert c.measured.startswith("11 vs 10 (1.10×)") and c.met is False
    del results["steps"]["wall"]["result"]["runs"][0]["variants"][0]["layers"]
    assert _criteria(results, "F3")[3].met is None  # no per-layer rows, no absolute direct error


# -- F5: easy tokens -------------------------------------------------------------------------------------------


def _exit(strict=0.3, easy=0.05, random=0.5, depth_fraction=0.85, sweep_ppl=10.1, easy_tokens=30, null=True):
    sensitivity = {
        "tau": 0.1,
        "easy_tokens": easy_tokens,
        "other_tokens": 100,
        "predicted_kl_easy": 0.04,
        "actual_kl_easy": 0.04,
        "loss_change_easy": easy,
    }
    if null:
        sensitivity |= {"random_tokens": easy_tokens, "random_seed": 0, "actual_kl_random": 0.6}
        sensitivity["loss_change_random"] = random
    sweep = [{"threshold": 0.9, "depth_fraction": depth_fraction, "ppl": sweep_ppl, "ppl_full": 10.0}]
    result = {"difficulty_tuned": {"exit_by_75pct": {"0.5": strict}}, "sensitivity_tuned": sensitivity}
    return {"steps": {"early-exit": _ok(result | {"sweep_tuned": sweep})}}


def test_f5_reproduced_when_every_criterion_holds():
    assert _by_key(_exit())["F5"].verdict == REPRODUCED


@pytest.mark.parametrize("strict, met", [(0.20, True), (0.199, False)])
def test_f5_easy_fraction_threshold(strict, met):
    assert _criteria(_exit(strict=strict), "F5")[0].met is met


@pytest.mark.parametrize(
    "easy, random, met",
    [
        (0.1, 0.2, True),  # at τ and at half the random tokens' cost
        (0.1001, 1.0, False),  # above τ
        (0.05, 0.0999, False),  # more than half of what random tokens cost
    ],
)
def test_f5_skipping_costs_easy_tokens_little_and_less_than_random_ones(easy, random, met):
    c = _criteria(_exit(easy=easy, random=random), "F5")[1]
    assert c.met is met and "random" in c.measured


def test_f5_sensitivity_without_easy_tokens_or_null():
    assert _criteria(_exit(easy_tokens=0), "F5")[1].met is False
    c = _criteria(_exit(null=False), "F5")[1]
    assert c.met is None and "no random-token null" in c.measured


@pytest.mark.parametrize(
    "depth_fraction, ppl, met",
    [(0.90, 10.2, True), (0.9001, 10.2, False), (0.5, 10.2001, False)],  # ≥ 10% saved at ≤ +2%
)
def test_f5_sweep_threshold(depth_fraction, ppl, met):
    assert _criteria(_exit(depth_fraction=depth_fraction, sweep_ppl=ppl), "F5")[2].met is met


# -- headline: last-block replacement ---------------------------------------------------------------------------


def _sub_row(blocks, rank, relative, ratio=21.0, fit="clean", positions="no_outliers"):
    return {
        "blocks": blocks,
        "rank": rank,
        "fit": fit,
        "positions": positions,
        "quantize": None,
        "compression_ratio": ratio,
        "ppl_change": 10 * relative,
        "ppl_change_relative": relative,
    }


def _substitution(rows):
    return {"steps": {"substitution": _ok({"hidden_size": 64, "headline_positions": "no_outliers", "rows": rows})}}


# One block at rank d/4 = 16 costs log(1.1) nats; four times that, exactly additive, is a rise of 1.1⁴ − 1 = 46.41%.
ADDITIVE_FOUR = 1.1**4 - 1


def test_headline_criteria():
    rows = [_sub_row([3], 8, 0.30, ratio=34.0), _sub_row([3], 16, 0.1), _sub_row([0, 1, 2, 3], 16, 0.9)]
    assert _by_key(_substitution(rows))["headline"].verdict == REPRODUCED
    rows[2]["ppl_change_relative"] = 0.3  # four blocks cost less than four times one: they do not "fail"
    assert _by_key(_substitution(rows))["headline"].verdict == PARTLY


@pytest.mark.parametrize(
    "ratio, relative, met",
    [(30.0, 0.35, True), (30.0, 0.3501, False), (29.99, 0.01, False)],  # ≥ 30× at ≤ +35%
)
def test_headline_compression_threshold(ratio, relative, met):
    c = _criteria(_substitution([_sub_row([3], 8, relative, ratio=ratio)]), "headline")[0]
    assert c.met is met


def test_headline_compression_reads_the_headline_positions_only():
    rows = [_sub_row([3], 8, 0.5, ratio=34.0), _sub_row([3], 8, 0.1, ratio=34.0, positions="all")]
    assert _criteria(_substitution(rows), "headline")[0].met is False


@pytest.mark.parametrize("relative, met", [(ADDITIVE_FOUR + 1e-3, True), (ADDITIVE_FOUR - 1e-3, False)])
def test_several_blocks_fail_only_when_their_costs_compound(relative, met):
    # Additive in nats already means more than 4× the perplexity change (46.4% > 40%): the test is in log perplexity.
    rows = [_sub_row([3], 16, 0.1), _sub_row([0, 1, 2, 3], 16, relative)]
    c = _criteria(_substitution(rows), "headline")[1]
    assert c.met is met and "4 × +0.0953" in c.measured


def test_several_blocks_use_the_single_block_costs_when_measured_and_the_better_fit():
    singles = [_sub_row([b], 16, r) for b, r in zip(range(4), (0.3, 0.2, 0.1, 0.1))]
    expected = sum(math.log1p(r) for r in (0.3, 0.2, 0.1, 0.1))
    above = math.expm1(expected + 1e-3)
    c = _criteria(_substitution([*singles, _sub_row([0, 1, 2, 3], 16, above)]), "headline")[1]
    assert c.met is True and f"= +{expected:.4f}" in c.measured
    # A sequential fit that stays below the sum means replacing several blocks works after all.
    below = _sub_row([0, 1, 2, 3], 16, math.expm1(expected - 1e-3), fit="sequential")
    c = _criteria(_substitution([*singles, _sub_row([0, 1, 2, 3], 16, above), below]), "headline")[1]
    assert c.met is False and "sequential fit" in c.measured


# -- in-sample runs are not judged -----------------------------------------------------------------------------


def _everything():
    results = {"steps": {}}
    for part in (
        _geometry([_geo_layer(0)], _effect_projections()),
        {"steps": {"linearity": _linearity([0.17, 0.5, 0.8, 0.93], [(0.9, 0.8)])}},
        _wall(),
        _exit(),
        _substitution([_sub_row([3], 8, 0.3, ratio=34.0), _sub_row([3], 16, 0.1), _sub_row([0, 1, 2, 3], 16, 0.9)]),
    ):
        results["steps"].update(part["steps"])
    return results


def test_every_finding_is_reproduced_by_its_effect():
    assert {f.key: f.verdict for f in judge(_everything())} == dict.fromkeys(
        ["F1", "F2", "F3", "F4", "F5", "headline"], REPRODUCED
    )


def test_in_sample_runs_are_not_judged():
    results = _everything()
    results["data"] = {"calibration": {"overlaps_evaluation": True}}
    judged = judge(results)
    assert all(f.verdict == NOT_JUDGED for f in judged)
    assert all("calibration text is the evaluation text" in f.reason for f in judged)
    # The criteria are still evaluated, for the reader.
    assert all(c.met is True for f in judged for c in f.criteria)
    results["data"]["calibration"]["overlaps_evaluation"] = False
    assert all(f.verdict == REPRODUCED and f.reason is None for f in judge(results))


def test_report_md_states_why_findings_are_not_judged():
    results = _everything()
    results["data"] = {"calibration": {"overlaps_evaluation": True}}
    results["findings"] = [f.to_dict() for f in judge(results)]
    text = "\n".join(markdown._findings(results))
    assert "F1: Variance is not importance — not judged" in text
    assert "Not judged: the calibration text is the evaluation text" in text
    assert "- [met, not judged]" in text and "- [met]" not in text
    assert "Not judged:" in findings.RULE


def _exit_section(sensitivity):
    difficulty = {"exit_by_50pct": {"0.5": 0.1}, "exit_by_75pct": {"0.5": 0.3}}
    sweep = [{"threshold": 0.9, "depth_fraction": 0.8, "ppl": 10.1, "ppl_full": 10.0, "agreement": 0.9}]
    result = {"depths": [2], "num_blocks": 4, "windows": [2, 9], "training": {"steps": 5}}
    result["head_cost"] = {"head_parameters": 10, "fraction_of_model": 0.01}
    for kind in ("lens", "tuned"):
        result |= {f"difficulty_{kind}": difficulty, f"sensitivity_{kind}": sensitivity, f"sweep_{kind}": sweep}
    return "\n".join(markdown._early_exit({"steps": {"early-exit": _ok(result)}}))


def test_report_md_shows_the_random_token_null_and_renders_older_results():
    sensitivity = _exit()["steps"]["early-exit"]["result"]["sensitivity_tuned"]
    sensitivity |= {"ppl_full": 10.0, "ppl_skipped": 10.2, "mean_depth": 3.5}
    assert "| +0.0500 / +0.5000 |" in _exit_section(sensitivity)
    del sensitivity["loss_change_random"]
    assert "| +0.0500 / — |" in _exit_section(sensitivity)


def test_budgets():
    assert budget("quick").eval_tokens == 4096
    with pytest.raises(ValueError, match="budget must be one of quick, standard, full; got 'x'"):
        budget("x")
    assert spaced_layers(3, 30) == [0, 14, 29]  # round(14.5) is 14 (banker's rounding)
    assert spaced_layers(10, 5) == [0, 1, 2, 3, 4]
    assert depth_blocks((0.5, 0.75, 0.9), 30) == [15, 22, 27]
