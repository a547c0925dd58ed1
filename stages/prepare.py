"""DVC stage `prepare`: see confkd.pipeline.run_prepare."""

from confkd.cli import stage_main

if __name__ == "__main__":
    stage_main("prepare")
