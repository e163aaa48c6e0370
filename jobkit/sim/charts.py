"""Charts of simulated runs: timelines, queue depth, attempts, load, comparisons.

Each function draws on the matplotlib ``ax`` it is given (or on a new
figure's) and returns it, so charts compose into subplots. Only this module
needs matplotlib; ``import jobkit.sim`` never loads it.

Example::

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from jobkit.sim import Simulation, Burst, FaultPlan, TransientErrors
    >>> from jobkit.sim import charts
    >>> trace = Simulation(1, workload=Burst(20),
    ...                    faults=FaultPlan(TransientErrors(0.3))).run()
    >>> ax = charts.attempts_histogram(trace)
    >>> ax.get_xlabel()
    'attempts'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import charts as _charts
from ..core.job import JobState
from ._trace import Trace

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "OUTCOME_COLORS",
    "attempts_histogram",
    "compare_load",
    "compare_work",
    "dependency_load",
    "queue_depth",
    "timeline",
]

OUTCOME_COLORS: dict[str, str] = {
    "running" if kind is None else kind.value: color
    for kind, (color, _) in _charts.OUTCOMES.items()
}
"""The colour of an attempt's bar by the event that ended it (``"running"``
if none did), as :data:`jobkit.charts.OUTCOMES` has it; shared by all charts."""


def _axes(ax: Axes | None, size: tuple[float, float] = (8, 3.5)) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new = plt.subplots(figsize=size, layout="constrained")
    return new


def timeline(
    trace: Trace,
    *,
    ax: Axes | None = None,
    jobs: Sequence[int] | None = None,
    limit: int = 20,
) -> Axes:
    """Draw one lane per job: its attempts as bars, the waits between them as a line.

    This is :func:`jobkit.charts.attempt_timeline` of the trace's spans: a
    bar's colour says how the attempt ended (:data:`OUTCOME_COLORS`), the
    grey line is the job waiting in the queue (for a backoff, or for a
    worker), a black cross the moment a worker crashed, and the dotted line
    after it the time the crashed attempt's job waited for its lease to
    expire. ``jobs`` picks the jobs to show, by default the first ``limit``.

    Example::

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from jobkit import Backoff, RetryPolicy
        >>> from jobkit.sim import Simulation, Burst, FaultPlan, Latency, \
TransientErrors
        >>> from jobkit.sim.charts import timeline
        >>> trace = Simulation(
        ...     2, workload=Burst(5), concurrency=2,
        ...     faults=FaultPlan(Latency.constant(1), TransientErrors(0.5)),
        ...     retry=RetryPolicy(4, Backoff.exponential(1, 30))).run()
        >>> ax = timeline(trace)
        >>> [label.get_text() for label in ax.get_yticklabels()]
        ['job 1', 'job 2', 'job 3', 'job 4', 'job 5']
    """
    ax = _axes(ax, (8, max(2.0, 0.35 * min(limit, len(trace.jobs)) + 1.2)))
    chosen = list(jobs) if jobs is not None else sorted(trace.jobs)[:limit]
    wanted = set(chosen)
    enqueued = {
        e.job: e.time for e in trace.events if e.kind == "enqueued" and e.job in wanted
    }
    _charts.attempt_timeline(
        trace.spans(chosen), ax, jobs=chosen, enqueued=enqueued, until=trace.end
    )
    ax.set_xlim(left=0)
    ax.set_title("Attempts and waits, per job")
    return ax


def queue_depth(trace: Trace, *, ax: Axes | None = None) -> Axes:
    """Draw how many jobs were running, ready and waiting out a backoff, stacked.

    This is :func:`jobkit.charts.queue_depth` of ``trace.queue_depth()``,
    on the run's clock, up to its end.

    Example::

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from jobkit.sim import Simulation, Burst, FaultPlan, Latency
        >>> from jobkit.sim.charts import queue_depth
        >>> trace = Simulation(0, workload=Burst(6), concurrency=2,
        ...                    faults=FaultPlan(Latency.constant(1))).run()
        >>> ax = queue_depth(trace)
        >>> ax.get_ylabel()
        'jobs'
    """
    ax = _charts.queue_depth(trace.queue_depth(), _axes(ax), start=0.0, until=trace.end)
    if trace.end > 0:
        ax.set_xlim(0, trace.end)
    return ax


def attempts_histogram(trace: Trace, *, ax: Axes | None = None) -> Axes:
    """Draw how many jobs took 1, 2, 3, ... attempts, split by how they ended.

    Example::

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from jobkit.sim import Simulation, Burst
        >>> from jobkit.sim.charts import attempts_histogram
        >>> ax = attempts_histogram(Simulation(0, workload=Burst(3)).run())
        >>> [int(bar.get_height()) for bar in ax.containers[0]]
        [3]
    """
    ax = _axes(ax, (6, 3.5))
    per_job = trace.attempts_per_job()
    by_state: dict[JobState, Counter[int]] = {}
    for job_id, attempts in per_job.items():
        job = trace.jobs.get(job_id)
        state = job.state if job is not None else JobState.QUEUED
        by_state.setdefault(state, Counter())[attempts] += 1
    xs = list(range(1, max(per_job.values(), default=1) + 1))
    bottom = [0] * len(xs)
    colors = {
        JobState.SUCCEEDED: "tab:green",
        JobState.DEAD: "tab:red",
        JobState.CANCELLED: "tab:gray",
        JobState.QUEUED: "tab:blue",
        JobState.RUNNING: "tab:orange",
    }
    for state in colors:
        counts = by_state.get(state)
        if not counts:
            continue
        heights = [counts.get(x, 0) for x in xs]
        ax.bar(
            xs,
            heights,
            bottom=bottom,
            color=colors[state],
            label=state.value,
            edgecolor="black",
            linewidth=0.4,
        )
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xticks(xs)
    ax.set_xlabel("attempts")
    ax.set_ylabel("jobs")
    ax.set_title("Attempts per job")
    ax.legend(fontsize="small")
    return ax


def dependency_load(
    trace: Trace,
    *,
    ax: Axes | None = None,
    dependency: str | None = None,
    bin: float | None = None,
    until: float | None = None,
) -> Axes:
    """Draw the requests a dependency received per window, served and refused.

    The dashed line is its capacity per window. ``bin`` defaults to the
    dependency's window; ``until`` cuts the time axis.

    Example::

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from jobkit.sim import Simulation, Burst, FaultPlan, Dependency
        >>> from jobkit.sim.charts import dependency_load
        >>> api = Dependency(capacity=10)
        >>> trace = Simulation(0, workload=Burst(30), concurrency=30,
        ...                    faults=FaultPlan(api)).run()
        >>> ax = dependency_load(trace)
        >>> ax.get_ylabel()
        'requests per 1s'
    """
    ax = _axes(ax)
    dep = trace._dependency(dependency)
    width = dep.window if bin is None else bin
    rows = trace.load(dep.name, bin=width)
    if until is not None:
        rows = [row for row in rows if row[0] < until]
    starts = [row[0] for row in rows]
    served = [row[1] - row[2] for row in rows]
    refused = [row[2] for row in rows]
    ax.bar(starts, served, width=width, align="edge", color="tab:green", label="served")
    ax.bar(
        starts,
        refused,
        width=width,
        align="edge",
        bottom=served,
        color="tab:red",
        label="refused",
    )
    ax.axhline(
        dep.capacity * width / dep.window,
        color="black",
        linestyle="--",
        linewidth=1,
        label="capacity",
    )
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"requests per {width:g}s")
    ax.set_title(f"Load on {dep.name}")
    ax.legend(loc="upper right", fontsize="small")
    return ax


def compare_load(
    traces: Sequence[Trace],
    *,
    axes: Sequence[Axes] | Any = None,
    dependency: str | None = None,
    bin: float | None = None,
    until: float | None = None,
) -> Any:
    """Draw :func:`dependency_load` for several runs side by side, on one y scale.

    ``axes`` is one ``Axes`` per trace (by default a new row of them); each
    panel is titled with the trace's label. Returns ``axes``.

    Example::

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from jobkit import Backoff, RetryPolicy
        >>> from jobkit.sim import Simulation, Burst, FaultPlan, Dependency
        >>> from jobkit.sim.charts import compare_load
        >>> plan = FaultPlan(Dependency(capacity=10))
        >>> runs = [Simulation(0, workload=Burst(30), concurrency=30, faults=plan,
        ...                    retry=RetryPolicy(8, Backoff.exponential(1, 30,
        ...                                                            jitter=j)),
        ...                    label=str(j)).run()
        ...         for j in (None, "full")]
        >>> [ax.get_title() for ax in compare_load(runs)]
        ['None', 'full']
    """
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(
            1,
            len(traces),
            figsize=(3.2 * len(traces), 3.2),
            sharey=True,
            layout="constrained",
            squeeze=False,
        )
        axes = list(axes[0])
    if len(axes) != len(traces):
        raise ValueError(f"got {len(traces)} traces but {len(axes)} axes")
    # One time scale for all panels, or a late wave would look early.
    right = until if until is not None else max((t.end for t in traces), default=1)
    for trace, ax in zip(traces, axes, strict=True):
        dependency_load(trace, ax=ax, dependency=dependency, bin=bin, until=until)
        ax.set_title(trace.label)
        ax.set_xlim(0, right)
        if ax is not axes[0]:
            ax.set_ylabel("")
            legend = ax.get_legend()
            if legend is not None:
                legend.remove()
    return axes


def compare_work(
    traces: Sequence[Trace], *, ax: Axes | None = None, label_done: bool = True
) -> Axes:
    """Draw, for several runs, the attempts they spent: succeeded versus failed.

    Each bar is one run: the green part counts the attempts that succeeded,
    the red part the ones that failed (the wasted work). With
    ``label_done``, each bar is annotated with the time the last job
    finished.

    Example::

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from jobkit.sim import Simulation, Burst, FaultPlan, TransientErrors
        >>> from jobkit.sim.charts import compare_work
        >>> runs = [Simulation(s, workload=Burst(10), label=f"seed {s}",
        ...                    faults=FaultPlan(TransientErrors(0.5))).run()
        ...         for s in (1, 2)]
        >>> [t.get_text() for t in compare_work(runs).get_xticklabels()]
        ['seed 1', 'seed 2']
    """
    ax = _axes(ax, (1.6 * len(traces) + 2, 3.5))
    labels = [trace.label for trace in traces]
    ok: list[int] = []
    failed: list[int] = []
    for trace in traces:
        s = trace.summary()
        ok.append(s.succeeded)
        failed.append(s.attempts - s.succeeded)
    xs = list(range(len(traces)))
    ax.bar(xs, ok, color="tab:green", label="attempts that succeeded")
    ax.bar(xs, failed, bottom=ok, color="tab:red", label="attempts that failed")
    if label_done:
        for x, trace, total in zip(
            xs, traces, (a + b for a, b in zip(ok, failed, strict=True)), strict=True
        ):
            ax.annotate(
                f"done at {trace.end:,.0f}s",
                (x, total),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                fontsize="small",
            )
    ax.set_xticks(xs, labels)
    ax.set_ylabel("attempts")
    ax.set_title("Total work")
    top = max((a + b for a, b in zip(ok, failed, strict=True)), default=1)
    ax.set_ylim(0, top * 1.15)
    ax.legend(loc="upper right", fontsize="small")
    return ax
