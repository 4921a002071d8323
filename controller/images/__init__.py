"""The image catalog: published base images and their blobs."""
