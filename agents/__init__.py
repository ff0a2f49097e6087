"""Training agents (one readable ``train(cfg)`` each)."""
