"""Every private name of faust-streaming, mode and aiokafka the service still uses, checked once
at start-up (create_app).

A library release that renames one of them would otherwise fail silently: a renamed
`AIOKafkaConsumer._fetch_max_wait_ms` brings back the 1.5 s fetch long-poll, a renamed
`App._new_transport` the plain consumer without the offset guard. `check()` refuses to start
instead, naming the attribute and the versions this code was written for (pinned in
setup.cfg). Upgrading one of the libraries means reading each use below again, then updating
WRITTEN_FOR and the pins together.

Attributes an instance only gets in a method (`__init__`, `start`) cannot be seen on the
class; for those the check asks whether that method's code still names the attribute.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from tracker_ws.domain.errors import IncompatibleLibrary

# The distributions (pip names) the uses below were read against; setup.cfg pins them.
WRITTEN_FOR: Mapping[str, str] = {
    "faust-streaming": "0.15.3",
    "mode-streaming": "0.7.1",
    "aiokafka": "0.14.0",
}

_FAUST_THREAD = "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread"
_FAUST_CONSUMER = "faust.transport.consumer:Consumer"
_FAUST_DELEGATE = "faust.transport.consumer:ThreadDelegateConsumer"
_KAFKA_CONSUMER = "aiokafka.consumer.consumer:AIOKafkaConsumer"


@dataclass(frozen=True)
class Private:
    owner: str  # "module:Class"
    name: str
    use: str  # where we use it, for the message
    # None: a class attribute (method). Else the method of `owner` whose code must still
    # name it (it sets the instance attribute, or calls the hook we override).
    within: str | None = None


PRIVATES: tuple[Private, ...] = (
    # kafka/app.py: our transport (the consumer below) is built through this hook.
    Private("faust.app.base:App", "_new_transport", "kafka/app.py overrides it"),
    Private("faust.app.base:App", "_new_transport", "App.transport calls it", "transport"),
    # kafka/transport.py: ConsumerThread.
    Private(_FAUST_THREAD, "_ensure_consumer", "transport.py, consumer_watch.py"),
    Private(_FAUST_THREAD, "_create_worker_consumer", "transport.py overrides it"),
    Private(
        _FAUST_THREAD, "_create_worker_consumer", "the consumer is built by it", "_create_consumer"
    ),
    Private(_KAFKA_CONSUMER, "_fetch_max_wait_ms", "transport.py sets it", "__init__"),
    Private(_KAFKA_CONSUMER, "_fetch_max_wait_ms", "start() hands it to the fetcher", "start"),
    Private(_KAFKA_CONSUMER, "_client", "transport.py, consumer_watch.py", "__init__"),
    Private(
        "aiokafka.client:AIOKafkaClient", "_bootstrap_servers", "transport.py probe", "__init__"
    ),
    # kafka/transport.py: Consumer.
    Private(_FAUST_DELEGATE, "_new_consumer_thread", "transport.py overrides it"),
    Private(_FAUST_DELEGATE, "_new_consumer_thread", "the consumer calls it", "__init__"),
    Private(_FAUST_DELEGATE, "_thread", "transport.py, consumer_watch.py", "__init__"),
    Private(_FAUST_CONSUMER, "_read_offset", "transport.py perform_seek", "__init__"),
    Private(_FAUST_CONSUMER, "_unacked_messages", "transport.py ack", "__init__"),
    Private(_FAUST_CONSUMER, "_committed_offset", "transport.py, consumer_watch.py", "__init__"),
    Private(_FAUST_CONSUMER, "_add_gap", "transport.py overrides it"),
    # kafka/transport.py ack_many: Consumer.ack's bookkeeping, once per list of records.
    *(
        Private(_FAUST_CONSUMER, name, "transport.py ack_many does what ack does", "ack")
        for name in (
            "_committed_offset",
            "_acked_index",
            "_acked",
            "_unacked_messages",
            "_n_acked",
            "_waiting_for_ack",
        )
    ),
    # kafka/transport.py fetch_batch: Faust's getmany as one list per fetch.
    *(
        Private(_FAUST_CONSUMER, name, "transport.py fetch_batch does what getmany does", "getmany")
        for name in ("_wait_next_records", "_buffered_partitions", "_to_message")
    ),
    Private(_FAUST_CONSUMER, "_wait_next_records", "transport.py fetch_batch"),
    Private("faust.transport.drivers.aiokafka:Consumer", "_to_message", "transport.py"),
    # kafka/consumer_watch.py: the diagnostic snapshot.
    Private(_FAUST_CONSUMER, "_paused_partitions", "consumer_watch.py", "_reset_state"),
    Private(_FAUST_CONSUMER, "_get_active_partitions", "consumer_watch.py"),
    Private(_KAFKA_CONSUMER, "_subscription", "consumer_watch.py", "__init__"),
    # kafka/app.py: the stream queue that hands back what it drops. asyncio.Queue keeps its
    # items in `_queue`; mode's own clear() empties that same deque.
    Private("asyncio.queues:Queue", "_queue", "kafka/app.py reads the items", "_init"),
    Private("mode.utils.queues:ThrowableQueue", "_queue", "mode clears it", "clear"),
    # kafka/drain.py: the batch hand-over replaces Faust's per-record drain loop.
    Private(_FAUST_CONSUMER, "_drain_messages", "kafka/drain.py overrides it"),
    Private(
        "faust.transport.consumer:Fetcher", "_drain_messages", "the fetcher calls it", "_fetcher"
    ),
    Private(_FAUST_CONSUMER, "_n_acked", "kafka/drain.py commits every N acks"),
    Private(_FAUST_CONSUMER, "_commit_every", "kafka/drain.py", "__init__"),
    Private("mode.services:Service", "_stopped", "kafka/drain.py", "__init__"),
    Private("faust.transport.consumer", "CONSUMER_FETCHING", "kafka/drain.py sets the flag"),
    # kafka/producer.py: the producer buffer's limit (a public attribute set in __init__).
    Private(
        "faust.transport.producer:ProducerBuffer",
        "max_messages",
        "kafka/producer.py",
        "wait_until_ebb",
    ),
    # kafka/group_leave.py: member id and generation of a consumer stopped at generation 0.
    Private(_KAFKA_CONSUMER, "_coordinator", "kafka/group_leave.py", "start"),
    # agents/registry.py: a metadata refresh for a just-created topic.
    Private(_KAFKA_CONSUMER, "_client", "agents/registry.py", "__init__"),
)


def check(
    privates: Iterable[Private] = PRIVATES,
    resolve: Callable[[str], Any] | None = None,
    versions: Callable[[str], str] | None = None,
) -> None:
    """Raises IncompatibleLibrary (a ConfigError: one line, exit 2) for the first private
    name that is gone. `resolve` and `versions` are for tests."""
    find = resolve or _import
    for p in privates:
        problem = _missing(p, find)
        if problem:
            raise IncompatibleLibrary(
                f"{problem} ({p.use}); tracker_ws.kafka was written for {_versions(versions)}"
                " (setup.cfg pins them): reinstall those or port tracker_ws/kafka/"
            )


def _missing(p: Private, resolve: Callable[[str], Any]) -> str | None:
    try:
        owner = resolve(p.owner)
    except (ImportError, AttributeError):
        return f"{p.owner} is gone"
    label = p.owner.replace(":", ".")
    if p.within is None:
        return None if hasattr(owner, p.name) else f"{label}.{p.name} is gone"
    method = inspect.getattr_static(owner, p.within, None)
    if isinstance(method, property):
        method = method.fget
    method = getattr(method, "fun", method)  # mode's @Service.task wraps the function
    code = getattr(inspect.unwrap(method), "__code__", None) if method is not None else None
    if code is None:
        return f"{label}.{p.within} is gone"
    if p.name not in code.co_names:
        return f"{label}.{p.within} no longer uses {p.name}"
    return None


def _import(path: str) -> Any:
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in filter(None, attr.split(".")):  # "module" alone names a module constant
        obj = getattr(obj, part)
    return obj


def _versions(installed: Callable[[str], str] | None) -> str:
    get = installed or metadata.version
    parts = []
    for dist, want in WRITTEN_FOR.items():
        try:
            have = get(dist)
        except metadata.PackageNotFoundError:
            have = "not installed"
        parts.append(f"{dist} {want}" + ("" if have == want else f" (installed: {have})"))
    return ", ".join(parts)
