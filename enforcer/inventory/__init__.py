"""What runs on this host: apps > services > containers, from the Docker API and compose files."""

from .docker_source import DockerSource, EngineDown
from .inventory import Inventory, InventoryChange

__all__ = ["DockerSource", "EngineDown", "Inventory", "InventoryChange"]
