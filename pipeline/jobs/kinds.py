"""Every job kind and the function that runs it (pipeline.schemas.jobs.JobKind names them)."""

from __future__ import annotations

from pipeline.jobs.cleaning import run_cleaning
from pipeline.jobs.clustering import run_clustering
from pipeline.jobs.context import JobRunner
from pipeline.jobs.daily_mixes import run_daily_mixes
from pipeline.jobs.scan import run_scan

RUNNERS: dict[str, JobRunner] = {
    "clustering": run_clustering,
    "cleaning": run_cleaning,
    "scan": run_scan,
    "daily_mixes": run_daily_mixes,
}
