"""The seed adapters (resources.md §6): other helpdesks' APIs served under `/compat/<seed>`,
each a thin translation onto the services the native API uses (docs/compat.md)."""
