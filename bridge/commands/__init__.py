"""`bridge` sub-commands kept out of bridge/cli.py; each is a plain click command that the
`bridge` group registers."""
