"""The gRPC API (grpc.aio): SearchService, request validation, personalization fusion, health, reflection."""
