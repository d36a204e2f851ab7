"""The data plane: authenticated TCP connections between workers and clients."""
