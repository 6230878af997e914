"""Every extension of Faust's Kafka consumer, in one place.

- app.py: the faust.App hooks that put them in place (TrackerApp derives from KafkaApp).
- transport.py: the consumer, its thread and the transport; offset_guard.py: the pure rules
  of what may reach the agents; consumer_watch.py: stall detection, the admin view of the
  consumer, broker reachability.
- drain.py, stream.py, producer.py: the batch hand-over (one race against flow control per
  fetched batch, not per record; the GPS topic goes through a lane: lists of Messages straight
  to its agent, without the conductor's per-record Event and queue put) and a producer
  buffer that absorbs the first-sight burst of changelog writes without stalling the
  conductor (issue 11).
- group_leave.py: LeaveGroup sent by hand when the consumer stopped at generation 0 (the
  embedded broker numbers a new group's first generation 0, and aiokafka skips LeaveGroup there).
- rejoin.py: followers rejoin a rebalance after the leader (Faust's public PartitionAssignor
  setting tells a member it led; the wait ends Faust's public
  ConsumerThread.on_partitions_revoked).
- compat.py: every private name of faust-streaming, mode and aiokafka still used, checked at
  start-up against the pinned versions (setup.cfg); a missing one stops the worker with one
  line naming it.

The upstream faults worked around, and exactly when each workaround acts:

1. faust-streaming #606: commits past in-flight records. Around a rebalance Faust lets a
   stream skip a record and ack it anyway, marks offsets it never delivered as done (gaps),
   and delivers a partition with a hole when the fetcher ran ahead, so the next commit moves
   past records no agent processed. Active on every input (non-changelog) record:
   OffsetGuard checks each fetched record (a dict look-up while offsets follow on; a seek back
   only when one does not), and `Consumer.ack` refuses the ack of a record whose stream
   skipped it (flow control suspended, or an older consumer generation); the record is
   delivered again.
2. Queues cleared on resume: Faust empties every stream queue on a rebalance and on each
   resume of flow control, including the one after the seek that ends a rebalance, so
   records handed to a stream in between are dropped unseen. Active when a stream queue is
   emptied while holding unacked input records (app.HandBackQueue, Faust's public
   `App.FlowControlQueue` factory): they are handed back to the guard and delivered again.
3. The embedded broker (Tansu) answers ListOffsets(latest) with one past the *first* offset
   of the last record batch, so a table recovered up to that end misses the batch's later
   records. Before a table recovery, the last batch of a changelog partition is read
   (transport.true_end) only when its answer is not confirmed by the high watermark of the
   consumer's own last fetch of it (transport.LogEndCheck). With TRACKER_WS_TRUST_LOG_END=1
   (a broker that answers right, such as Apache Kafka) nothing is read and the correction
   costs nothing, until a fetch or a read shows an answer short of the end; then it acts as
   untrusted for the rest of the process, with one warning.

4. The embedded broker answers a follower's SyncGroup that arrives before the leader's
   assignment one second later (it sleeps a second between checks), and holds every JoinGroup
   a second from when it was sent: a follower that noticed a rebalance before the leader did
   paused two seconds instead of one. Active on every rebalance this member did not lead:
   it rejoins TRACKER_WS_KAFKA_REJOIN_STAGGER (0.15 s) later; 0 turns it off (Apache Kafka
   waits for the leader itself, so there the wait only lengthens each rebalance).

Also: faust-streaming hard-codes a 1.5 s fetch long-poll (`fetch_max_wait_ms`), which brokers
that hold a fetch until the wait expires (Tansu) add to every delivery; the worker consumer
uses TRACKER_WS_FETCH_MAX_WAIT_MS instead, always. And the start of each input partition the
group never committed is committed on its first assignment, so "latest" applies once per group
(transport.py's module docstring).
"""
