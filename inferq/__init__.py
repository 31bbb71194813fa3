"""inferq: a queue-first inference backend."""
