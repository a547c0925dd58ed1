"""DVC stage `validate`: see confkd.pipeline.run_validate."""

from confkd.cli import stage_main

if __name__ == "__main__":
    stage_main("validate")
