"""Postgres through SQLAlchemy 2 async: tables, migrations, the model registry and artifact store."""
