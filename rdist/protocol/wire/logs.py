"""Stored records of the log buffers (``logs:<role>:<id>`` lists, :mod:`rdist.logbuffer`)."""

from __future__ import annotations

from dataclasses import dataclass

from rdist.protocol.wire.base import NAME, TEXT, TIMESTAMP, Record, Text, fields


@dataclass(slots=True)
class LogLine(Record):
    """One logged record as an operator reads it: when, its level name, the logger, and
    the line formatted as the process's log handler formatted it."""

    KIND = "log line"
    time: float  #: epoch seconds of the record
    level: str  #: ``INFO``, ``WARNING``, ... (``logging.getLevelName``)
    name: str  #: the logger's name
    message: str  #: the formatted line


fields(
    LogLine,
    {"time": "t", "level": "l", "name": "n", "message": "m"},
    time=TIMESTAMP,
    level=Text(64, empty=False),
    name=NAME,
    message=TEXT,
)

__all__ = ["LogLine"]
