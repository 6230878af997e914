"""devstack against the real binaries: the session fixtures, process groups, restarts, failures."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from tracker_ws.domain.errors import BackendUnavailable
from tracker_ws_dev import stack as devstack

REPO_ROOT = Path(devstack.__file__).resolve().parent.parent


def _read_pid(path: Path) -> int:
    devstack.wait_for(
        lambda: path.exists() and path.read_text().strip() != "", 5, what=f"pid in {path}"
    )
    return int(path.read_text().strip())


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port held by a plain listening socket that never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


# -- the session fixtures --------------------------------------------------------------------


async def test_broker_produce_consume_round_trip(broker_url: str) -> None:
    topic = f"devstack-{uuid.uuid4().hex}"
    await devstack.create_topics(broker_url, {topic: 3})
    await devstack.create_topics(broker_url, {topic: 3})  # already exists: not an error
    bootstrap = devstack.bootstrap_servers(broker_url)

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b'{"vehicleId":"v1"}', key=b"v1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        record = await asyncio.wait_for(consumer.getone(), timeout=15)
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"v1", b'{"vehicleId":"v1"}')
    assert record.offset == meta.offset


def test_redis_fixture_answers_and_is_not_the_shared_one(
    redis_url: str, redis_server: devstack.RedisServer | None
) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        assert client.ping()
        key = f"devstack:{uuid.uuid4().hex}"
        assert client.set(key, "42", ex=60)
        assert client.get(key) == b"42"
        client.delete(key)
        if redis_server is not None:
            # Started by us: a private server, never the machine's shared Redis.
            assert redis_server.port != 6379
            assert urlparse(redis_url).port == redis_server.port
            assert int(client.info("server")["process_id"]) == redis_server.process.pid
    finally:
        client.close()


def test_session_handles_match_urls(
    broker: devstack.Broker | None, broker_url: str, redis_server: devstack.RedisServer | None
) -> None:
    if broker is not None:
        assert broker_url == f"kafka://127.0.0.1:{broker.port}"
        assert broker.alive()
    if redis_server is not None:
        assert redis_server.alive()
    assert devstack.broker_ready(broker_url)


# -- ManagedProcess ---------------------------------------------------------------------------


def test_kill_leaves_no_process_in_the_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    proc = devstack.ManagedProcess(
        ["sh", "-c", f"sleep 300 & echo $! > {pid_file}; wait"], log_path=tmp_path / "sh.log"
    )
    child = _read_pid(pid_file)
    assert proc.alive() and devstack.pid_alive(child)
    assert os.getpgid(child) == proc.pgid == proc.pid

    code = proc.kill()

    assert code == -9
    assert not proc.alive()
    assert not devstack.pid_alive(proc.pid)
    assert not devstack.pid_alive(child)  # the grandchild went down with the group
    assert not proc.group_alive()


def test_terminate_escalates_to_sigkill_for_the_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # SIG_IGN for TERM is inherited through exec, so neither the shell nor sleep will stop.
    script = f"trap '' TERM; sleep 300 & echo $! > {pid_file}; wait"
    with devstack.ManagedProcess(["sh", "-c", script], log_path=tmp_path / "sh.log") as proc:
        child = _read_pid(pid_file)
        code = proc.terminate(timeout=0.5)
    assert code == -9
    assert not devstack.pid_alive(child)
    assert not proc.group_alive()


def test_child_started_from_a_short_lived_thread_outlives_that_thread(tmp_path: Path) -> None:
    # The parent-death signal fires when the thread that forked the child exits: devstack must
    # fork from a thread that lives as long as the process (asyncio.to_thread, thread pools).
    started: list[devstack.ManagedProcess] = []
    tids: list[int] = []

    def start() -> None:
        tids.append(threading.get_native_id())
        proc = devstack.ManagedProcess(["sleep", "300"], log_path=tmp_path / "s.log")
        started.append(proc)
        # Past the wrapper's prctl, so that this thread's exit would count.
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        devstack.wait_for(lambda: cmdline.read_bytes().startswith(b"sleep"), 5, what="exec")

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    # join() returns a moment before the OS thread is gone: wait for the kernel's view.
    task = Path(f"/proc/self/task/{tids[0]}")
    devstack.wait_for(lambda: not task.exists(), 5, what="the starting thread to exit")
    with started[0] as proc, pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.5)  # the signal is sent as the thread exits: it would be dead by now
    assert not proc.alive()


def test_bogus_binary_raises_backend_unavailable(tmp_path: Path) -> None:
    log = tmp_path / "bogus.log"
    with pytest.raises(BackendUnavailable) as info:
        devstack.ManagedProcess([str(tmp_path / "no-such-binary")], log_path=log)
    message = str(info.value)
    assert "no-such-binary" in message
    assert str(log) in message
    assert "No such file" in message  # the log tail carries the OS error


def test_atexit_hook_stops_children_of_an_exiting_python(tmp_path: Path) -> None:
    pid_file = tmp_path / "orphan.pid"
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from tracker_ws_dev import stack as devstack
        proc = devstack.ManagedProcess(["sleep", "300"], log_path=Path({str(tmp_path)!r}) / "s.log")
        Path({str(pid_file)!r}).write_text(str(proc.pid))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30)
    sleeper = _read_pid(pid_file)
    devstack.wait_for(lambda: not devstack.pid_alive(sleeper), 5, what="orphan to be stopped")


def test_wait_for_names_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match="the impossible"):
        devstack.wait_for(lambda: False, 0.1, what="the impossible")


# -- servers: restart and failed starts -------------------------------------------------------


def test_redis_restart_keeps_port_and_serves_again(tmp_path: Path) -> None:
    with devstack.start_redis(log_dir=tmp_path) as server:
        port, old_pid = server.port, server.process.pid
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        try:
            client.set("k", "v")
            server.restart()
            assert server.port == port
            assert server.process.pid != old_pid
            assert not devstack.pid_alive(old_pid)
            fresh = redis.Redis.from_url(server.url, socket_timeout=5)
            try:
                assert fresh.ping()
                assert fresh.get("k") is None  # no persistence: restarts start empty
                assert fresh.set("k", "again") and fresh.get("k") == b"again"
            finally:
                fresh.close()
        finally:
            client.close()
    assert not server.alive()


async def test_broker_restart_keeps_port_and_serves_again(tmp_path: Path) -> None:
    broker = await asyncio.to_thread(devstack.start_broker, log_dir=tmp_path)
    try:
        port = broker.port
        await asyncio.to_thread(broker.kill)
        assert not devstack.broker_ready(broker.url, timeout=1)
        await asyncio.to_thread(broker.restart)
        assert broker.port == port and broker.alive()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            meta = await producer.send_and_wait("after-restart", b"x")
        finally:
            await producer.stop()
        assert meta.offset == 0  # memory storage: a restarted broker is empty
    finally:
        await asyncio.to_thread(broker.stop)


def test_redis_on_a_taken_port_fails_with_log_tail(tmp_path: Path, taken_port: int) -> None:
    with pytest.raises(BackendUnavailable) as info:
        devstack.start_redis(taken_port, log_dir=tmp_path)
    message = str(info.value)
    assert "already in use" in message
    assert f"redis-{taken_port}.log" in message


def test_broker_on_a_taken_port_fails_with_log_tail(tmp_path: Path, taken_port: int) -> None:
    with pytest.raises(BackendUnavailable) as info:
        devstack.start_broker(taken_port, log_dir=tmp_path)
    message = str(info.value)
    assert "AddrInUse" in message or "in use" in message
    assert f"tansu-{taken_port}.log" in message


def test_binaries_resolve() -> None:
    for path in (devstack.broker_binary(), devstack.redis_server_binary()):
        assert os.access(path, os.X_OK), path


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("kafka://127.0.0.1:9092", "127.0.0.1:9092"),
        ("kafka://a:1;b:2", "a:1,b:2"),
        ("kafka://a:1,b:2/", "a:1,b:2"),
        ("a:1", "a:1"),
    ],
)
def test_bootstrap_servers(url: str, expected: str) -> None:
    assert devstack.bootstrap_servers(url) == expected
