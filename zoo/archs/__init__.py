"""srq's own SR architectures (one file each), registered with spandrel's MAIN_REGISTRY."""
