"""The Redis adapter: the routing transaction, tickets, threads and indexes."""
