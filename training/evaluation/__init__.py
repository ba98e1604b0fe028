"""`training evaluate` in parts: options, samples (selection and inputs), scores, engines, runner,
report, overlays. training.evaluate is the command line."""
