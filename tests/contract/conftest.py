"""Re-use the device-link fixtures (broker config, fleet, link factory, event log)."""

from tests.devices.conftest import cfg, events, fleet, make_link  # noqa: F401
