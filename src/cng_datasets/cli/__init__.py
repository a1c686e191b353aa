"""Command-line entry point. Sub-commands live one module per command group and are imported
only when invoked, so ``cng-datasets --help`` never loads GDAL, pyarrow or the Kubernetes client."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

from cng_datasets import __version__

# name -> (module, attribute, one-line help shown in the group's --help without importing)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "convert": ("cng_datasets.cli.convert", "convert", "Convert vector sources to one GeoParquet 1.1 file."),
    "hex": ("cng_datasets.cli.hex", "hex_", "H3-index one chunk of a GeoParquet file."),
    "repartition": ("cng_datasets.cli.hex", "repartition", "Merge hex chunks into h0 partitions."),
    "pmtiles": ("cng_datasets.cli.pmtiles", "pmtiles", "Build PMTiles vector tiles from a GeoParquet file."),
    "preview": ("cng_datasets.cli.preview", "preview", "Serve a dataset's map page with Range requests."),
    "catalog": ("cng_datasets.cli.catalog", "catalog", "Write the STAC collection and card of a dataset."),
    "plan": ("cng_datasets.cli.plan", "plan", "Estimate a dataset's rows, bytes, chunks, memory and time."),
    "workflow": ("cng_datasets.cli.workflow", "workflow", "Write the Kubernetes Job manifests of a dataset."),
    "run": ("cng_datasets.cli.run", "run", "Run the whole workflow on this machine."),
    "validate": ("cng_datasets.cli.run", "validate", "Check the three outputs of a dataset."),
    "orchestrate": ("cng_datasets.cli.cluster", "orchestrate", "Apply and await the Jobs (runs in the cluster)."),
    "preflight": ("cng_datasets.cli.cluster", "preflight", "Check that a cluster can run a generated workflow."),
    "submit": ("cng_datasets.cli.cluster", "submit", "Start a generated workflow on a cluster."),
    "status": ("cng_datasets.cli.cluster", "status", "Show the state of a submitted workflow."),
    "logs": ("cng_datasets.cli.cluster", "logs", "Show the logs of a workflow step."),
    "cleanup": ("cng_datasets.cli.cluster", "cleanup", "Delete a workflow's Jobs and PVC (and data)."),
    "receive-yamls": (
        "cng_datasets.cli.cluster",
        "receive_yamls",
        "Wait for the workflow YAMLs to arrive (upload pod).",
    ),
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        return importlib.util.find_spec(COMMANDS[name][0]) is not None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not self._available(cmd_name):
            return None
        module, attr, _ = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cng-datasets")
def cli() -> None:
    """Turn vector geodata into GeoParquet, PMTiles and H3 hex partitions.

    Each step is a sub-command; `run` chains them on this machine, `workflow` writes the same
    plan as Kubernetes Jobs.
    """


def main(argv: Any = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="cng-datasets")
