"""The stream worker (faust-streaming): catalog and behavior agents, durable user state."""
