"""The paper pipeline: ``tcompress report`` runs the experiment suite of *Variance Is Not Importance* (arXiv
2604.20682) on one model and writes results.json, PNG plots and a report.md that judges the paper's five findings
and headline result against this run's numbers.

    from tcompress.report import run_report
    results = run_report("smollm2-135m", budget="quick", out="report-smollm2")
"""

from .budgets import BUDGET_NAMES, BUDGETS, Budget
from .findings import judge
from .runner import DEFAULT_MODEL, STEPS, render, run_report

__all__ = ["BUDGETS", "BUDGET_NAMES", "Budget", "DEFAULT_MODEL", "STEPS", "judge", "render", "run_report"]
