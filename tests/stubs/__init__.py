"""Stand-ins for external services (Twilio), shared by the tests and the benchmarks."""
