"""The pure domain: tickets, routing rules, policies. Standard library only, no I/O."""
