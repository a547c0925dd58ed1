"""DVC stage `evaluate@<model>`: see confkd.pipeline.run_evaluate (``--config NAME``)."""

from confkd.cli import stage_main

if __name__ == "__main__":
    stage_main("evaluate")
