"""eBPF sensors: process, network, DNS, file and syscall events from watched containers,
filtered in the kernel. `hub.SensorHub` is the component; `events` the typed events;
`kernel_maps.KernelMaps` the watched cgroups, policies and allow-lists in the kernel;
`reader` the poll thread; `stats` the counters; `wiring` connects a hub to the enforcer."""
