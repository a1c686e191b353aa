"""cng-datasets: vector geodata to GeoParquet, PMTiles and H3 hex partitions.

The package is layered: ``cli`` parses and prints, ``steps`` / ``plan`` / ``local`` / ``k8s`` take
typed configuration and return results, and the engines (GDAL via pyogrio, pyarrow, H3, tippecanoe,
the Kubernetes API) sit at the bottom. Nothing below imports upward.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
