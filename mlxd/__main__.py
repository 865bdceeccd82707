from mlxd.cli.main import cli

cli(prog_name="mlxd")
