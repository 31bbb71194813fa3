"""Unit tests: no sockets; tiny models are built in the test session."""
