"""Job stores: ``base.JobStore`` (the interface), ``memory.MemoryStore`` (one process) and
``redis.RedisStore`` (replicas sharing one Redis). Pick one with ``serverless.app.make_store``."""
