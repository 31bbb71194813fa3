"""The ``inferq`` command line: serve, work, migrate, manage models, predict offline, dev."""
