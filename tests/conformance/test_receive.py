"""Conformance of the native transport's receive path (broker/mqtt.py) to the client-side normative statements.

Each test names the statements it checks: MQTT 3.1.1 numbers as ``3.1.1 [MQTT-x]``, MQTT 5.0 numbers as
``5.0 [MQTT-x]``. A broken packet closes the connection (MQTT 5: after a DISCONNECT with the reason code) and
delivers nothing. The fake broker sends exactly the bytes each test needs.
"""

from __future__ import annotations

import asyncio

import pytest

from broker import mqtt
from schemas.errors import (
    BusConnectionError,
    MalformedPacket,
    PacketTooLarge,
    ProtocolViolation,
)
from tests.conformance.conftest import Opened, open_connection
from tests.conformance.fake_broker import FakeBroker, connack, packet, publish


async def assert_closed(opened: Opened, v5: bool, error: type[ProtocolViolation], code: int) -> None:
    """The client closed the connection, delivered nothing, and (MQTT 5) said why with ``code`` first."""
    exc = await opened.closed_with(error)
    assert isinstance(exc, ProtocolViolation)
    assert exc.code == code
    sent = await opened.peer.closed_by_client()
    disconnects = [body for first, body in sent if first == mqtt.DISCONNECT]
    if v5:
        assert disconnects == [bytes((code,))], sent  # 5.0 §4.13: DISCONNECT with the reason, then close
    else:
        assert disconnects == [], sent  # 3.1.1 [MQTT-4.8.0-1]: just close the network connection
    assert opened.received == []


# ---------------------------------------------------------------------------------------------- data representation


async def test_invalid_utf8_topic_is_malformed_mqtt_1_5_3_1(broker: FakeBroker, v5: bool) -> None:
    """3.1.1 [MQTT-1.5.3-1] / 5.0 [MQTT-1.5.4-1]: ill-formed UTF-8 (here an encoded surrogate) closes."""
    for topic in (b"a/\xff", b"a/\xed\xa0\x80"):
        opened = await open_connection(broker, v5=v5)
        await opened.peer.send(publish(topic, b"x", v5=v5))
        await assert_closed(opened, v5, MalformedPacket, 0x81)


async def test_null_character_in_topic_is_malformed_mqtt_1_5_3_2(broker: FakeBroker, v5: bool) -> None:
    """3.1.1 [MQTT-1.5.3-2] / 5.0 [MQTT-1.5.4-2]: U+0000 in a UTF-8 string closes."""
    opened = await open_connection(broker, v5=v5)
    await opened.peer.send(publish(b"a/\x00b", b"x", v5=v5))
    await assert_closed(opened, v5, MalformedPacket, 0x81)


async def test_bom_is_not_stripped_mqtt_1_5_3_3(broker: FakeBroker, v5: bool) -> None:
    """3.1.1 [MQTT-1.5.3-3] / 5.0 [MQTT-1.5.4-3]: 0xEF 0xBB 0xBF is U+FEFF and is not skipped."""
    opened = await open_connection(broker, v5=v5)
    await opened.peer.send(publish("\ufeffa/b", b"x", v5=v5))
    await opened.received.wait(1)
    assert opened.received[0][0] == "\ufeffa/b"


async def test_remaining_length_of_five_bytes_is_malformed(broker: FakeBroker, v5: bool) -> None:
    """5.0 §1.5.5 / 3.1.1 §2.2.3: a variable byte integer has at most four bytes (a fifth is malformed)."""
    opened = await open_connection(broker, v5=v5)
    await opened.peer.send(b"\x30\x80\x80\x80\x80\x01")
    await assert_closed(opened, v5, MalformedPacket, 0x81)


# ---------------------------------------------------------------------------------------------- fixed header


@pytest.mark.parametrize(
    "raw",
    [
        b"\x41\x02\x00\x01",  # PUBACK with a reserved flag set
        b"\x91\x03\x00\x01\x00",  # SUBACK with a reserved flag set
        b"\xd1\x00",  # PINGRESP with a reserved flag set
        b"\x60\x02\x00\x01",  # PUBREL must carry flags 0010
    ],
    ids=["puback", "suback", "pingresp", "pubrel"],
)
async def test_reserved_flag_bits_close_mqtt_2_2_2_2(broker: FakeBroker, v5: bool, raw: bytes) -> None:
    """3.1.1 [MQTT-2.2.2-1] [MQTT-2.2.2-2] / 5.0 [MQTT-2.1.3-1]: reserved flags must be as listed; else close."""
    opened = await open_connection(broker, v5=v5)
    await opened.peer.send(raw)
    await assert_closed(opened, v5, MalformedPacket, 0x81)


@pytest.mark.parametrize("first", [0x00, 0x10, 0x82, 0xA2, 0xC0], ids=["reserved0", "connect", "sub", "unsub", "ping"])
async def test_packets_a_broker_never_sends_close(broker: FakeBroker, v5: bool, first: int) -> None:
    """3.1.1 §2.2.1 / 5.0 §2.1.2: packet type 0 is reserved; CONNECT, SUBSCRIBE, UNSUBSCRIBE and PINGREQ flow from
    client to server only: a Protocol Error (0x82)."""
    opened = await open_connection(broker, v5=v5)
    await opened.peer.send(bytes((first, 0)))
    await assert_closed(opened, v5, ProtocolViolation, 0x82)


async def test_packet_type_15_closes(broker: FakeBroker, v5: bool) -> None:
    """3.1.1 §2.2.1: type 15 is reserved; 5.0 §3.15: AUTH without an Authentication Method is a Protocol Error."""
    opened = await open_connection(broker, v5=v5)
    await opened.peer.send(b"\xf0\x00")
    await assert_closed(opened, v5, ProtocolViolation, 0x82)


# ---------------------------------------------------------------------------------------------- CONNACK


async def test_first_packet_must_be_connack_mqtt_3_2_0_1(broker: FakeBroker, v5: bool) -> None:
    """3.1.1 [MQTT-3.2.0-1] / 5.0 [MQTT-3.2.0-1]: a PUBLISH before the CONNACK is not accepted (nothing delivered)."""
    got: list[object] = []
    task = asyncio.create_task(
        mqtt.Connection.open(
            "127.0.0.1", broker.port, mqtt.ConnectSpec("c", v5=v5), lambda *a: got.append(a), timeout=5
        )
    )
    peer = await broker.accept()
    await peer.read_packet()
    await peer.send(publish("a/b", b"x", v5=v5) + connack(v5))
    with pytest.raises(ProtocolViolation, match="before the CONNACK"):
        await task
    assert got == []


async def test_second_connack_closes_mqtt_3_2_0_2(broker: FakeBroker, v5: bool) -> None:
    """5.0 [MQTT-3.2.0-2] (3.1.1 §3.2: one CONNACK, the first packet): a second CONNACK is a Protocol Error."""
    opened = await open_connection(broker, v5=v5)
    await opened.peer.send(connack(v5))
    await assert_closed(opened, v5, ProtocolViolation, 0x82)


async def test_connack_reserved_flags_close_mqtt_3_2_2_1(broker: FakeBroker, v5: bool) -> None:
    """5.0 [MQTT-3.2.2-1] (3.1.1 §3.2.2.1): CONNACK flag bits 7-1 are reserved and must be 0."""
    task = asyncio.create_task(
        mqtt.Connection.open("127.0.0.1", broker.port, mqtt.ConnectSpec("c", v5=v5), lambda *a: None, timeout=5)
    )
    peer = await broker.accept()
    await peer.read_packet()
    await peer.send(packet(mqtt.CONNACK, b"\x02\x00" + (b"\x00" if v5 else b"")))
    with pytest.raises(MalformedPacket, match="reserved CONNACK flag"):
        await task


async def test_session_present_without_a_session_closes_mqtt_3_2_2_4(broker: FakeBroker, v5: bool) -> None:
    """5.0 [MQTT-3.2.2-4] (3.1.1 §3.2.2.2): a clean start answered with Session Present 1 closes the connection."""
    task = asyncio.create_task(
        mqtt.Connection.open(
            "127.0.0.1", broker.port, mqtt.ConnectSpec("c", v5=v5, clean_start=True), lambda *a: None, timeout=5
        )
    )
    peer = await broker.accept()
    await peer.read_packet()
    await peer.send(connack(v5, present=True))
    with pytest.raises(ProtocolViolation, match="session present"):
        await task


async def test_connack_with_a_receive_maximum_of_zero_closes(broker: FakeBroker) -> None:
    """5.0 §3.2.2.3.3: a Receive Maximum of 0 is a Protocol Error."""
    task = asyncio.create_task(
        mqtt.Connection.open("127.0.0.1", broker.port, mqtt.ConnectSpec("c", v5=True), lambda *a: None, timeout=5)
    )
    peer = await broker.accept()
    await peer.read_packet()
    await peer.send(connack(True, props={mqtt.RECEIVE_MAXIMUM: 0}))
    with pytest.raises(ProtocolViolation):
        await task


async def test_a_311_connack_of_the_wrong_length_is_malformed(broker: FakeBroker) -> None:
    """3.1.1 §3.2.1: the CONNACK's remaining length is 2."""
    task = asyncio.create_task(
        mqtt.Connection.open("127.0.0.1", broker.port, mqtt.ConnectSpec("c", v5=False), lambda *a: None, timeout=5)
    )
    peer = await broker.accept()
    await peer.read_packet()
    await peer.send(packet(mqtt.CONNACK, b"\x00\x00\x00"))
    with pytest.raises(MalformedPacket):
        await task


# ---------------------------------------------------------------------------------------------- PUBLISH


async def test_qos_bits_11_are_malformed_mqtt_3_3_1_4(broker: FakeBroker, v5: bool) -> None:
    """3.1.1 [MQTT-3.3.1-4] / 5.0 [MQTT-3.3.1-4]: both QoS bits set is a Malformed Packet (was delivered as QoS 3)."""
    opened = await open_connection(broker, v5=v5)
    body = b"\x00\x03a/b\x00\x01" + (b"\x00" if v5 else b"") + b"x"
    await opened.peer.send(packet(0x36, body))
    await assert_closed(opened, v5, MalformedPacket, 0x81)


async def test_dup_on_qos_0_is_malformed_mqtt_3_3_1_2(broker: FakeBroker, v5: bool) -> None:
    """3.1.1 [MQTT-3.3.1-2] / 5.0 [MQTT-3.3.1-2]: DUP must be 0 on QoS 0."""
    opened = await open_connection(broker, v5=v5)
    raw = bytearray(publish("a/b", b"x", v5=v5))
    raw[0] |= 0x08
    await opened.peer.send(bytes(raw))
    await assert_closed(opened, v5, MalformedPacket, 0x81)


async def test_wildcards_in_a_topic_name_close_mqtt_3_3_2_2(broker: FakeBroker, v5: bool) -> None:
    """3.1.1 [MQTT-3.3.2-2] / 5.0 [MQTT-3.3.2-2]: a topic name has no wildcard characters (5.0: 0x90)."""
    opened = await open_connection(broker, v5=v5)
    await opened.peer.send(publish("a/+/b", b"x", v5=v5))
    await assert_closed(opened, v5, ProtocolViolation, 0x90)


async def test_empty_topic_name_closes_mqtt_4_7_3_1(broker: FakeBroker, v5: bool) -> None:
    """3.1.1 [MQTT-4.7.3-1]: topic names are at least one character; 5.0 [MQTT-3.3.2-... §3.3.2.3.4]: an empty
    topic needs a Topic Alias, and this client allows none."""
    opened = await open_connection(broker, v5=v5)
    await opened.peer.send(publish(b"", b"x", v5=v5))
    await assert_closed(opened, v5, MalformedPacket, 0x81)


async def test_packet_identifier_zero_is_malformed_mqtt_2_3_1_1(broker: FakeBroker, v5: bool) -> None:
    """3.1.1 [MQTT-2.3.1-1] / 5.0 [MQTT-2.2.1-4]: a QoS > 0 PUBLISH carries a non-zero packet identifier."""
    opened = await open_connection(broker, v5=v5)
    await opened.peer.send(publish("a/b", b"x", qos=1, mid=0, v5=v5))
    await assert_closed(opened, v5, MalformedPacket, 0x81)


async def test_topic_running_past_the_packet_is_malformed(broker: FakeBroker, v5: bool) -> None:
    """The issue's first defect: a topic length past the packet's end was delivered as a made-up message taken from
    the next packet's bytes. 3.1.1 [MQTT-4.8.0-1] / 5.0 §4.13: close, deliver nothing."""
    opened = await open_connection(broker, v5=v5)
    bad = packet(mqtt.PUBLISH, b"\x00\x20a/b")  # says 32 bytes of topic, has 3
    await opened.peer.send(bad + publish("x/y", b"next packet's bytes" * 3, v5=v5))
    await assert_closed(opened, v5, MalformedPacket, 0x81)


async def test_properties_running_past_the_packet_are_malformed(broker: FakeBroker) -> None:
    """5.0 §2.2.2: the property length lies within the packet."""
    opened = await open_connection(broker, v5=True)
    await opened.peer.send(packet(mqtt.PUBLISH, b"\x00\x03a/b\x10\x03\x00\x01x"))
    await assert_closed(opened, True, MalformedPacket, 0x81)


async def test_a_repeated_property_is_a_protocol_error(broker: FakeBroker) -> None:
    """5.0 §2.2.2.2: a property other than User Property / Subscription Identifier appears once at most."""
    opened = await open_connection(broker, v5=True)
    props = b"\x03\x00\x01a\x03\x00\x01b"
    await opened.peer.send(packet(mqtt.PUBLISH, b"\x00\x03a/b" + mqtt.varint(len(props)) + props + b"x"))
    await assert_closed(opened, True, ProtocolViolation, 0x82)


async def test_a_topic_alias_this_client_never_allowed_closes_mqtt_3_1_2_27(broker: FakeBroker) -> None:
    """5.0 [MQTT-3.1.2-27]: without a Topic Alias Maximum from the client the server sends no alias (0x94)."""
    opened = await open_connection(broker, v5=True)
    props = b"\x23\x00\x01"
    await opened.peer.send(packet(mqtt.PUBLISH, b"\x00\x03a/b" + mqtt.varint(len(props)) + props + b"x"))
    await assert_closed(opened, True, ProtocolViolation, 0x94)


async def test_invalid_utf8_in_a_string_property_is_malformed_mqtt_1_5_4_1(broker: FakeBroker) -> None:
    """5.0 [MQTT-1.5.4-1]: a UTF-8 string property (content type) that is not UTF-8 closes."""
    opened = await open_connection(broker, v5=True)
    props = b"\x03\x00\x02\xc3\x28"
    await opened.peer.send(packet(mqtt.PUBLISH, b"\x00\x03a/b" + mqtt.varint(len(props)) + props + b"x"))
    await assert_closed(opened, True, MalformedPacket, 0x81)


async def test_valid_packets_before_a_bad_one_are_delivered_once(broker: FakeBroker, v5: bool) -> None:
    """What came whole before the broken packet is delivered, in order; nothing of or after it is."""
    opened = await open_connection(broker, v5=v5)
    good = publish("a/1", b"one", v5=v5) + publish("a/2", b"two", qos=1, mid=9, v5=v5)
    await opened.peer.send(good + packet(0x36, b"\x00\x01a\x00\x01x") + publish("a/3", b"three", v5=v5))
    with pytest.raises(MalformedPacket):
        await asyncio.wait_for(asyncio.shield(opened.conn.closed), 5)
    assert [(t, p) for t, p, *_ in opened.received] == [("a/1", b"one"), ("a/2", b"two")]


# ---------------------------------------------------------------------------------------------- acknowledgements


async def test_zero_length_puback_is_malformed(broker: FakeBroker, v5: bool) -> None:
    """The issue: a zero-length PUBACK took its packet id from the next packet. 3.1.1 §3.4.1 (remaining length 2)
    / 5.0 §3.4.2.1: a PUBACK has at least its packet identifier."""
    opened = await open_connection(broker, v5=v5)
    _, fut = opened.conn.publish("a/b", b"x", 1, track=True)
    await opened.peer.expect(mqtt.PUBLISH)
    await opened.peer.send(b"\x40\x00" + publish("x/y", b"\x00\x01", v5=v5))
    await assert_closed(opened, v5, MalformedPacket, 0x81)
    assert fut is not None
    with pytest.raises(BusConnectionError):
        await fut  # the publish was not acknowledged: its caller learns it


async def test_pubrec_for_a_qos2_publish_never_sent_closes(broker: FakeBroker, v5: bool) -> None:
    """This client never publishes at QoS 2: a PUBREC / PUBCOMP answers nothing of ours (Protocol Error)."""
    opened = await open_connection(broker, v5=v5)
    await opened.peer.send(b"\x50\x02\x00\x07")
    await assert_closed(opened, v5, ProtocolViolation, 0x82)


async def test_pingresp_with_a_body_is_malformed(broker: FakeBroker, v5: bool) -> None:
    """3.1.1 §3.13.1 / 5.0 §3.13.1: PINGRESP has remaining length 0."""
    opened = await open_connection(broker, v5=v5)
    await opened.peer.send(b"\xd0\x01\x00")
    await assert_closed(opened, v5, MalformedPacket, 0x81)


# ---------------------------------------------------------------------------------------------- packet size


async def test_maximum_packet_size_is_announced_mqtt_3_1_2_24(broker: FakeBroker) -> None:
    """5.0 §3.1.2.11.4: the client announces its Maximum Packet Size, which binds the server [MQTT-3.1.2-24]."""
    opened = await open_connection(broker, v5=True, max_packet_size=1000)
    props, _ = mqtt.read_properties(opened.connect, 10)
    assert props[mqtt.MAXIMUM_PACKET_SIZE] == 1000


async def test_oversize_packet_closes_with_0x95(broker: FakeBroker, v5: bool) -> None:
    """5.0 §3.1.2.11.4 / §4.13: a packet above the announced Maximum Packet Size is a Protocol Error, DISCONNECT
    0x95 (3.1.1: closed); judged on the length header, before the body arrives."""
    opened = await open_connection(broker, v5=v5, max_packet_size=1000)
    await opened.peer.send(b"\x30\xe8\x07")  # a PUBLISH of remaining length 1000: 1003 bytes in all
    await assert_closed(opened, v5, PacketTooLarge, 0x95)


async def test_a_268_mb_length_header_is_never_buffered(broker: FakeBroker, v5: bool) -> None:
    """The issue: a 268 MB length header was buffered without limit. Closed on the header alone."""
    opened = await open_connection(broker, v5=v5)
    await opened.peer.send(b"\x30\xff\xff\xff\x7f" + b"\x00" * 1000)
    await assert_closed(opened, v5, PacketTooLarge, 0x95)


# ---------------------------------------------------------------------------------------------- DISCONNECT


async def test_a_disconnect_from_the_server_ends_with_its_reason(broker: FakeBroker) -> None:
    """5.0 §3.14: the server's reason and reason string reach the caller; the client answers nothing (the
    connection is over)."""
    opened = await open_connection(broker, v5=True)
    props = mqtt.encode_properties({mqtt.REASON_STRING: "maintenance"})
    await opened.peer.send(packet(mqtt.DISCONNECT, b"\x8b" + props))
    exc = await opened.closed_with(BusConnectionError)
    assert "Server shutting down" in str(exc)
    assert "maintenance" in str(exc)
    assert [first for first, _ in await opened.peer.closed_by_client()] == []


async def test_a_disconnect_from_a_311_server_is_a_protocol_violation(broker: FakeBroker) -> None:
    """3.1.1 §3.14: DISCONNECT flows from client to server only."""
    opened = await open_connection(broker, v5=False)
    await opened.peer.send(b"\xe0\x00")
    await assert_closed(opened, False, ProtocolViolation, 0x82)
