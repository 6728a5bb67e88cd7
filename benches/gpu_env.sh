# Sourced by benches/gpu.sh and benches/gpu_tests.sh from the repository
# root: the Vulkan loader from the .deb files in .gl/ where the machine has
# none, and NVIDIA's ICD through VK_DRIVER_FILES where the driver lives
# under /usr/local/nvidia.
if ! ldconfig -p 2>/dev/null | grep -q libvulkan && compgen -G ".gl/*.deb" >/dev/null; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then
    export VK_DRIVER_FILES="$icd"
fi
