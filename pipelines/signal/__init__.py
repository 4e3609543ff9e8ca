"""Per-recording signal processing: R peaks, echo keyframes and ECG/echo alignment."""
