"""Generated protobuf and gRPC stubs of the public API (`protos/cartwise/v1`); `make protos` regenerates them."""
