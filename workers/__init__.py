"""The worker process: RQ jobs for everything outbound or timed."""
