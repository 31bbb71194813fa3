"""Worker processes: consume → micro-batch → ONNX Runtime → store, publish, ack; reclaim; supervise.

``pool.WorkerPool`` serves a set of partitions in one process; ``supervisor.Supervisor`` keeps N such
processes running; ``batch.execute`` is the pure core (no Redis): decoded requests and a runner in,
results out. Nothing is imported here, so the supervisor stays free of ONNX Runtime.
"""
