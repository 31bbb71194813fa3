"""The Redis transport: admission-checked producer, reply listener, result store, consumer primitives."""
