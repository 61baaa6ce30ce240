"""The seed adapters (resources.md §6): other helpdesks' APIs, each under its own prefix, as thin
adapters over the services the native API uses."""
