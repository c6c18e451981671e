from omni.cli import run_command
from omni.serve.app import main

run_command(main)
