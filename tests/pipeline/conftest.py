"""Pipeline-test hooks: the hostile-input suite counts its cases in the test run's summary."""

from __future__ import annotations

HOSTILE_SUITE = "test_hostile_inputs.py"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Print ``hostile-input suite: N cases: P passed, F failed, S skipped`` when the suite ran."""
    outcomes: dict[str, str] = {}
    for category in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
        for report in terminalreporter.stats.get(category, []):
            nodeid = getattr(report, "nodeid", "")
            if HOSTILE_SUITE not in nodeid:
                continue
            # A failing setup or teardown outranks the call's outcome; the first word wins otherwise.
            if category in ("failed", "error") or nodeid not in outcomes:
                outcomes[nodeid] = "failed" if category == "error" else category
    if not outcomes:
        return
    counts = {outcome: list(outcomes.values()).count(outcome) for outcome in sorted(set(outcomes.values()))}
    detail = ", ".join(f"{count} {outcome}" for outcome, count in counts.items())
    terminalreporter.write_line(f"hostile-input suite: {len(outcomes)} cases: {detail}")
