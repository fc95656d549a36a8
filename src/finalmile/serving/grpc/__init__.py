"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), beside HTTP in `finalmile serve`."""
