"""The filesystem half of the build engine: rootfs, unpack, snapshot, layer writer."""
