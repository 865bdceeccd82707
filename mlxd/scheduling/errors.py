"""Why a submit is refused: one exception class per kind of refusal, each message one line
that says why and what to do (a caller shows it as it is; the CLI maps each class to its exit
status in ``mlxd/cli/context.py``)."""

from __future__ import annotations


class SchedulingError(Exception):
    """A job (or a whole graph of jobs) that was not queued; nothing was written."""


class BadArgument(SchedulingError):
    """An argument that cannot be: a timeout that is not a number of seconds, a pool name
    that is not a name, a node waiting on a node that is not in its plan."""


class BadPrerequisite(SchedulingError):
    """The job to wait on does not exist, or it failed or was cancelled."""


class QueueFull(SchedulingError):
    """The user's queued and running jobs would pass the per-user limit."""


class DoesNotFit(SchedulingError):
    """A job that can never fit the memory budget (of this machine, or of a daemon at start)."""


class NoPlace(SchedulingError):
    """Machines are known and none of them could ever run the job."""
