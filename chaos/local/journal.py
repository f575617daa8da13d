"""Moved: the journal is the test-bed harness's, :mod:`rlctl.harness.journal`.

This module keeps the old import path working for callers that predate the harness
(``rlctl chaos run`` imports :func:`check_run_id` from here).
"""

from rlctl.harness.journal import Journal as Journal
from rlctl.harness.journal import check_run_id as check_run_id
from rlctl.harness.journal import cleanup as cleanup

__all__ = ["Journal", "check_run_id", "cleanup"]
