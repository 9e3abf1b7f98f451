"""Runtime drivers: one interface, chosen by configuration; only driver modules import engine clients."""
