"""Reasons a person can act on, from what a dead child left behind (no daemon needed)."""

from __future__ import annotations

import signal

from mlxd.daemon.reasons import Code, describe_error, describe_exit


def test_a_signal_is_named_without_guessing_at_memory():
    crash = describe_exit(-signal.SIGKILL)
    assert crash.reason == "the job's process was killed by signal 9 (SIGKILL)"
    assert crash.retryable and crash.code == Code.SIGNAL
    assert describe_exit(-signal.SIGABRT).reason.endswith("signal 6 (SIGABRT)")


def test_out_of_memory_only_when_something_said_so():
    assert describe_exit(-6, log_tail="terminate called after std::bad_alloc").reason == (
        "out of memory (the job's log says an allocation failed)"
    )
    assert describe_exit(-9, kernel_oom_kills=1).reason.startswith("out of memory: the kernel")
    rust = describe_exit(-6, log_tail="memory allocation of 67600 bytes failed")
    assert rust.reason.startswith("out of memory")
    limited = describe_exit(-6, log_tail="std::bad_alloc", memory_limit=2 * 10**9)
    assert limited.reason == "address space limit: the job hit RLIMIT_AS (2.0 GB)"
    assert not limited.retryable and limited.code == Code.ADDRESS_SPACE
    assert describe_exit(-9, kernel_oom_kills=1).code == Code.KERNEL_OOM
    assert rust.code == Code.OOM
    assert describe_exit(3).code == Code.EXIT_STATUS


def test_a_failed_write_reads_as_a_full_disk_with_the_path(tmp_path):
    failure = describe_error(
        "[write] Unable to write 4096 bytes", output_path=tmp_path, memory_limit=None
    )
    assert failure.code == Code.DISK_FULL
    msg = failure.reason
    assert msg.startswith(f"disk full: {tmp_path} has ") and msg.endswith(" free")
    own = describe_error("ValueError: bad shape", output_path=tmp_path, memory_limit=None)
    assert (own.code, own.reason) == (Code.JOB_ERROR, "ValueError: bad shape")
