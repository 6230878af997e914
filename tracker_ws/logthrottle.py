"""Rate-limit repeated warnings and errors of the Kafka client and Faust.

With the broker gone aiokafka logs every failed connect, metadata refresh and fetch, thousands
of lines a minute that bury everything else. The filter lets the first line of each cause
through, then one per `REPEAT_WINDOW_S`, carrying "(N similar suppressed)".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable

from tracker_ws.domain.repeats import RepeatLimiter

# Loggers (and their children) whose repeats are collapsed.
NOISY_LOGGERS = ("aiokafka", "faust", "mode")
REPEAT_WINDOW_S = 5.0


class RepeatFilter(logging.Filter):
    """Holds back WARNING-and-above records whose cause was already logged within the window.

    The cause is the logger, the level, the message template (not the formatted text, which
    carries node ids and ports) and the types of the exceptions among the arguments.
    """

    def __init__(
        self,
        window_s: float = REPEAT_WINDOW_S,
        *,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._limiter = RepeatLimiter(window_s)
        self._level = level
        self._clock = clock
        # Faust runs clients in threads of their own: the limiter is shared between them.
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self._level:
            return True
        with self._lock:
            held = self._limiter.admit(_cause(record), self._clock())
        if held is None:
            return False
        if held:
            try:
                text = record.getMessage()
            except Exception:  # a broken template: let the handler report it as usual
                return True
            record.msg = f"{text} ({held} similar suppressed)"
            record.args = ()  # the text is final (None would become (None,) in mode's formatter)
        return True


def _cause(record: logging.LogRecord) -> Hashable:
    args = record.args if isinstance(record.args, tuple) else ()
    errors = tuple(type(a).__name__ for a in args if isinstance(a, BaseException))
    exc_type = record.exc_info[0] if record.exc_info else None
    return (
        record.name,
        record.levelno,
        str(record.msg),
        errors,
        exc_type.__name__ if exc_type else None,
    )


def install(
    prefixes: Iterable[str] = NOISY_LOGGERS, window_s: float = REPEAT_WINDOW_S
) -> RepeatFilter:
    """Attach one shared RepeatFilter to every existing logger under `prefixes`.

    Logger filters do not apply to records propagated from child loggers, so each child gets
    it too; call once the libraries are imported (at worker start). Idempotent.
    """
    heads = tuple(prefixes)
    under = tuple(f"{p}." for p in heads)
    names = {n for n in logging.root.manager.loggerDict if n in heads or n.startswith(under)}
    repeat_filter = RepeatFilter(window_s)
    for name in sorted({*heads, *names}):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(repeat_filter)
    return repeat_filter
