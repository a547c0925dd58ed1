"""DVC stage `export`: see confkd.pipeline.run_export."""

from confkd.cli import stage_main

if __name__ == "__main__":
    stage_main("export")
