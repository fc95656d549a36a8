"""The Open Inference Protocol's gRPC messages and service stubs, generated from the protocol's `.proto`; the
service itself is `http.grpc` (it authenticates and reaches workspaces as the HTTP routes do)."""
