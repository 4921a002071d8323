"""The image catalog: published base images and their blobs, and the specs
agents download them by."""
