"""Device-side logic (shelf and door controllers) over a small HAL with in-memory drivers.

Depends on nothing in `station/` except the shared wire module `station.devices.envelope`.
"""
