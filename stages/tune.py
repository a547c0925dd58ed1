"""DVC stage `tune`: see confkd.pipeline.run_tune."""

from confkd.cli import stage_main

if __name__ == "__main__":
    stage_main("tune")
