"""Accuracy-vs-cost frontiers per scaling method: Pareto front, fits, a verdict, a plot.

The question is the EfficientNet paper's (Figure 8): at equal cost, does compound scaling beat
depth-, width- and resolution-only scaling? Everything here answers it with numbers and
bootstrap intervals, on our report.csv or on timm's published results CSVs. Imports pandas,
numpy, scipy and matplotlib only (never torch or timm), so ``timm-scaling frontier`` starts fast.

The steps, one module each: ``read`` (files, the join of accuracy and cost tables), ``names``
(methods, families, labels, groups), ``points`` (``--where``, ``--models``, configurations),
``fit`` (Pareto front, log-linear and power-law fits, bootstrap), ``verdict``, ``render`` (table,
markdown, JSON), ``plot``; ``analyse`` runs them in order.

Reading. Rows are runs. Column names are ours (:data:`timm_scaling.report.COLUMNS`); timm's
names are accepted through :data:`timm_scaling.report.ALIASES` (``infer_gmacs`` is ``gmacs``).
Accuracy tables take their cost from cost tables (timm's benchmark CSVs) by (architecture,
image size) (:mod:`timm_scaling.frontier.read`). Rows whose cost or accuracy is missing, not a
number, or (for the log axis) a cost of 0 or less are dropped with a count. A point is a
configuration (model, image size, dataset, recipe, epochs); its runs (seeds) aggregate to
mean, std and n (:mod:`timm_scaling.frontier.points`).

Groups. ``--group`` names a column (default ``method``). Without a ``method`` column, or for an
empty cell in it, a row's method comes from its model name: a timm-scaling name
(``effnet_b0_w2``) has its method, as :attr:`Scaling.method` says (baseline, depth, width,
resolution, compound or mixed); any other name its family and pretrained tag,
:func:`family_of` (``resnet50.tv_in1k`` -> ``resnet.tv_in1k``). ``--group family`` drops the
tag.

The ``baseline`` group (B0 itself) is the scale-1 point of every scaling method, so its points
belong to every other group's curve (as in the paper's Figure 8); it is also shown on its own.

Fits, per group, over point means: y = a + b log10(x), reported also as points per doubling of
x (b log10 2); a group with fewer than 3 distinct costs is plotted but not fitted. The
saturating power law of the error, err = c + a x^-b (err = 100 - accuracy, 0 <= c < the best
error), is fitted with c shared across groups when two or more groups have 3+ distinct costs
(and 8+ points together; 10 groups at most), else alone for a group with 8+ distinct costs,
else not at all: with 4-6 points its intervals are useless, and the output says so. A law
whose exponent sits at its bound is "no power law: error does not fall with cost here".

Bootstrap. Runs are resampled within each model (fixed seed, so reruns print the same numbers);
each resampled mean is widened by sqrt(n/(n-1)) so that its variance is the unbiased s^2/n (the
plain bootstrap is too narrow with the 2-5 seeds a study has). Intervals are percentile
intervals of the refitted quantities. With one run of a point nothing is resampled: the output
says n=1 and claims nothing, unless the evaluation set's size N is given (``--eval-size``):
then the interval is the normal one of the evaluation's binomial noise alone, each accuracy p
with variance p(1-p)/N, and the line says so.

Verdict. At the cost of each point of the reference group (``compound``), or at each ``--at``
cost, every other group's accuracy from its fit (3+ costs) or by linear interpolation in log
cost (2 costs), never extrapolated; the difference to the reference, with a 95% interval. The
binomial noise floor of one accuracy, sqrt(p(1-p)/N), needs the evaluation set's size N.
"""

from __future__ import annotations

from timm_scaling.frontier.analyse import analyse, check_options, run, write_outputs
from timm_scaling.frontier.fit import (
    PowerLaw,
    bootstrap_means,
    fit_log_linear,
    fit_power_law,
    interval,
    log_linear_design,
    noise_floor,
    pareto_front,
    per_doubling,
)
from timm_scaling.frontier.names import assign_groups, family_of, label_of, method_of
from timm_scaling.frontier.plot import colours, plot, save_figure
from timm_scaling.frontier.points import aggregate
from timm_scaling.frontier.read import canonical_column, metric, read_results
from timm_scaling.frontier.render import axis_label, show, to_json, to_markdown
from timm_scaling.frontier.results import (
    CONFIDENCE,
    FORMATS,
    REFERENCE,
    Frontier,
    Group,
    LinearFit,
    Point,
    PowerFit,
    Verdict,
    format_cost,
    group_order,
)

__all__ = [
    "CONFIDENCE",
    "FORMATS",
    "REFERENCE",
    "Frontier",
    "Group",
    "LinearFit",
    "Point",
    "PowerFit",
    "PowerLaw",
    "Verdict",
    "aggregate",
    "analyse",
    "assign_groups",
    "axis_label",
    "bootstrap_means",
    "canonical_column",
    "check_options",
    "colours",
    "family_of",
    "fit_log_linear",
    "fit_power_law",
    "format_cost",
    "group_order",
    "interval",
    "label_of",
    "log_linear_design",
    "method_of",
    "metric",
    "noise_floor",
    "pareto_front",
    "per_doubling",
    "plot",
    "read_results",
    "run",
    "save_figure",
    "show",
    "to_json",
    "to_markdown",
    "write_outputs",
]
