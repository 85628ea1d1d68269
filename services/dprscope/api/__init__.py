"""The gRPC faces: servicers that translate protobuf to domain calls and back."""
