"""GeoReasoner training: EarthReason preparation, GRPO rewards, evaluation metrics, CLI.

Runs in the backend Python (numpy, scipy, OpenCV; TRL and torch only where a command trains).
Answer parsing, profiles and model frames come from georeasoner_plugin.core, so what a model is
rewarded for is exactly what the cascade reads at inference time.
"""
