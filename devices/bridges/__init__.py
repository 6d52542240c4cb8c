"""Bridges from real device protocols to the bus: each runs as its own process on the device SDK.

- :mod:`devices.bridges.owntracks`: the OwnTracks phone app (JSON over MQTT, ``owntracks/{user}/{device}``).
"""
