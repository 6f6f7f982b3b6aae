"""Mirrors of a job's metrics into the trackers labs already use (TensorBoard, MLflow)."""
