"""Training loops (accelerate): next-item on the User layer now; pre-training and SFT build on it."""
