"""Calibrate on agents, resuming after an agent restart.

A site's agent that dies during a step fails that step before its commit (nothing of it is
recorded; the engine marks the node failed and blocks its descendants). The restarted agent has
put its site in the safe state. The graph is then run again from the calibration store: what
completed is fresh and skipped, the failed step and its descendants are redone once, so no
quantity is recorded twice."""

from __future__ import annotations

import logging
from typing import Any

from .proxy import AgentBundle

log = logging.getLogger("qnetlab.agents")


def calibrate_resuming(bundle: AgentBundle, *, resumes: int = 3, restart_timeout_s: float = 120.0,
                       **options: Any) -> Any:
    """``qnetlab.sequences.calibration.calibrate(bundle, **options)``; while a pass saw site
    agents die (at most ``resumes`` times), wait for them to be back and run the graph again.
    Returns the last pass's report, with ``restarted`` (the sites, in order of death)."""
    from qnetlab.sequences.calibration import calibrate

    transport = bundle.transport
    restarted: list[str] = []
    for attempt in range(resumes + 1):
        report = calibrate(bundle, **options)
        died = transport.take_deaths()
        if not died:
            break
        restarted += died
        for site in dict.fromkeys(died):
            status = transport.wait_ready(site, restart_timeout_s)
            log.warning("site %s: agent restarted (safe state %s); resuming the calibration "
                        "(pass %d)", site, status.get("safe_at_start"), attempt + 2)
    report.restarted = restarted
    return report
