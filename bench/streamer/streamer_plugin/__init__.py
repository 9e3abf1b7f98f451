"""The streamer plugin of bench/bench_streaming.py."""
