"""Wire formats: msgpack control messages, pickled user data, task specs."""
