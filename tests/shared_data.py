"""Where the real research data sits (../shared/data), and a skip when it is absent."""

from __future__ import annotations

import pytest

from mentalglm.data.sources import data_root

DATA = data_root()
requires_data = pytest.mark.skipif(not (DATA / "socialcd3k").exists(),
                                   reason=f"real data not found at {DATA}; set MENTALGLM_DATA to run these tests")
