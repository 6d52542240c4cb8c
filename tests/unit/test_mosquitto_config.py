"""Generated Mosquitto config: mosquitto.conf, password hashes and file, the pattern ACL, deploy files."""

from __future__ import annotations

import base64
import json
import re
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.mosquitto import (
    AgentCredential,
    Credentials,
    DeviceCredential,
    Limits,
    MosquittoSettings,
    OperatorCredential,
    TlsListener,
    compose_settings,
    config_from_cli,
    device_assignments,
    generate_password,
    hash_password,
    health_filters,
    new_credentials,
    parse_device_spec,
    password_variable,
    render_acl,
    render_conf,
    render_credentials_env,
    render_password_file,
    settings_for,
    systemd_settings,
    verify_password,
    write_config,
)
from schemas.errors import ConfigError
from schemas.events import EVENTS
from schemas.health import carries_health
from schemas.topics import DeviceId, Kind, matches
from tests.conftest import needs_binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

# Passwords as a person or a device might choose them: any text a single line can hold.
passwords = st.text(st.characters(blacklist_characters="\n\r\0", blacklist_categories=["Cs"]), min_size=1)
names = st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True)
devices = st.builds(DeviceId, names, st.sampled_from(list(Kind)), names)


def conf_lines(text: str) -> list[str]:
    """The setting lines of a config, without comments and blank lines."""
    return [line for line in text.splitlines() if line and not line.startswith("#")]


# ------------------------------------------------------------------------------------------ password hash


def test_hash_matches_a_known_mosquitto_passwd_line() -> None:
    # Made by mosquitto_passwd 2.0.11: "alice:$7$101$mhlk...$/o/w..." for the password "secret".
    salt64 = "mhlkrCwwWnQHVgOo"
    digest64 = "/o/wQqwRoLaNAw9JLjTH4V4hsY66cdFFsyQpASTowrl9dksLe78c6K9l2jBF3dX6pdRkhEftwP/kTM45oa+zJw=="
    expected = f"$7$101${salt64}${digest64}"
    assert hash_password("secret", salt=base64.b64decode(salt64)) == expected
    assert verify_password("secret", expected)
    assert not verify_password("Secret", expected)


def test_hash_format_is_what_mosquitto_passwd_writes() -> None:
    encoded = hash_password("pw")
    assert re.fullmatch(r"\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==", encoded)
    assert hash_password("pw") != encoded  # a fresh salt each time


@given(password=passwords, other=passwords, salt=st.binary(min_size=12, max_size=12))
def test_verify_accepts_exactly_the_hashed_password(password: str, other: str, salt: bytes) -> None:
    encoded = hash_password(password, salt=salt)
    assert verify_password(password, encoded)
    assert verify_password(other, encoded) == (other == password)


@pytest.mark.parametrize(
    "encoded",
    ["", "$6$abc$def", "$7$x$AAAA$AAAA", "$7$101$!!!$AAAA", "$7$101$AAAA", "7$101$AAAA$AAAA", "plain"],
)
def test_verify_rejects_malformed_hashes(encoded: str) -> None:
    assert not verify_password("pw", encoded)


@needs_binary("mosquitto_passwd", "mosquitto")
@pytest.mark.parametrize("password", ["secret", "with spaces and : colons", "pässwörd ∑ €", "x" * 200])
def test_hash_agrees_with_the_real_mosquitto_passwd(tmp_path: Path, password: str) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "alice/ring/ring-1", password], check=True, timeout=30)
    username, theirs = passwd.read_text(encoding="utf-8").strip().split(":", 1)
    assert username == "alice/ring/ring-1"
    assert verify_password(password, theirs)
    # With their salt, our hash is byte for byte theirs.
    salt = base64.b64decode(theirs.split("$")[3])
    assert hash_password(password, salt=salt) == theirs


def test_password_file_has_one_line_per_login() -> None:
    salts = iter([b"\x01" * 12, b"\x02" * 12])
    text = render_password_file([("agent", "a-pw"), ("alice/ring/ring-1", "r-pw")], salt=lambda: next(salts))
    lines = text.splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["agent", "alice/ring/ring-1"]
    assert lines[0].split(":", 1)[1] == hash_password("a-pw", salt=b"\x01" * 12)
    assert verify_password("r-pw", lines[1].split(":", 1)[1])
    assert text.endswith("\n")


def test_password_file_refuses_a_colon_in_a_username() -> None:
    with pytest.raises(ConfigError):
        render_password_file([("a:b", "pw")])


def test_generated_passwords_are_long_random_and_url_safe() -> None:
    made = {generate_password() for _ in range(50)}
    assert len(made) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{24}", p) for p in made)
    with pytest.raises(ConfigError):
        generate_password(4)


# ------------------------------------------------------------------------------------------- credentials


def test_device_login_is_user_kind_device() -> None:
    cred = DeviceCredential("alice", "ring", "ring-1", "pw")
    assert cred.username == cred.client_id == "alice/ring/ring-1"
    assert cred.username == DeviceId("alice", Kind.RING, "ring-1").client_id
    assert cred.prefix == "wb/v1/alice/ring/ring-1"
    assert "pw" not in repr(cred)


@pytest.mark.parametrize(
    ("user", "kind", "device", "password"),
    [
        ("Alice", "ring", "r1", "pw"),
        ("alice", "watch", "r1", "pw"),
        ("alice", "ring", "r/1", "pw"),
        ("alice", "ring", "r+1", "pw"),
        ("alice", "ring", "r1", ""),
        ("alice", "ring", "r1", "line\nbreak"),
    ],
)
def test_bad_device_credentials_are_refused(user: str, kind: str, device: str, password: str) -> None:
    with pytest.raises(ConfigError):
        DeviceCredential(user, kind, device, password)


@pytest.mark.parametrize("name", ["", "a/b", "a:b", "a+b", "a#b", "x" * 65, "a b"])
def test_bad_role_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError):
        AgentCredential(name, "pw")
    with pytest.raises(ConfigError):
        OperatorCredential(name, "pw")


def test_new_credentials_for_one_user() -> None:
    counter = iter(range(100))
    creds = new_credentials("alice", ["ring:ring-1", "glasses:g1"], password=lambda: f"pw-{next(counter)}")
    assert [u for u, _ in creds.logins()] == ["alice/ring/ring-1", "alice/glasses/g1", "agent", "tap"]
    assert len({p for _, p in creds.logins()}) == 4
    assert creds.device("alice", "glasses", "g1").password == "pw-1"
    with pytest.raises(ConfigError):
        creds.device("alice", "phone", "p1")


def test_duplicate_logins_are_refused() -> None:
    with pytest.raises(ConfigError):
        new_credentials("alice", ["ring:r1", "ring:r1"])
    with pytest.raises(ConfigError):
        new_credentials("alice", [], agents=["x"], operators=["x"])


@pytest.mark.parametrize("spec", ["ring", "ring:", ":r1", "watch:r1", "ring:R1", "ring:r1:x"])
def test_bad_device_specs_are_refused(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_device_spec(spec)


def test_device_spec_parses() -> None:
    assert parse_device_spec("earphones:buds-1") == ("earphones", "buds-1")


# --------------------------------------------------------------------------------------------------- ACL


def acl_rules(acl: str, username: str) -> list[tuple[str, str]]:
    """The (access, topic) rules mosquitto applies to ``username``: patterns with %u filled in, plus the
    topic lines of that user's block."""
    rules: list[tuple[str, str]] = []
    current: str | None = None
    for line in conf_lines(acl):
        words = line.split(" ", 2)
        if words[0] == "user":
            current = words[1]
        elif words[0] == "pattern":
            rules.append((words[1], words[2].replace("%u", username)))
        elif words[0] == "topic" and current == username:
            rules.append((words[1], words[2]))
    return rules


def allowed(acl: str, username: str, access: str, topic: str) -> bool:
    return any(matches(pattern, topic) and kind in {access, "readwrite"} for kind, pattern in acl_rules(acl, username))


def device_topics(dev: DeviceId) -> dict[str, list[str]]:
    return {
        "write": [
            f"{dev.prefix}/evt/sensor/hr",
            f"{dev.prefix}/evt/gesture/pinch",
            f"{dev.prefix}/ack",
            f"{dev.prefix}/state",
        ],
        "read": [f"{dev.prefix}/cmd/haptic", f"{dev.prefix}/cmd/display.card"],
    }


@given(me=devices, other=devices)
@settings(max_examples=200)
def test_acl_confines_each_device_to_its_own_prefix(me: DeviceId, other: DeviceId) -> None:
    acl = render_acl()
    mine, theirs = device_topics(me), device_topics(other)
    for topic in mine["write"]:
        assert allowed(acl, me.client_id, "write", topic)
    for topic in mine["read"]:
        assert allowed(acl, me.client_id, "read", topic)
        assert not allowed(acl, me.client_id, "write", topic)
    assert allowed(acl, me.client_id, "read", "wb/v1/_agent/a1/state")
    assert not allowed(acl, me.client_id, "write", "wb/v1/_agent/a1/state")
    assert not allowed(acl, me.client_id, "write", f"wb/v1/{me.user}/agent/context")
    if other != me:
        for topic in theirs["write"] + theirs["read"]:
            assert not allowed(acl, me.client_id, "write", topic)
            assert not allowed(acl, me.client_id, "read", topic)


def test_acl_agent_and_tap_roles() -> None:
    acl = render_acl(agents=["agent", "agent-2"], operators=["tap"])
    dev = DeviceId("alice", Kind.RING, "ring-1")
    for agent in ("agent", "agent-2"):
        for topic in [*device_topics(dev)["write"]]:
            assert allowed(acl, agent, "read", topic)
        assert allowed(acl, agent, "write", f"{dev.prefix}/cmd/haptic")
        assert allowed(acl, agent, "write", "wb/v1/alice/agent/context")
        assert allowed(acl, agent, "write", "wb/v1/_agent/a1/state")
        assert allowed(acl, agent, "read", "wb/v1/_agent/a2/state")
        assert allowed(acl, agent, "write", "wb/v1/_dlq/decode")
        assert not allowed(acl, agent, "write", f"{dev.prefix}/evt/sensor/hr")
        assert not allowed(acl, agent, "write", f"{dev.prefix}/state")
    assert allowed(acl, "tap", "read", f"{dev.prefix}/cmd/haptic")
    assert allowed(acl, "tap", "read", "wb/v1/_dlq/decode")
    assert allowed(acl, "tap", "read", "$SYS/broker/uptime")
    assert not allowed(acl, "tap", "write", f"{dev.prefix}/cmd/haptic")
    assert not allowed(acl, "nobody", "read", f"{dev.prefix}/cmd/haptic")


def test_acl_lines_are_the_documented_scheme() -> None:
    lines = conf_lines(render_acl())
    assert lines[:5] == [
        "pattern write wb/v1/%u/evt/#",
        "pattern write wb/v1/%u/ack",
        "pattern write wb/v1/%u/state",
        "pattern read wb/v1/%u/cmd/#",
        "pattern read wb/v1/_agent/+/state",
    ]
    assert "user agent" in lines
    assert "user tap" in lines
    assert not any("%c" in line for line in lines)  # the client id is never trusted for identity


# -------------------------------------------------------------------------------------------------- conf


def test_conf_has_the_measured_settings() -> None:
    lines = conf_lines(render_conf(MosquittoSettings.in_dir("/srv/wb", port=18830)))
    for expected in [
        "per_listener_settings false",
        "listener 18830 127.0.0.1",
        "allow_anonymous false",
        "password_file /srv/wb/passwd",
        "acl_file /srv/wb/acl",
        "use_username_as_clientid true",
        "allow_zero_length_clientid false",
        "set_tcp_nodelay true",
        "persistence true",
        "persistence_location /srv/wb/data/",
        "autosave_on_changes true",
        "autosave_interval 1",
        "persistent_client_expiration 14d",
        "max_packet_size 263168",
        "max_queued_messages 100000",
        "max_queued_bytes 268435456",
        "max_inflight_messages 100",
        "max_keepalive 120",
    ]:
        assert expected in lines, expected
    assert lines[0] == "per_listener_settings false"
    assert not any(line.startswith(("cafile", "certfile", "keyfile")) for line in lines)


def test_conf_comments_explain_the_pitfalls() -> None:
    text = render_conf(MosquittoSettings.in_dir("/srv/wb"))
    for reason in ["P1", "44-88 ms", "P2", "max_queued_messages 1000", "G5", "kill -9", "0x95"]:
        assert reason in text, reason


def test_conf_tls_listener_limits_and_extras() -> None:
    tls = TlsListener("/c/ca.crt", "/c/server.crt", "/c/server.key", port=8883, require_certificate=True)
    limits = Limits(max_packet_size=16384, max_queued_messages=0, max_inflight_messages=20, max_keepalive=60)
    lines = conf_lines(
        render_conf(MosquittoSettings.in_dir("/srv/wb", tls=tls, limits=limits, extra_lines=["log_type all"]))
    )
    tls_at = lines.index("listener 8883")
    assert lines[tls_at + 1 : tls_at + 6] == [
        "cafile /c/ca.crt",
        "certfile /c/server.crt",
        "keyfile /c/server.key",
        "tls_version tlsv1.2",
        "require_certificate true",
    ]
    assert {
        "max_packet_size 16384",
        "max_queued_messages 0",
        "max_inflight_messages 20",
        "max_keepalive 60",
    } <= set(lines)
    assert lines[-1] == "log_type all"


def test_conf_options() -> None:
    s = MosquittoSettings("/p", "/a", "/d/", host=None, use_username_as_clientid=False, autosave_on_changes=False)
    lines = conf_lines(render_conf(s))
    assert "listener 1883" in lines
    assert "use_username_as_clientid true" not in lines
    assert "autosave_on_changes false" in lines
    assert "persistence_location /d/" in lines


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": 0},
        {"port": 70000},
        {"persistent_client_expiration": "14 days"},
        {"tls": TlsListener("a", "b", "c", port=1883)},
        {"log_dest": ""},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        MosquittoSettings("/p", "/a", "/d", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"max_packet_size": 10}, {"max_queued_messages": -1}, {"max_keepalive": 5}])
def test_bad_limits_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        Limits(**kwargs)


def test_layouts() -> None:
    assert settings_for("local", "/x").password_file == "/x/passwd"
    assert settings_for("systemd", "/x") == systemd_settings()
    assert settings_for("compose", "/x", port=1884) == compose_settings(port=1884)
    assert compose_settings().host is None
    assert systemd_settings().host == "127.0.0.1"
    with pytest.raises(ConfigError):
        settings_for("k8s", "/x")


# ------------------------------------------------------------------------------------------------- files


def test_write_config_writes_private_files(tmp_path: Path) -> None:
    creds = new_credentials("alice", ["ring:ring-1"])
    written = write_config(tmp_path / "out", creds, chown=False)
    assert written.conf.read_text(encoding="utf-8") == render_conf(MosquittoSettings.in_dir(tmp_path / "out"))
    for path in (written.password_file, written.acl_file, written.credentials_file):
        assert path is not None
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert written.data_dir == tmp_path / "out" / "data"
    assert written.data_dir.is_dir()
    stored = dict(line.split(":", 1) for line in written.password_file.read_text(encoding="utf-8").splitlines())
    for username, password in creds.logins():
        assert verify_password(password, stored[username])
    assert written.acl_file.read_text(encoding="utf-8") == render_acl(devices=[("alice/ring/ring-1", "alice")])
    assert "chown mosquitto:" in written.notes[0]


def test_write_config_without_secrets_or_data_dir(tmp_path: Path) -> None:
    written = write_config(
        tmp_path,
        new_credentials("bob", []),
        compose_settings(),
        prepare_data_dir=False,
        write_secrets=False,
        chown=False,
    )
    assert written.credentials_file is None
    assert written.data_dir is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acl", "mosquitto.conf", "passwd"]
    assert "password_file /mosquitto/config/passwd" in written.conf.read_text(encoding="utf-8")


def test_credentials_env_names_every_login() -> None:
    creds = Credentials(
        devices=(DeviceCredential("alice", "ring", "ring-1", "abc-DEF_123"),),
        agents=(AgentCredential("agent", "with space"),),
    )
    text = render_credentials_env(creds)
    assert "WB_PW_ALICE_RING_RING_1=abc-DEF_123" in text.splitlines()
    assert "WB_PW_AGENT='with space'" in text.splitlines()
    assert password_variable("alice/ring/ring-1") == "WB_PW_ALICE_RING_RING_1"
    with pytest.raises(ConfigError):
        render_credentials_env(Credentials(agents=(AgentCredential("agent", "it's"),)))
    clash = Credentials(
        devices=(DeviceCredential("x-ring", "ring", "y", "p"), DeviceCredential("x", "ring", "ring-y", "p"))
    )
    with pytest.raises(ConfigError):
        render_credentials_env(clash)


# ------------------------------------------------------------------------------------------ deploy files


def test_deploy_conf_is_what_the_generator_makes() -> None:
    assert (DEPLOY / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8") == render_conf(systemd_settings())


def test_deploy_acl_example_is_what_the_generator_makes() -> None:
    assert (DEPLOY / "mosquitto" / "acl.example").read_text(encoding="utf-8") == render_acl()


# ------------------------------------------------------------------------------------------ command line


def test_config_from_cli_local_layout(tmp_path: Path) -> None:
    counter = iter(range(100))
    paths = config_from_cli(
        out_dir=tmp_path,
        users=["alice"],
        devices=["ring:ring-1", "glasses:g1"],
        port=18830,
        password=lambda: f"password-{next(counter)}",
    )
    names = [p.name for p in paths]
    assert names == ["mosquitto.conf", "passwd", "acl", "credentials.env", "credentials.json", "data"]
    lines = conf_lines((tmp_path / "mosquitto.conf").read_text(encoding="utf-8"))
    assert "listener 18830 127.0.0.1" in lines
    assert f"password_file {tmp_path}/passwd" in lines
    logins = json.loads((tmp_path / "credentials.json").read_text(encoding="utf-8"))["logins"]
    assert [(x["username"], x["role"]) for x in logins] == [
        ("alice/ring/ring-1", "device"),
        ("alice/glasses/g1", "device"),
        ("agent", "agent"),
        ("tap", "operator"),
    ]
    assert logins[0]["env"] == "WB_PW_ALICE_RING_RING_1"
    stored = dict(line.split(":", 1) for line in (tmp_path / "passwd").read_text(encoding="utf-8").splitlines())
    assert all(verify_password(x["password"], stored[x["username"]]) for x in logins)


def test_config_from_cli_layouts_and_tls(tmp_path: Path) -> None:
    config_from_cli(out_dir=tmp_path / "c", users=["alice"], devices=["ring:r1"], layout="compose")
    compose = conf_lines((tmp_path / "c" / "mosquitto.conf").read_text(encoding="utf-8"))
    assert "listener 1883" in compose  # every interface of the container, whatever --host says
    assert not (tmp_path / "c" / "data").exists()
    config_from_cli(out_dir=tmp_path / "s", users=["alice"], devices=[], layout="systemd", tls_port=8884)
    systemd = conf_lines((tmp_path / "s" / "mosquitto.conf").read_text(encoding="utf-8"))
    assert "listener 8884" in systemd
    assert "cafile /etc/wearbus/mosquitto/certs/ca.crt" in systemd
    ca = tmp_path / "ca.crt"
    config_from_cli(out_dir=tmp_path / "t", users=["alice"], devices=[], host="*", cafile=ca, certfile=ca, keyfile=ca)
    local = conf_lines((tmp_path / "t" / "mosquitto.conf").read_text(encoding="utf-8"))
    assert {"listener 1883", "listener 8883", f"cafile {ca}"} <= set(local)
    with pytest.raises(ConfigError):
        config_from_cli(out_dir=tmp_path / "x", users=["alice"], devices=[], cafile=ca)
    with pytest.raises(ConfigError):
        config_from_cli(out_dir=tmp_path / "x", users=["alice"], devices=[], tls_port=8883)


def test_devices_of_several_users_need_the_user_in_the_spec() -> None:
    assert device_assignments(["alice", "bob"], ["alice:ring:r1", "bob:phone:p1"]) == [
        ("alice", "ring", "r1"),
        ("bob", "phone", "p1"),
    ]
    assert device_assignments(["alice"], ["ring:r1"]) == [("alice", "ring", "r1")]
    for users, spec in [(["alice", "bob"], "ring:r1"), (["alice"], "carol:ring:r1"), (["Alice"], "ring:r1")]:
        with pytest.raises(ConfigError):
            device_assignments(users, [spec])


def test_the_acl_denies_health_topics_to_taps_unless_configured() -> None:
    filters = health_filters()
    assert "wb/v1/+/ring/+/evt/sensor/hr" in filters
    assert "wb/v1/+/agent/health" in filters
    assert not any(matches(f, "wb/v1/alice/ring/r1/evt/sensor/steps") for f in filters)
    for (kind, cls, name), model in EVENTS.items():
        topic = f"wb/v1/alice/{kind}/d1/evt/{cls}/{name}"
        assert any(matches(f, topic) for f in filters) == carries_health(model), topic
    acl = render_acl(operators=["tap", "clinic"], health_operators=["clinic"], apps=[("alice/phone/p1", "alice")])
    tap_lines = conf_lines(acl.split("user tap")[1].split("user clinic")[0])
    assert [line.removeprefix("topic deny ") for line in tap_lines if line.startswith("topic deny")] == filters
    clinic_block = acl.split("user clinic")[1].split("\nuser ")[0]
    assert "topic deny" not in clinic_block
    assert "user alice/phone/p1\ntopic read wb/v1/alice/agent/context\ntopic read wb/v1/alice/agent/health" in acl
    assert allowed(acl, "agent", "write", "wb/v1/alice/agent/health")
    with pytest.raises(ConfigError):
        render_acl(apps=[("bob/phone/p1", "alice")])
