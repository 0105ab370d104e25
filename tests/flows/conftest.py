from __future__ import annotations

from pathlib import Path

import pytest

from station.config import Secrets

from .harness import Station, make_station


@pytest.fixture
def station(tmp_path: Path, secrets: Secrets) -> Station:
    st = make_station(tmp_path, secrets)
    st.add_courier("c1", "SF")
    yield st
    st.store.close()
