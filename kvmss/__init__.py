"""kvmss: scale sets for libvirt/QEMU hosts (shared pieces: clock, qemu-img, names)."""
