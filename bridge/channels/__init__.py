"""Channel adapters: parse, verify and format for one provider."""
