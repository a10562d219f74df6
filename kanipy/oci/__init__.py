"""Pure data for container images: digests, descriptors, platforms, manifests, configs."""
