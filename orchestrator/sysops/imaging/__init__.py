"""Plugin directory to image: build contexts, wheels, fingerprints."""
