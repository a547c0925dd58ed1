"""DVC stage `report`: see confkd.pipeline.run_report."""

from confkd.cli import stage_main

if __name__ == "__main__":
    stage_main("report")
