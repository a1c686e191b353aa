"""The processing steps: convert, hex, repartition, pmtiles. Each is a library function with a
thin ``cng-datasets <step>`` command in front of it."""
