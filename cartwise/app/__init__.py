"""The application layer: the CLI, service composition (roles), the embedded broker, dataset replay, the
gRPC client, the demo and the benchmarks. It sits on top of everything (core <- encoders <- streams /
grpc_api <- trainer <- app) and nothing imports it."""
