"""Bridges: real devices that speak their own protocol, each attached to the bus as a wearbus device process.

* :mod:`devices.bridges.owntracks`: the OwnTracks phone app (JSON over MQTT) as a wearbus phone;
* :mod:`devices.bridges.colmi`: the Colmi R02 ring (16-byte BLE packets) as a wearbus ring, with a byte-exact
  emulator of the ring's GATT side so the bridge runs without a radio.
"""
