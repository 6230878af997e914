"""Kafka administration the service needs in production: the bootstrap list from a broker URL,
and creating the topics it owns (ARCHITECTURE §5) when they are missing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping

from tracker_ws.domain.errors import BackendUnavailable, TrackerError

_KAFKA_TOPIC_ALREADY_EXISTS = 36


def bootstrap_servers(broker_url: str) -> str:
    """`kafka://h1:p1;h2:p2` (faust style, `,` also accepted) -> `h1:p1,h2:p2` for aiokafka."""
    hosts = broker_url.split("://", 1)[1] if "://" in broker_url else broker_url
    return ",".join(h.strip().rstrip("/") for h in re.split(r"[;,]", hosts) if h.strip())


async def create_topics(
    broker_url: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    timeout: float = 15.0,
) -> None:
    """Create `topics` (name -> partitions); existing topics are left as they are.

    `configs` optionally maps a topic name to its topic configs (e.g. cleanup.policy=compact).
    """
    if not topics:
        return
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    configs = configs or {}
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(broker_url),
        client_id="tracker-ws-admin",
        request_timeout_ms=int(timeout * 1000),
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            response = await admin.create_topics(
                [
                    NewTopic(
                        name,
                        num_partitions=partitions,
                        replication_factor=replication_factor,
                        topic_configs=dict(configs.get(name, {})),
                    )
                    for name, partitions in topics.items()
                ],
                timeout_ms=int(timeout * 1000),
            )
    except (TimeoutError, OSError, KafkaError) as exc:
        raise BackendUnavailable(f"cannot create topics on {broker_url}: {exc!r}") from exc
    finally:
        await admin.close()
    # Entries are (topic, error_code[, error_message]) depending on the protocol version.
    failures = [
        f"{entry[0]}: error {entry[1]} {entry[2] if len(entry) > 2 else ''}".rstrip()
        for entry in response.topic_errors
        if entry[1] not in (0, _KAFKA_TOPIC_ALREADY_EXISTS)
    ]
    if failures:
        raise TrackerError(f"topic creation rejected by {broker_url}: {'; '.join(failures)}")
