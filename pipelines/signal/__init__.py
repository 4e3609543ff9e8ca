"""Per-recording signal processing: WFDB reading, R peaks, echo keyframes and alignment."""
