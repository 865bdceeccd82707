"""The daemon: huey consumer, one child process per job, supervision and recovery."""
