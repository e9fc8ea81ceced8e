"""eBPF sensors: process, network, DNS, file and syscall events from watched containers,
filtered in the kernel. `hub.SensorHub` is the component; `events` the typed events."""
