"""The Docker runtime: driver, network allow-lists, cgroup read-back and /data filesystems."""
